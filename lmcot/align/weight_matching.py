"""Git Re-Basin weight matching (Ainsworth et al. 2023): every permutation at once, by coordinate descent."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch

from lmcot.align.assignment import assign
from lmcot.permutation import Permutations, PermutationSpec, base_name, identity_permutations, permute_tensor

log = logging.getLogger(__name__)


def is_bias(param: str) -> bool:
    """Whether a parameter name is a bias (``layers.0.bias``, ``layers.0.bias_f``, ``stem.bn.bias``)."""
    return param.rsplit(".", 1)[-1].startswith("bias")


def weight_matching(
    model_a, model_b, inputs=None, max_sweeps: int = 100, seed: int = 0, biases: bool = True
) -> Permutations:
    """Git Re-Basin weight matching (Ainsworth et al. 2023) by coordinate descent with exact LAPs.

    Maximises ``sum_l <W_A^l, P_l W_B^l P_{l-1}^T>``, plus the biases' inner products ``<b_A^l, P_l b_B^l>``
    unless ``biases`` is false, over the models' parameters only, as Git Re-Basin does: buffers such as
    BatchNorm's running statistics follow the permutations but do not score them (their scale, often far
    from the weights', would decide the match). Each step fixes all permutations but one, whose best value
    is a LAP over the summed inner products of every tensor it acts on. Permutations are visited in a random order
    (``seed``); a permutation is solved again only after a permutation it shares a tensor with has
    changed, and the descent stops when none has. Scores are computed in float32 on the models' device;
    the LAPs are solved on the CPU.
    """
    with torch.no_grad():
        spec = model_a.permutation_spec()
        scored = {name for name, _ in model_a.named_parameters() if biases or not is_bias(name)}
        spec = replace(
            spec, axes={name: tuple(p for p in pairs if base_name(p[0]) in scored) for name, pairs in spec.axes.items()}
        )
        state_a = spec.split({k: v.detach().float() for k, v in model_a.state_dict().items()})
        device = next(iter(state_a.values())).device
        state_b = spec.split({k: v.detach().float().to(device) for k, v in model_b.state_dict().items()})
        perms = identity_permutations(spec, state_a)
        rng = np.random.default_rng(seed)
        own = _self_dependent(spec)
        if own:
            # A recurrent layer's score reads its own permutation (hidden-to-hidden weights on both axes): at
            # the identity those terms are noise that can swamp a small input matrix, so the descent starts
            # from the assignment of the other terms alone (the input-only answer), then adds them.
            inputs_only = {n: tuple(p for p in pairs if p[0] not in own.get(n, ())) for n, pairs in spec.axes.items()}
            perms = _descend(replace(spec, axes=inputs_only), state_a, state_b, perms, rng, max_sweeps, {})
        return _descend(spec, state_a, state_b, perms, rng, max_sweeps, own)


def _self_dependent(spec: PermutationSpec) -> dict[str, set[str]]:
    """Per permutation, the tensors it acts on along two or more axes (a recurrent layer's hidden-to-hidden
    weights): its own score depends on it."""
    own = {}
    for name, pairs in spec.axes.items():
        tensors = {p for p, _ in pairs if list(spec.acting_on(p).values()).count(name) > 1}
        if tensors:
            own[name] = tensors
    return own


def _descend(spec: PermutationSpec, state_a, state_b, perms: Permutations, rng, max_sweeps: int, own) -> Permutations:
    """Coordinate descent from ``perms``: solve one permutation (or head group) at a time while any is stale;
    ``own``: :func:`_self_dependent` of ``spec``."""
    perms = dict(perms)
    # one step solves one permutation, or a head group's permutations together
    steps = [(name,) for name in spec.names if name not in spec.groups] + [
        tuple(names) for names in spec.head_groups().values()
    ]
    # a permutation is solved again when one it shares a tensor with changes, itself included where its own
    # score reads it (recurrent weights)
    neighbours = {
        name: {other for param, _ in pairs for other in spec.acting_on(param).values() if other != name or name in own}
        for name, pairs in spec.axes.items()
    }
    stale = set(spec.names)  # permutations whose score may have changed since they were last solved
    for sweep in range(max_sweeps):
        for step in rng.permutation(len(steps)):
            names = steps[step]
            if not stale & set(names):
                continue
            stale -= set(names)
            scores = {name: _score(spec, name, state_a, state_b, perms) for name in names}
            new = assign(spec, scores)
            rows = {name: torch.arange(len(perms[name])) for name in names}
            # the objective's change; where a score reads its own permutation, it is re-read at the new one, so
            # that only a true improvement is taken (the descent cannot cycle)
            after = {n: _score(spec, n, state_a, state_b, {**perms, **new}) if n in own else scores[n] for n in names}
            gain = sum(after[n][rows[n], new[n]].sum() - scores[n][rows[n], perms[n]].sum() for n in names)
            if gain > 1e-6 * max(score.abs().max() for score in scores.values()):
                perms.update(new)
                group = set(names)
                stale |= {o for name in names for o in neighbours[name] if o not in group or o in own}
        if not stale:
            log.debug("weight matching converged after %d sweeps", sweep + 1)
            break
    else:
        log.warning("weight matching stopped at max_sweeps=%d before converging", max_sweeps)
    return perms


def _score(spec: PermutationSpec, name: str, state_a, state_b, perms) -> torch.Tensor:
    """``(n, n)`` float64 on the CPU: the summed inner products, over every tensor permutation ``name`` acts on, of
    A's units with B's, B's other axes permuted by ``perms``."""
    n = len(perms[name])
    score = 0
    for param, axis in spec.axes[name]:
        # (n * b, ...) -> (n, b * ...): on a block axis, a unit's score sums over its block's b entries
        w_a = state_a[param].movedim(axis, 0).reshape(n, -1)
        w_b = permute_tensor(spec, perms, param, state_b[param], skip_axis=axis)
        score = score + w_a @ w_b.movedim(axis, 0).reshape(n, -1).T
    return score.double().cpu()
