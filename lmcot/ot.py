"""Optimal transport between two finite sets of points: assignments, exact and entropic plans.

A leaf of the package (no other lmcot module is imported). Arguments follow POT: ``a`` ``(m,)`` and
``b`` ``(n,)`` are the marginals (each summing to 1), ``M`` ``(m, n)`` the cost. Plans are numpy
arrays ``(m, n)`` whose entries sum to 1; a permutation is a long tensor ``perm`` with ``perm[i]``
the column matched to row ``i``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

SOLVERS = ("emd", "sinkhorn")  # as lmcot.choices.SOLVERS names them for params.yaml (tests check they agree)


def solve_lap(score: torch.Tensor) -> torch.Tensor:
    """Permutation ``perm`` maximising ``sum_i score[i, perm[i]]`` for a square ``(n, n)`` score."""
    rows, cols = linear_sum_assignment(score.detach().cpu().double().numpy(), maximize=True)
    assert np.array_equal(rows, np.arange(len(rows)))
    return torch.from_numpy(cols).long()


def uniform(n: int) -> np.ndarray:
    """The uniform marginal ``(n,)``: every point carries mass ``1 / n``."""
    return np.full(n, 1.0 / n)


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """``M[i, j] = |x_i - y_j|^2`` ``(m, n)`` float64, for points ``x`` ``(m, d)`` and ``y`` ``(n, d)``."""
    import ot

    return ot.dist(x.double().cpu().numpy(), y.double().cpu().numpy())


def exact_plan(a: np.ndarray, b: np.ndarray, M: np.ndarray, num_iter_max: int = 1_000_000) -> np.ndarray:
    """An optimal plan (POT's network simplex, ``ot.emd``), after at most ``num_iter_max`` iterations."""
    import ot

    return ot.emd(a, b, M, numItermax=num_iter_max)


def exact_permutation(M: np.ndarray, num_iter_max: int = 1_000_000, where: str = "") -> torch.Tensor:
    """The permutation of least total cost for a square cost ``(n, n)``, from the exact plan between uniform
    marginals (an optimal vertex of the Birkhoff polytope). ``RuntimeError`` naming ``where`` if the
    simplex stopped before reaching a vertex (raise ``num_iter_max``)."""
    n = len(M)
    plan = exact_plan(uniform(n), uniform(n), M, num_iter_max)
    perm = plan.argmax(1)
    if not np.allclose(plan[np.arange(n), perm], 1.0 / n):
        raise RuntimeError(f"ot.emd returned a plan that is not a permutation at {where}; raise num_iter_max")
    return torch.from_numpy(perm).long()


def entropic_plan(
    a: np.ndarray,
    b: np.ndarray,
    M: np.ndarray,
    epsilon: float,
    num_iter_max: int = 10_000,
    stop_threshold: float = 1e-4,
) -> np.ndarray:
    """Sinkhorn's plan (log domain) for the cost divided by its maximum (so ``epsilon`` is relative to the
    largest cost), stopped once the marginals are within ``stop_threshold`` or after ``num_iter_max``
    iterations, then rounded onto the exact marginals (:func:`round_to_marginals`)."""
    import ot

    scale = max(M.max(), 1e-300)
    plan = ot.sinkhorn(
        a, b, M / scale, epsilon, method="sinkhorn_log", numItermax=num_iter_max, stopThr=stop_threshold, warn=False
    )
    return round_to_marginals(plan, a, b)


def entropic_log_plan(
    M: np.ndarray, epsilon: float, num_iter_max: int = 10_000, stop_threshold: float = 1e-4
) -> np.ndarray:
    """``log P`` ``(m, n)`` of Sinkhorn's plan between uniform marginals for the cost divided by its maximum.

    Computed from the dual potentials, ``log P = log u + log v - M / epsilon``: ``P`` itself underflows to 0
    wherever ``M / epsilon`` is large, while its logarithm still ranks the entries."""
    import ot

    m, n = M.shape
    M = M / max(M.max(), 1e-300)
    _, log = ot.bregman.sinkhorn_log(
        uniform(m), uniform(n), M, epsilon, numItermax=num_iter_max, stopThr=stop_threshold, warn=False, log=True
    )
    return log["log_u"][:, None] + log["log_v"][None, :] - M / epsilon


def round_to_marginals(plan: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The nearby plan with marginals exactly ``a`` and ``b`` (Altschuler, Weed and Rigollet 2017):
    scale down rows and columns that carry too much, then spread the missing mass as a rank-one term."""
    plan = plan * np.minimum(a / np.maximum(plan.sum(1), 1e-300), 1)[:, None]
    plan = plan * np.minimum(b / np.maximum(plan.sum(0), 1e-300), 1)[None, :]
    row_deficit, column_deficit = np.maximum(a - plan.sum(1), 0), np.maximum(b - plan.sum(0), 0)
    if row_deficit.sum() > 0:
        plan = plan + np.outer(row_deficit, column_deficit) / row_deficit.sum()
    return plan


def uniform_plan(
    cost: torch.Tensor,
    solver: str = "emd",
    epsilon: float = 1e-3,
    num_iter_max: int | None = None,
    stop_threshold: float = 1e-4,
) -> torch.Tensor:
    """Plan ``(m, n)`` float64 between uniform marginals minimising ``<pi, cost>``: exact (``emd``, default
    10^6 iterations) or entropic (``sinkhorn``, default 10^4 iterations; see :func:`entropic_plan`)."""
    M = cost.detach().double().cpu().numpy()
    a, b = uniform(M.shape[0]), uniform(M.shape[1])
    if solver == "emd":
        plan = exact_plan(a, b, M, num_iter_max or 1_000_000)
    elif solver == "sinkhorn":
        plan = entropic_plan(a, b, M, epsilon, num_iter_max or 10_000, stop_threshold)
    else:
        raise ValueError(f"unknown OT solver {solver!r}; valid: {', '.join(SOLVERS)}")
    return torch.from_numpy(plan)
