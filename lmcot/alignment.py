"""Alignment methods: each returns one permutation per hidden layer that maps model B onto model A.

All methods share one signature, ``method(model_a, model_b, inputs, **options) -> Permutations``, and
work on any architecture through its :class:`~lmcot.permutation.PermutationSpec`. Apply the result
with :func:`~lmcot.permutation.apply_permutations` to B's state dict.
"""

from __future__ import annotations

import logging
from copy import deepcopy

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from lmcot.permutation import Permutations, apply_permutations, identity_permutations, permute_tensor

log = logging.getLogger(__name__)


def solve_lap(score: torch.Tensor) -> torch.Tensor:
    """Permutation ``perm`` maximising ``sum_i score[i, perm[i]]`` for a square ``(n, n)`` score."""
    rows, cols = linear_sum_assignment(score.detach().cpu().double().numpy(), maximize=True)
    assert np.array_equal(rows, np.arange(len(rows)))
    return torch.from_numpy(cols).long()


def identity(model_a, model_b, inputs=None) -> Permutations:
    """No alignment: the naive baseline."""
    return identity_permutations(model_a.permutation_spec(), model_a.state_dict())


@torch.no_grad()
def weight_matching(model_a, model_b, inputs=None, max_sweeps: int = 100, seed: int = 0) -> Permutations:
    """Git Re-Basin weight matching (Ainsworth et al. 2023) by coordinate descent with exact LAPs.

    Maximises ``sum_l <W_A^l, P_l W_B^l P_{l-1}^T>`` (biases included). Each step fixes all
    permutations but one, whose best value is a LAP over the summed inner products of every tensor it
    acts on. Permutations are visited in a random order (``seed``); a permutation is solved again only
    after a permutation it shares a tensor with has changed, and the descent stops when none has.
    Scores are computed in float32 on the models' device; the LAPs are solved on the CPU.
    """
    spec = model_a.permutation_spec()
    state_a = {k: v.detach().float() for k, v in model_a.state_dict().items()}
    state_b = {k: v.detach().float().to(next(iter(state_a.values())).device) for k, v in model_b.state_dict().items()}
    perms = identity_permutations(spec, state_a)
    neighbours = {
        name: {other for param, _ in pairs for other in spec.acting_on(param).values() if other != name}
        for name, pairs in spec.axes.items()
    }
    rng = np.random.default_rng(seed)
    stale = set(spec.names)  # permutations whose score may have changed since they were last solved
    for sweep in range(max_sweeps):
        for name in rng.permutation(spec.names):
            if name not in stale:
                continue
            stale.discard(name)
            n = len(perms[name])
            score = 0
            for param, axis in spec.axes[name]:
                w_a = state_a[param].movedim(axis, 0).reshape(n, -1)
                w_b = permute_tensor(spec, perms, param, state_b[param], skip_axis=axis)
                score = score + w_a @ w_b.movedim(axis, 0).reshape(n, -1).T
            score = score.double().cpu()
            new = solve_lap(score)
            gain = score[torch.arange(n), new].sum() - score[torch.arange(n), perms[name]].sum()
            if gain > 1e-6 * score.abs().max():
                perms[name] = new
                stale |= neighbours[name]
        if not stale:
            log.debug("weight matching converged after %d sweeps", sweep + 1)
            break
    else:
        log.warning("weight matching stopped at max_sweeps=%d before converging", max_sweeps)
    return perms


@torch.no_grad()
def activation_matching(model_a, model_b, inputs: torch.Tensor, batch_size: int = 4096) -> Permutations:
    """Match units by the correlation of their activations on ``inputs`` (one LAP per layer).

    ``inputs``: ``(samples, *input_shape)``, typically training data. Correlations are accumulated
    over batches, so memory stays ``O(batch_size * width + width^2)``.
    """
    model_a.eval(), model_b.eval()
    sums = {}
    for start in range(0, len(inputs), batch_size):
        x = inputs[start : start + batch_size]
        acts_a, acts_b = model_a.hidden_activations(x), model_b.hidden_activations(x)
        for name in acts_a:
            a, b = acts_a[name].float(), acts_b[name].float()
            s = sums.setdefault(name, [0, 0.0, 0.0, 0.0, 0.0, 0.0])
            s[0] += len(a)  # each batch's sums in float32 (fast), their running totals in float64
            s[1] += a.sum(0).double()
            s[2] += b.sum(0).double()
            s[3] += (a * a).sum(0).double()
            s[4] += (b * b).sum(0).double()
            s[5] += (a.T @ b).double()
    perms = {}
    for name, (count, sa, sb, saa, sbb, sab) in sums.items():
        cov = sab / count - torch.outer(sa / count, sb / count)
        std_a = (saa / count - (sa / count) ** 2).clamp_min(0).sqrt()
        std_b = (sbb / count - (sb / count) ** 2).clamp_min(0).sqrt()
        corr = cov / torch.outer(std_a, std_b).clamp_min(1e-12)
        perms[name] = solve_lap(corr)
    return perms


METHODS = {
    "identity": identity,
    "weight_matching": weight_matching,
    "activation_matching": activation_matching,
}


def align(method: str, model_a, model_b, inputs=None, **options) -> Permutations:
    """Run alignment method ``method`` (a key of :data:`METHODS`) with its options."""
    if method not in METHODS:
        raise ValueError(f"unknown alignment method {method!r}; valid: {', '.join(METHODS)}")
    return METHODS[method](model_a, model_b, inputs, **options)


def permuted_copy(model: torch.nn.Module, perms: Permutations) -> torch.nn.Module:
    """A copy of ``model`` with its hidden units permuted by ``perms`` (the original is untouched)."""
    copy = deepcopy(model)
    copy.load_state_dict(apply_permutations(model.permutation_spec(), perms, model.state_dict()))
    return copy


@torch.no_grad()
def output_change(model: torch.nn.Module, perms: Permutations, inputs: torch.Tensor) -> float:
    """Largest absolute change of ``model``'s outputs on ``inputs`` caused by permuting it.

    A correct permutation gives float round-off only (about 1e-6 of the outputs' scale).
    """
    model.eval()
    return (permuted_copy(model, perms).eval()(inputs) - model(inputs)).abs().max().item()
