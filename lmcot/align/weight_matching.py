"""Git Re-Basin weight matching (Ainsworth et al. 2023): every permutation at once, by coordinate descent."""

from __future__ import annotations

import logging

import numpy as np
import torch

from lmcot.align.assignment import assign
from lmcot.permutation import Permutations, PermutationSpec, identity_permutations, permute_tensor

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
        parameters = {name for name, _ in model_a.named_parameters()}
        scored = lambda param: param in parameters and (biases or not is_bias(param))  # noqa: E731
        spec = PermutationSpec(
            {name: tuple(p for p in pairs if scored(p[0])) for name, pairs in spec.axes.items()},
            spec.blocks,
            spec.groups,
        )
        state_a = {k: v.detach().float() for k, v in model_a.state_dict().items()}
        state_b = {
            k: v.detach().float().to(next(iter(state_a.values())).device) for k, v in model_b.state_dict().items()
        }
        perms = identity_permutations(spec, state_a)
        # one step solves one permutation, or a head group's permutations together
        steps = [(name,) for name in spec.names if name not in spec.groups] + [
            tuple(names) for names in spec.head_groups().values()
        ]
        neighbours = {
            name: {other for param, _ in pairs for other in spec.acting_on(param).values() if other != name}
            for name, pairs in spec.axes.items()
        }
        rng = np.random.default_rng(seed)
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
                gain = sum(scores[n][rows[n], new[n]].sum() - scores[n][rows[n], perms[n]].sum() for n in names)
                if gain > 1e-6 * max(score.abs().max() for score in scores.values()):
                    perms.update(new)
                    stale |= set().union(*(neighbours[name] for name in names)) - set(names)
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
