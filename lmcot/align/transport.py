"""Optimal transport between the two models' neurons, layer by layer: exact (network simplex), entropic
(Sinkhorn, rounded), and the Wasserstein barycentre's couplings."""

from __future__ import annotations

import torch

from lmcot.align.layerwise import layerwise
from lmcot.ot import entropic_log_plan, exact_permutation, solve_lap, squared_distances
from lmcot.permutation import Permutations


def _negative_squared_distances(name, w_a, w_b) -> torch.Tensor:
    """``-|w_A,i - w_B,j|^2``, ``(n, n)`` float64: the OT cost as a score to maximise."""
    return torch.from_numpy(-squared_distances(w_a, w_b))


def ot_emd(
    model_a, model_b, inputs=None, num_iter_max: int = 1_000_000, recurrent_iterations: int = 20
) -> Permutations:
    """Exact optimal transport (POT's ``ot.emd``) between the two layers' neurons, layer by layer.

    Each neuron is a point (its incoming weights) of uniform mass; the cost is the squared Euclidean
    distance. With equal masses an optimal plan can be taken at a vertex of the Birkhoff polytope, a
    permutation, which is what the network simplex returns. Wide layers need a large ``num_iter_max``.
    A recurrent layer's points include its hidden-to-hidden rows (see :func:`layerwise`).
    """

    def plan_to_permutation(name, score):
        return exact_permutation(-score.numpy(), num_iter_max, where=name)

    return layerwise(model_a, model_b, _negative_squared_distances, plan_to_permutation, recurrent_iterations)


def ot_sinkhorn(
    model_a,
    model_b,
    inputs=None,
    epsilon: float = 0.01,
    num_iter_max: int = 10_000,
    stop_threshold: float = 1e-4,
    recurrent_iterations: int = 20,
) -> Permutations:
    """Entropic optimal transport (POT's ``sinkhorn_log``) between the layers' neurons, layer by layer,
    rounded to the permutation of largest log-coupling.

    The squared-distance cost ``C`` is divided by its maximum, so ``epsilon`` is relative to the largest cost.
    Sinkhorn's coupling is ``P = diag(u) K diag(v)`` with ``K = exp(-C / epsilon)``, so over permutations
    ``sum_i log P[i, p(i)] = sum log u + sum log v - sum_i C[i, p(i)] / epsilon``: the rounding returns the
    permutation of least cost, the exact plan's, for every ``epsilon`` and iteration count (the report then
    merges this method with ``ot_emd``). Rounding the coupling itself instead (largest total mass) blurs
    near-ties at small ``epsilon`` and loses most of the exact plan in wide layers. A recurrent layer's
    points include its hidden-to-hidden rows (see :func:`layerwise`).
    """

    def rounded_coupling(name, score):
        return solve_lap(torch.from_numpy(entropic_log_plan(-score.numpy(), epsilon, num_iter_max, stop_threshold)))

    return layerwise(model_a, model_b, _negative_squared_distances, rounded_coupling, recurrent_iterations)


def barycenter(
    model_a,
    model_b,
    inputs=None,
    solver: str = "emd",
    epsilon: float = 1e-3,
    max_iterations: int = 20,
    alpha_h: float = 1.0,
    start: str = "best",
    input_transport: str = "average",
    couple_to: str = "others",
) -> Permutations:
    """Fusion as alignment: the Wasserstein barycentre of A and B (lambda = 1/2, from ``start``) couples
    each to the fused model; the couplings, rounded to permutations, put B's units where A's are.
    See :func:`lmcot.fusion.barycenter_permutations`."""
    from lmcot.fusion import barycenter_permutations

    options = dict(solver=solver, epsilon=epsilon, max_iterations=max_iterations, alpha_h=alpha_h, start=start)
    return barycenter_permutations(model_a, model_b, input_transport=input_transport, couple_to=couple_to, **options)
