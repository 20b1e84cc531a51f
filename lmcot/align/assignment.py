"""From unit scores to permutations, whole attention heads matched as units.

Every LAP-based method builds, per permutation, an ``(n, n)`` score between model A's units (rows) and model B's
(columns) and maximises it. A permutation of a head group (``PermutationSpec.groups``) may only move whole runs of
units (heads) and reorder units within them, alike for every permutation of the group; :func:`assign` solves such
a group as a nested assignment: for each pair (A's head ``i``, B's head ``k``), each permutation's within-head
block is solved alone, the pair's value is the sum of those blocks' optima, and one LAP over the heads' values
picks the heads. This is the exact optimum over the structured permutations (the within-head problems of a pair
are independent once the pair is fixed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from lmcot.ot import solve_lap
from lmcot.permutation import Permutations, PermutationSpec, compose_runs

Solve = Callable[[str, torch.Tensor], torch.Tensor]


def lap(name: str, score: torch.Tensor) -> torch.Tensor:
    """The permutation of largest total ``score`` (the default ``solve``)."""
    return solve_lap(score)


def assign(spec: PermutationSpec, scores: Mapping[str, torch.Tensor], solve: Solve = lap) -> Permutations:
    """One permutation per name of ``scores`` (``(n, n)`` each, to maximise), in ``scores``' order.

    ``solve(name, score)`` turns one square score into a permutation (:func:`lap` by default; an OT method's
    plan rounding). A head group's permutations must all be in ``scores``: they are solved together, ``solve``
    applied to each within-head block and the heads by a LAP."""
    perms, grouped = {}, {}
    for name, score in scores.items():
        if name in spec.groups:
            grouped.setdefault(spec.groups[name][0], []).append(name)
        else:
            perms[name] = solve(name, score)
    for heads, names in grouped.items():
        missing = [n for n in spec.head_groups()[heads] if n not in names]
        if missing:
            raise ValueError(f"group {heads!r} must be solved together; no scores for {', '.join(missing)}")
        perms.update(assign_heads({n: (scores[n], spec.groups[n][1]) for n in names}, solve, spec.whole))
    return {name: perms[name] for name in scores}


def assign_heads(
    scores: Mapping[str, tuple[torch.Tensor, int]], solve: Solve = lap, whole: frozenset[str] = frozenset()
) -> Permutations:
    """The permutations of one head group: ``scores[name] = (score, size)``, ``score`` ``(h*size, h*size)``.

    Returns the run-preserving permutation of each name that maximises the summed scores, all moving the ``h``
    heads alike; a name in ``whole`` keeps each run's order (a grouped convolution's input channels)."""
    h = {len(score) // size for score, size in scores.values()}.pop()
    value = torch.zeros(h, h, dtype=torch.float64)
    within = {}  # name -> (h, h, size): the best order of B's head k's units for A's head i
    for name, (score, size) in scores.items():
        blocks = score.double().reshape(h, size, h, size).transpose(1, 2)  # [i, k] = A's head i x B's head k
        if name in whole:
            best = torch.arange(size).expand(h, h, size)
        else:
            best = torch.stack([torch.stack([solve(name, blocks[i, k]) for k in range(h)]) for i in range(h)])
        value += torch.gather(blocks, 3, best.unsqueeze(3)).squeeze(3).sum(2)
        within[name] = best
    heads = solve_lap(value)
    return {name: compose_runs(heads, best[torch.arange(h), heads]) for name, best in within.items()}
