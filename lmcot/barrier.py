"""Loss and error along the linear path between two models, and the barriers computed from them.

For ``theta(a) = (1 - a) theta_A + a theta_B`` on a grid of ``a`` in [0, 1]:

- ``barrier``: ``max_a [L(theta(a)) - ((1 - a) L(theta_A) + a L(theta_B))]`` (Frankle et al. 2020);
- ``midpoint``: ``L(theta(1/2))``;
- ``max_minus_endpoint_mean``: ``max_a L(theta(a)) - (L(theta_A) + L(theta_B)) / 2``.

``L`` is the mean cross-entropy (``loss``, nats) or the error rate (``error``, 1 - accuracy).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from lmcot.analysis import method_label
from lmcot.choices import NO_CORRECTION
from lmcot.design import evaluation_grid
from lmcot.errors import UserError
from lmcot.evaluation import correction_refusal, evaluate, output_statistics, repair, repair_layers, reset_batchnorm
from lmcot.permutation import apply_permutations

if TYPE_CHECKING:
    from lmcot.config import Configuration
    from lmcot.data import Dataset

log = logging.getLogger(__name__)

METRICS = ("loss", "error")


class NonFinitePathError(UserError, FloatingPointError):
    """A loss or error that is not finite on an interpolation path: the models or the alignment are broken."""


def interpolation_curve(
    model: torch.nn.Module,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    alphas: Sequence[float],
    splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    batch_size: int = 4096,
    correction: str | None = None,
    norm_inputs: torch.Tensor | None = None,
) -> list[dict]:
    """Evaluate ``model`` at every point of the path from ``state_a`` to ``state_b``.

    ``model`` is only a container of the right architecture: its tensors are overwritten in place at
    each ``alpha`` (no model is rebuilt). Returns rows ``{alpha, split, metric, value}``.
    ``correction`` fixes the interpolated network's statistics on ``norm_inputs`` (training samples) first:
    ``"reset"`` recomputes the BatchNorm running statistics (:func:`reset_batchnorm`); ``"repair"`` rescales
    every channel of the layers of :func:`repair_layers` to the interpolated endpoint statistics (:func:`repair`).
    A correction that does not apply to ``model`` (see :func:`correction_refusal`) raises ``ValueError``.
    """
    with torch.no_grad():
        if correction is not None and (why := correction_refusal(model, correction)):
            raise ValueError(why)
        if correction is not None and norm_inputs is None:
            raise ValueError(f"the {correction!r} correction needs norm_inputs (training samples)")
        if correction == "repair":
            layers = repair_layers(model)
            endpoints = []
            for state in (state_a, state_b):
                model.load_state_dict(state)
                endpoints.append(output_statistics(model, layers, norm_inputs, batch_size))
        targets = model.state_dict()
        if set(targets) != set(state_a) or set(targets) != set(state_b):
            raise ValueError("interpolation_curve: the two states and the model have different tensors")
        rows = []
        for alpha in alphas:
            for name, target in targets.items():
                a, b = state_a[name], state_b[name]
                if target.is_floating_point():
                    torch.lerp(a.to(target), b.to(target), float(alpha), out=target)
                else:  # integer buffers such as BatchNorm's step counter are not interpolated
                    target.copy_(a)
            if correction == "reset":
                reset_batchnorm(model, norm_inputs, batch_size)
            elif correction == "repair":
                goal = [
                    ((1 - alpha) * mean_a + alpha * mean_b, (1 - alpha) * std_a + alpha * std_b)
                    for (mean_a, std_a), (mean_b, std_b) in zip(*endpoints, strict=True)
                ]
                repair(model, goal, norm_inputs, batch_size)
            for split, (x, y) in splits.items():
                result = evaluate(model, x, y, batch_size)
                rows.append({"alpha": float(alpha), "split": split, "metric": "loss", "value": result["loss"]})
                rows.append({"alpha": float(alpha), "split": split, "metric": "error", "value": 1 - result["accuracy"]})
        return rows


def barrier_summary(alphas: Sequence[float], values: Sequence[float]) -> dict:
    """Barrier, midpoint value and max-minus-endpoint-mean of one curve ``values`` over ``alphas``.

    ``alphas`` must include 0, 1/2 and 1 (see :func:`lmcot.design.evaluation_grid`).
    """
    alphas, values = np.asarray(alphas, dtype=float), np.asarray(values, dtype=float)
    order = np.argsort(alphas)
    alphas, values = alphas[order], values[order]
    if alphas.min() < 0 or alphas.max() > 1 or not all(np.isclose(alphas, a).any() for a in (0, 0.5, 1)):
        raise ValueError(f"the alpha grid must lie in [0, 1] and include 0, 0.5 and 1; got {alphas.tolist()}")
    value_a, value_b = values[0], values[-1]
    chord = (1 - alphas) * value_a + alphas * value_b
    return {
        "barrier": float(np.max(values - chord)),
        "midpoint": float(values[np.isclose(alphas, 0.5)][0]),
        "max_minus_endpoint_mean": float(values.max() - (value_a + value_b) / 2),
        "value_a": float(value_a),
        "value_b": float(value_b),
    }


def check_finite(curves, name: str) -> None:
    """Raise :class:`NonFinitePathError` naming the first row of ``curves`` (a table of
    :func:`interpolation_curve` rows with seed_a, seed_b, method and correction) whose value is not finite."""
    bad = curves[~np.isfinite(curves["value"])]
    if len(bad):  # stop rather than let a NaN or inf turn into a barrier
        first = bad.iloc[0]
        path = method_label(first["method"], first["correction"])
        raise NonFinitePathError(
            f"{name}: the {first['split']} {first['metric']} is not finite on the path from seed "
            f"{first['seed_a']} to seed {first['seed_b']} ({path}) at alpha = {first['alpha']} "
            f"({len(bad)} such points); the models or the alignment are broken"
        )


@dataclass
class BarrierTables:
    """Every point of every path (curves.csv) and each curve's barrier summary (barriers.csv)."""

    curves: pd.DataFrame
    barriers: pd.DataFrame


