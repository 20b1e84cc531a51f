"""lmcot.ot: assignments and plans on cases small enough to solve by hand."""

import math

import numpy as np
import pytest
import torch

from lmcot.ot import (
    entropic_log_plan,
    entropic_plan,
    exact_permutation,
    exact_plan,
    round_to_marginals,
    solve_lap,
    squared_distances,
    uniform,
    uniform_plan,
)

# Three points on a line matched to the same points shifted and reordered: the best match is by position.
X = torch.tensor([[0.0], [1.0], [3.0]])
Y = torch.tensor([[3.1], [0.1], [1.1]])


def test_squared_distances_by_hand():
    assert np.allclose(squared_distances(X[:2], Y[:2]), [[3.1**2, 0.1**2], [2.1**2, 0.1**2 + 0.8]])


def test_solve_lap_maximises_and_exact_permutation_minimises():
    score = torch.tensor([[1.0, 5.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    assert solve_lap(score).tolist() == [1, 0, 2]
    cost = squared_distances(X, Y)
    assert exact_permutation(cost).tolist() == [1, 2, 0]
    assert solve_lap(torch.from_numpy(-cost)).tolist() == [1, 2, 0]


@pytest.mark.filterwarnings("ignore:numItermax reached")
def test_exact_permutation_names_where_the_simplex_stopped():
    cost = np.random.default_rng(0).random((40, 40))
    with pytest.raises(RuntimeError, match="not a permutation at layer 3; raise num_iter_max"):
        exact_permutation(cost, num_iter_max=2, where="layer 3")


def test_exact_plan_splits_mass_when_the_sizes_differ():
    """Two points onto one: all mass goes to it; one point onto two equidistant: half to each."""
    assert exact_plan(uniform(2), uniform(1), np.array([[1.0], [2.0]])).tolist() == [[0.5], [0.5]]
    assert exact_plan(uniform(1), uniform(2), np.array([[1.0, 1.0]])).tolist() == [[0.5, 0.5]]


def test_entropic_plans_approach_the_exact_one():
    cost = squared_distances(X, Y)
    exact = exact_plan(uniform(3), uniform(3), cost)
    plan = entropic_plan(uniform(3), uniform(3), cost, epsilon=1e-3)
    assert np.allclose(plan.sum(1), 1 / 3) and np.allclose(plan.sum(0), 1 / 3)
    assert np.abs(plan - exact).max() < 1e-3
    # the log plan ranks the exact plan's entries first in each row, even where exp(log P) underflows
    log_plan = entropic_log_plan(cost * 1e4, epsilon=1e-4)
    assert np.exp(log_plan).min() == 0.0
    assert log_plan.argmax(1).tolist() == exact.argmax(1).tolist()


def test_round_to_marginals_by_hand():
    """Row 0 carries 0.6 for its 0.5: scaled to [0.25, 0.25]; row 1 lacks 0.1, spread as the columns lack it.
    Column 0 carries 0.6: scaled by 5/6, then row deficits [1/12, 5/12] meet column deficits [0, 1/2]."""
    plan = np.array([[0.3, 0.3], [0.2, 0.2]])
    rounded = round_to_marginals(plan, uniform(2), uniform(2))
    assert np.allclose(rounded, [[0.25, 0.25], [0.25, 0.25]])
    uneven = np.array([[0.5, 0.0], [0.1, 0.0]])
    assert np.allclose(round_to_marginals(uneven, uniform(2), uniform(2)), [[5 / 12, 1 / 12], [1 / 12, 5 / 12]])


def test_uniform_plan_defaults_and_an_unknown_solver():
    """The default solver is exact, and Sinkhorn at its default epsilon and threshold is within 1e-3 of it."""
    cost = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert uniform_plan(cost).tolist() == [[0.5, 0.0], [0.0, 0.5]]
    assert torch.allclose(
        uniform_plan(cost, "sinkhorn"), torch.tensor([[0.5, 0.0], [0.0, 0.5]], dtype=torch.float64), atol=1e-3
    )
    with pytest.raises(ValueError, match="unknown OT solver 'hungarian'; valid: emd, sinkhorn"):
        uniform_plan(torch.rand(3, 3), "hungarian")


def test_uniform_plan_passes_its_sinkhorn_threshold_and_cap_on():
    """Sinkhorn from uniform_plan is entropic_plan between uniform marginals with the same threshold (default
    1e-4) and iteration cap (reached with a threshold of 0, which never stops it early)."""
    cost = torch.rand(5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    M, a = cost.numpy(), uniform(5)
    for options, expected in [
        ({}, entropic_plan(a, a, M, 0.01, 10_000, 1e-4)),
        ({"stop_threshold": 1e-9}, entropic_plan(a, a, M, 0.01, 10_000, 1e-9)),
        ({"stop_threshold": 0.0, "num_iter_max": 7}, entropic_plan(a, a, M, 0.01, 7, 0.0)),
    ]:
        assert np.array_equal(uniform_plan(cost, "sinkhorn", 0.01, **options).numpy(), expected), options
    # the cap matters: 7 iterations are far from converged
    assert not np.allclose(entropic_plan(a, a, M, 0.01, 7, 0.0), entropic_plan(a, a, M, 0.01, 10_000, 1e-9))
    # the default threshold matters: a run stopped at the first check differs
    assert not np.array_equal(entropic_plan(a, a, M, 0.01, 10_000, 1e-4), entropic_plan(a, a, M, 0.01, 10_000, 1.0))


def test_sinkhorn_on_two_points_by_hand():
    """Cost ``[[0, c], [c, 0]]`` with uniform marginals: by symmetry the scalings are constant, so the plan is the
    Gibbs kernel ``[[1, k], [k, 1]]`` over ``2 (1 + k)``, ``k = exp(-(c / max cost) / epsilon) = exp(-2)`` at
    ``epsilon = 0.5``, whatever the cost's scale (here c = 0.5, below 1)."""
    k = math.exp(-2.0)
    expected = np.array([[1.0, k], [k, 1.0]]) / (2 * (1 + k))
    cost = np.array([[0.0, 0.5], [0.5, 0.0]])
    np.testing.assert_allclose(entropic_plan(uniform(2), uniform(2), cost, epsilon=0.5), expected, atol=1e-12)
    np.testing.assert_allclose(np.exp(entropic_log_plan(cost, epsilon=0.5)), expected, atol=1e-12)


def test_sinkhorn_works_in_the_log_domain_where_the_kernel_underflows():
    """At ``epsilon = 1e-3`` every entry of ``exp(-M / epsilon)`` for costs 0.9 and 1 underflows to 0; the
    log-domain iterations still give the plan of the cheaper diagonal."""
    cost = np.array([[0.9, 1.0], [1.0, 0.9]])
    plan = entropic_plan(uniform(2), uniform(2), cost, epsilon=1e-3)
    np.testing.assert_allclose(plan, [[0.5, 0.0], [0.0, 0.5]], atol=1e-12)


def test_the_exact_plan_follows_unequal_marginals_by_hand():
    """Masses (3/4, 1/4) to (1/4, 3/4) at cost 0 on the diagonal and 1 off it: 1/4 stays on each diagonal entry
    and the remaining 1/2 of the first point moves to the second target."""
    cost = np.array([[0.0, 1.0], [1.0, 0.0]])
    plan = exact_plan(np.array([0.75, 0.25]), np.array([0.25, 0.75]), cost)
    np.testing.assert_allclose(plan, [[0.25, 0.5], [0.0, 0.25]], atol=1e-15)
