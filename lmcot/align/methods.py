"""The registry of alignment methods: each name that params.yaml's ``align.methods`` may list, with the
function that computes it, the params group of its options, and whether it needs data (model A's inputs).

Adding a method: write its function in a family module (or a new one), add a :class:`Method` record to
:data:`METHODS` and the name to ``lmcot.choices.METHODS``, and give its options a group under ``align`` in
params.yaml (see the README's extension guide)."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from functools import partial

import torch
from tqdm import tqdm

from lmcot.align.activations import activation_covariance, activation_matching
from lmcot.align.covariance import cov_weight_matching
from lmcot.align.layerwise import naive_weight_matching
from lmcot.align.transport import barycenter, ot_emd, ot_sinkhorn
from lmcot.align.weight_matching import weight_matching
from lmcot.permutation import Permutations, apply_permutations, identity_permutations

log = logging.getLogger(__name__)


def identity(model_a, model_b, inputs=None) -> Permutations:
    """No alignment: the naive baseline."""
    return identity_permutations(model_a.permutation_spec(), model_a.state_dict())


@dataclass(frozen=True)
class Method:
    """One alignment method: ``function(model_a, model_b, inputs, **options) -> Permutations``."""

    function: Callable[..., Permutations]
    options: str | None  # the params.yaml group of its keyword options ("align.weight_matching", "fuse.ot")
    needs_data: bool  # whether it reads the models' activations on ``inputs`` (training samples)


METHODS = {
    "identity": Method(identity, None, needs_data=False),
    "weight_matching": Method(weight_matching, "align.weight_matching", needs_data=False),
    # a variant takes the options of the method it varies
    "weight_matching_without_biases": Method(
        partial(weight_matching, biases=False), "align.weight_matching", needs_data=False
    ),
    "activation_matching": Method(activation_matching, "align.activation_matching", needs_data=True),
    "naive_weight_matching": Method(naive_weight_matching, "align.naive_weight_matching", needs_data=False),
    "cov_weight_matching": Method(cov_weight_matching, "align.cov_weight_matching", needs_data=True),
    "cov_weight_matching_with_biases": Method(
        partial(cov_weight_matching, biases=True), "align.cov_weight_matching", needs_data=True
    ),
    "activation_covariance": Method(activation_covariance, "align.activation_covariance", needs_data=True),
    "ot_emd": Method(ot_emd, "align.ot_emd", needs_data=False),
    "ot_sinkhorn": Method(ot_sinkhorn, "align.ot_sinkhorn", needs_data=False),
    "barycenter": Method(barycenter, "fuse.ot", needs_data=False),  # the fusion's OT options
}


def method_options(method: str, params: dict) -> dict:
    """Keyword options of ``method`` from params: its group, or none if params has no such group."""
    if (group := METHODS[method].options) is None:
        return {}
    options = params
    for key in group.split("."):
        options = options.get(key, {})
    return dict(options)


def align(method: str, model_a, model_b, inputs=None, **options) -> Permutations:
    """Run alignment method ``method`` (a key of :data:`METHODS`) with its options; ``inputs`` (training
    samples, ``(samples, *input_shape)``) are passed only to the methods that need data."""
    if method not in METHODS:
        raise ValueError(f"unknown alignment method {method!r}; valid: {', '.join(METHODS)}")
    record = METHODS[method]
    if record.needs_data and inputs is None:
        raise ValueError(f"alignment method {method!r} needs inputs (training samples) and got none")
    return record.function(model_a, model_b, inputs if record.needs_data else None, **options)


def permuted_copy(model: torch.nn.Module, perms: Permutations) -> torch.nn.Module:
    """A copy of ``model`` with its hidden units permuted by ``perms`` (the original is untouched)."""
    copy = deepcopy(model)
    copy.load_state_dict(apply_permutations(model.permutation_spec(), perms, model.state_dict()))
    return copy


def output_change(model: torch.nn.Module, perms: Permutations, inputs: torch.Tensor) -> float:
    """Largest absolute change of ``model``'s outputs on ``inputs`` caused by permuting it.

    A correct permutation gives float round-off only (about 1e-6 of the outputs' scale).
    """
    with torch.no_grad():
        model.eval()
        return (permuted_copy(model, perms).eval()(inputs) - model(inputs)).abs().max().item()


def align_pairs(
    models: Mapping[int, torch.nn.Module],
    pairs: Sequence[tuple[int, int]],
    methods: Sequence[str],
    params: dict,
    inputs: torch.Tensor,
    check_inputs: torch.Tensor,
    desc: str = "alignment",
) -> list[dict]:
    """Align every pair ``(seed_a, seed_b)`` of ``models`` (seed -> model) by every method, with its options from
    ``params`` (:func:`method_options`) and ``inputs`` (training samples) for the methods that need data.

    Each permutation is checked to leave model B's outputs on ``check_inputs`` unchanged (a ``RuntimeError``
    otherwise: a bug). Returns one record per pair and method: the seeds, the method, the largest output change
    and the permutations as lists. ``desc`` names the run in the progress bar and the log; timings go to the log
    only, so that the same inputs give the same records.
    """
    records = []
    for (seed_a, seed_b), method in tqdm(list(itertools.product(pairs, methods)), desc=desc):
        start = time.perf_counter()
        perms = align(method, models[seed_a], models[seed_b], inputs, **method_options(method, params))
        seconds = time.perf_counter() - start
        change = output_change(models[seed_b], perms, check_inputs)
        if change > 1e-3:
            raise RuntimeError(f"{method} permutation changed model {seed_b}'s outputs by {change:.3g}: a bug")
        log.info("%s seeds %d-%d %s: %.3f s", desc, seed_a, seed_b, method, seconds)
        records.append(
            {
                "seed_a": seed_a,
                "seed_b": seed_b,
                "method": method,
                "output_change": change,
                "permutations": {name: perm.tolist() for name, perm in perms.items()},
            }
        )
    return records