def path_corrections(container: torch.nn.Module, requested: Sequence[str], name: str) -> list[str | None]:
    """``None`` (no correction) and each correction of ``requested`` that applies to ``container``'s
    architecture; one that does not is skipped with a logged reason."""
    corrections = [None]
    for correction in requested:
        if why := correction_refusal(container, correction):
            log.info("%s: no %s paths: %s", name, correction, why)
        else:
            corrections.append(correction)
    return corrections


def alignment_curves(config: Configuration, models, records, data: Dataset, options: dict) -> pd.DataFrame:
    """The curve of every alignment record (model A to model B permuted by the record's permutations) under
    every applicable correction of ``options["norm_corrections"]``: column ``method`` names the alignment,
    ``correction`` the correction (``none``: the path as it is). ``options`` are the ``barrier`` params."""
    limit = {"train": options["train_samples"], "test": None}  # the train split is subsampled
    splits = {split: tuple(t[: limit[split]] for t in data.split(split)) for split in options["splits"]}
    alphas = evaluation_grid(options["alphas"])
    container = deepcopy(next(iter(models.values())))  # overwritten in place at every path point
    corrections = path_corrections(container, options["norm_corrections"], config.name)
    norm_inputs = data.x_train[: options["norm_samples"]]

    curves = []
    for record in tqdm(records, desc=config.name):
        model_a, model_b = models[record["seed_a"]], models[record["seed_b"]]
        perms = {name: torch.tensor(perm) for name, perm in record["permutations"].items()}
        state_b = apply_permutations(model_b.permutation_spec(), perms, model_b.state_dict())
        for correction in corrections:
            keys = {**config.as_dict(), "seed_a": record["seed_a"], "seed_b": record["seed_b"]}
            keys |= {"method": record["method"], "correction": correction or NO_CORRECTION}
            rows = interpolation_curve(
                container, model_a.state_dict(), state_b, alphas, splits, options["batch_size"],
                correction, norm_inputs,
            )  # fmt: skip
            curves += [{**keys, **row} for row in rows]
    return pd.DataFrame(curves)


def barrier_table(curves: pd.DataFrame, group_keys: list[str]) -> pd.DataFrame:
    """:func:`barrier_summary` of every curve of ``curves`` (one per value of ``group_keys``), in their order."""
    return pd.DataFrame(
        [
            {**dict(zip(group_keys, key, strict=True)), **barrier_summary(g["alpha"], g["value"])}
            for key, g in curves.groupby(group_keys, sort=False)
        ]
    )


def barrier_tables(config: Configuration, models, records, data: Dataset, options: dict) -> BarrierTables:
    """Curves and barriers of every alignment record of ``config`` (``seed_a``, ``seed_b``, ``method``,
    ``permutations``, as alignment.json holds them) between ``models`` (seed -> model, on ``data``'s device).
    ``options`` are the ``barrier`` params. A value that is not finite raises :class:`NonFinitePathError`."""
    curves = alignment_curves(config, models, records, data, options)
    check_finite(curves, config.name)  # stop rather than let a NaN or inf turn into a barrier

    group_keys = [*config.as_dict(), "seed_a", "seed_b", "method", "correction", "split", "metric"]
    barriers = barrier_table(curves, group_keys)
    for row in barriers.query("split == 'test' and metric == 'loss'").itertuples():
        label = method_label(row.method, row.correction)
        log.info("seeds %d-%d %-20s test loss barrier %.4f", row.seed_a, row.seed_b, label, row.barrier)
    return BarrierTables(curves, barriers)
