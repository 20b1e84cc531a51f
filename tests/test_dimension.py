"""Dimension estimates: exact values on known matrices, and recovery of known dimensions on synthetic point clouds."""

import math

import numpy as np
import pytest
import torch

from lmcot.dimension import (
    default_sizes,
    disjoint_subsamples,
    estimate_all,
    mle_dimension,
    participation_ratio,
    pca_components,
    two_nn_dimension,
    wasserstein_distance,
    wasserstein_rate_dimension,
)


def embed(x, ambient, rng):
    """Map ``x`` ``(n, d)`` isometrically into R^ambient by a random matrix with orthonormal columns (from QR)."""
    basis, _ = np.linalg.qr(rng.standard_normal((ambient, x.shape[1])))
    return x @ basis.T


def cube(n, d, ambient, seed):
    """``n`` uniform samples of the unit cube [0, 1]^d, embedded in R^ambient."""
    rng = np.random.default_rng(seed)
    return embed(rng.random((n, d)), ambient, rng)


def gaussian(n, d, ambient, seed):
    """``n`` standard Gaussian samples of a d-dimensional linear subspace of R^ambient (a set without boundary)."""
    rng = np.random.default_rng(seed)
    return embed(rng.standard_normal((n, d)), ambient, rng)


# --- participation ratio ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 10])
def test_participation_ratio_of_identity_is_its_size(k):
    assert participation_ratio(np.eye(k)) == pytest.approx(k)


def test_participation_ratio_of_rank_one_is_one():
    v = np.random.default_rng(0).standard_normal(7)
    assert participation_ratio(np.outer(v, v)) == pytest.approx(1.0)


def test_participation_ratio_counts_equal_eigenvalues():
    assert participation_ratio(np.diag([1.0, 1.0, 0.0, 0.0])) == pytest.approx(2.0)
    assert participation_ratio(np.diag([3.0, 1.0])) == pytest.approx(16 / 10)  # (3 + 1)^2 / (9 + 1)


def test_participation_ratio_is_invariant_to_scale_and_rotation():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 4))
    s = a @ a.T  # PSD of rank 4
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    reference = participation_ratio(s)
    assert 1.0 < reference < 4.0
    assert participation_ratio(7.3 * s) == pytest.approx(reference)
    assert participation_ratio(q @ s @ q.T) == pytest.approx(reference)


def test_participation_ratio_edge_cases():
    assert participation_ratio(np.zeros((3, 3))) == 0.0
    with pytest.raises(ValueError):
        participation_ratio(np.ones((3, 4)))
    with pytest.raises(ValueError):
        participation_ratio(np.ones(3))
    tensor = torch.eye(5, requires_grad=True)  # torch tensors are accepted, even when they require grad
    assert participation_ratio(tensor) == pytest.approx(5.0)


# --- PCA -------------------------------------------------------------------------------------------------------------


def test_pca_finds_a_three_dimensional_subspace():
    rng = np.random.default_rng(2)
    points = gaussian(500, 3, 20, seed=2) + 1e-3 * rng.standard_normal((500, 20)) + 5.0  # off-centre on purpose
    assert pca_components(points) == {0.9: 3, 0.95: 3, 0.99: 3}


def test_pca_counts_on_a_known_spectrum():
    # Rows +-3 e1, +-2 e2, +-1 e3: centred, with variances proportional to 9, 4, 1 along the axes.
    # Cumulative fractions are 9/14 = 0.64, 13/14 = 0.93 and 1, so 0.9 needs 2 components and 0.95 needs 3.
    axes = np.diag([3.0, 2.0, 1.0, 0.0])
    points = np.concatenate([axes[:3], -axes[:3]])
    assert pca_components(points, (0.5, 0.9, 0.95, 1.0)) == {0.5: 1, 0.9: 2, 0.95: 3, 1.0: 3}


def test_pca_edge_cases():
    assert pca_components(np.ones((10, 4))) == {0.9: 0, 0.95: 0, 0.99: 0}
    with pytest.raises(ValueError):
        pca_components(np.ones((10, 4)), (0.0,))
    with pytest.raises(ValueError):
        pca_components(np.ones(10))


# --- nearest-neighbour estimators ------------------------------------------------------------------------------------

# Known d-dimensional sets of 4000 points in R^30. Measured over seeds 0-9 (estimate / d, min to max):
#   TwoNN: cube d=2 0.96-1.03, cube d=4 0.93-0.99, Gaussian d=2 0.97-1.02, d=4 0.99-1.05, d=6 0.99-1.06;
#   MLE (k=20): cube d=2 0.98-0.99, cube d=4 0.93-0.94, Gaussian d=2 1.00-1.01, d=4 1.01-1.02, d=6 0.99-1.00.
# The cube is not used at d=6: both estimators read it 4-12% low (TwoNN 0.89-0.96, MLE 0.88-0.90). That is the
# boundary effect, not the estimators failing: with 4000 points in 6 dimensions the 20-neighbour ball has a radius of
# about 0.3 of the side, so nearly every point is near a face and has fewer neighbours than a uniform density implies
# (for the 2-neighbour ball of TwoNN, radius ~0.2, 97% of points are). The Gaussian's support is a whole subspace, with
# no boundary, and both estimators recover d = 6 on it.
KNOWN_SETS = [(cube, 2), (cube, 4), (gaussian, 2), (gaussian, 4), (gaussian, 6)]


@pytest.mark.parametrize(("sampler", "d"), KNOWN_SETS, ids=[f"{s.__name__}{d}" for s, d in KNOWN_SETS])
def test_two_nn_recovers_known_dimension(sampler, d):
    estimate = two_nn_dimension(sampler(4000, d, 30, seed=0))
    assert abs(estimate - d) <= 0.1 * d


@pytest.mark.parametrize(("sampler", "d"), KNOWN_SETS, ids=[f"{s.__name__}{d}" for s, d in KNOWN_SETS])
def test_mle_recovers_known_dimension(sampler, d):
    estimate = mle_dimension(sampler(4000, d, 30, seed=0), k=20)
    assert abs(estimate - d) <= 0.1 * d


def test_duplicate_points_do_not_change_the_estimates():
    points = cube(1000, 3, 10, seed=3)
    with_duplicates = np.concatenate([points, points[:400], points[:50]])  # duplicate neurons
    assert two_nn_dimension(with_duplicates) == pytest.approx(two_nn_dimension(points), rel=1e-10)
    assert mle_dimension(with_duplicates) == pytest.approx(mle_dimension(points), rel=1e-10)
    assert np.isfinite(two_nn_dimension(with_duplicates)) and np.isfinite(mle_dimension(with_duplicates))


def test_nearest_neighbour_estimators_reject_too_few_points():
    with pytest.raises(ValueError, match="^need at least 3 distinct points, got 1$"):
        two_nn_dimension(np.ones((50, 3)))  # 50 copies of one point: a single distinct point
    with pytest.raises(ValueError):
        mle_dimension(cube(15, 2, 5, seed=0), k=20)
    with pytest.raises(ValueError):
        mle_dimension(cube(100, 2, 5, seed=0), k=1)


def test_single_precision_points_are_estimated_in_double_precision():
    """float32 weights (as torch stores them) are widened before any distance: the estimate is the one of the
    same values in float64, to the last bit."""
    points = cube(500, 3, 10, seed=4).astype(np.float32)
    wide = points.astype(np.float64)
    assert two_nn_dimension(points) == two_nn_dimension(wide)
    assert mle_dimension(points) == mle_dimension(wide)
    assert two_nn_dimension(torch.from_numpy(points)) == two_nn_dimension(wide)
    covariance = np.cov(points.T).astype(np.float32)
    assert participation_ratio(covariance) == participation_ratio(covariance.astype(np.float64))


# --- Wasserstein rate ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rate_results():
    """Wasserstein-rate estimates on unit cubes of dimension 1, 2 and 3 (2000 points in R^10), default settings."""
    return {d: wasserstein_rate_dimension(cube(2000, d, 10, seed=0), seed=0) for d in (1, 2, 3)}


def test_wasserstein_rate_returns_the_fit_and_its_data(rate_results):
    result = rate_results[3]
    assert result["sizes"] == default_sizes(2000)
    assert result["sizes"][0] == 16 and result["sizes"][-1] == 1000 and len(result["sizes"]) == 6
    assert len(result["distances"]) == len(result["sizes"])
    assert np.all(np.diff(result["distances"]) < 0)  # larger samples are closer
    assert result["dimension"] == pytest.approx(-1 / result["slope"])


@pytest.mark.parametrize(("d", "band"), [(2, 0.35), (3, 0.2)])
def test_wasserstein_rate_is_near_the_dimension(rate_results, d, band):
    # Bands (measured over seeds 0-9): d=3 reads 2.71-3.02 (up to 10% low, the small-n bias), so 20% holds with
    # margin. d=2 reads 2.11-2.33 (5-17% high): in dimension 2 the distance decays as sqrt(log(n) / n) rather than
    # n^(-1/2), and the log factor flattens the slope over n = 16..1000; 35% leaves a margin above that.
    assert abs(rate_results[d]["dimension"] - d) <= band * d


def test_wasserstein_rate_orders_dimensions(rate_results):
    # A curve reads about 2 (its distances decay as n^(-1/2), not n^(-1)), still below a 3-dimensional set.
    assert rate_results[1]["dimension"] < rate_results[3]["dimension"]


def test_subsamples_are_disjoint():
    rng = np.random.default_rng(0)
    for n_points, n in [(32, 16), (100, 7), (1001, 500)]:
        a, b = disjoint_subsamples(n_points, n, rng)
        assert len(a) == len(b) == n
        assert len(set(a.tolist()) | set(b.tolist())) == 2 * n  # no index repeated within or across the two
        assert a.min() >= 0 and max(a.max(), b.max()) < n_points
    with pytest.raises(ValueError):
        disjoint_subsamples(31, 16, rng)


def test_wasserstein_distance_on_known_measures():
    a = np.zeros((4, 2))
    b = np.zeros((4, 2)) + [3.0, 4.0]  # every point moves by a vector of length 5
    assert wasserstein_distance(a, b) == pytest.approx(5.0)
    assert wasserstein_distance(a, a) == pytest.approx(0.0)


def test_wasserstein_rate_is_reproducible_and_validates_input():
    points = cube(200, 2, 5, seed=4)
    first = wasserstein_rate_dimension(points, sizes=[16, 32, 64], repeats=2, seed=7)
    assert first == wasserstein_rate_dimension(points, sizes=[16, 32, 64], repeats=2, seed=7)
    with pytest.raises(ValueError):
        wasserstein_rate_dimension(cube(31, 2, 5, seed=0))
    with pytest.raises(ValueError):
        wasserstein_rate_dimension(points, sizes=[16])
    with pytest.raises(ValueError):
        wasserstein_rate_dimension(points, sizes=[16, 101])
    assert np.isnan(wasserstein_rate_dimension(np.ones((40, 3)))["dimension"])  # all points equal: W = 0


# --- all estimates ---------------------------------------------------------------------------------------------------


def test_estimate_all_on_a_three_dimensional_set():
    estimates = estimate_all(torch.as_tensor(gaussian(1000, 3, 10, seed=5)))
    assert set(estimates) == {"pca90", "pca95", "pca99", "two_nn", "mle", "wasserstein_rate"}
    assert all(np.isfinite(v) and v > 0 for v in estimates.values())
    assert estimates["pca90"] == estimates["pca99"] == 3
    assert 2.5 < estimates["two_nn"] < 3.5 and 2.5 < estimates["mle"] < 3.5


def test_model_dimensions_say_why_an_estimate_is_missing(digits):
    """A layer of 16 units is too small for the Wasserstein rate (32 points at least): NaN with the reason."""
    from lmcot.dimension import model_dimensions
    from lmcot.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", digits.input_shape, digits.num_classes, 16, 2)
    rows = model_dimensions(model, digits.x_train[:200], repeats=1)
    assert {row["layer"] for row in rows} == {"P0", "P1"}
    for row in rows:
        if row["estimator"] == "wasserstein_rate":
            assert np.isnan(row["value"]) and "at least 32 points, got 16" in row["note"], row
        elif np.isfinite(row["value"]):
            assert row["note"] == "", row


def test_an_estimate_bounded_by_the_layer_shape_is_undefined():
    """An LSTM reading MNIST-1D one value per step: its first layer's weight-based estimates can be at most its
    few incoming weights per unit, so they are NaN with that reason; the activations' (32 x 32) stays."""
    from lmcot.dimension import model_dimensions
    from lmcot.models import build_model

    torch.manual_seed(0)
    model = build_model("lstm", (40,), 10, 32, 1)
    rows = {row["estimator"]: row for row in model_dimensions(model, torch.randn(300, 40), repeats=1)}
    for estimator in ("pr_weights", "pr_cov", "pca90", "two_nn", "mle", "wasserstein_rate"):
        assert np.isnan(rows[estimator]["value"]), estimator
        assert "undefined: at most" in rows[estimator]["note"] and "min_ambient = 8" in rows[estimator]["note"]
        assert rows[estimator]["note"].endswith("it would measure the layer's shape")
    assert np.isfinite(rows["pr_activations"]["value"]) and rows["pr_activations"]["note"] == ""
    # the same layer with the bound lowered below its shape is estimated
    lowered = {r["estimator"]: r for r in model_dimensions(model, torch.randn(300, 40), repeats=1, min_ambient=1)}
    assert np.isfinite(lowered["pr_weights"]["value"]) and lowered["pr_weights"]["value"] <= 4 + 1e-9


@pytest.mark.parametrize("width", [12, 40])
def test_model_dimensions_apply_each_estimator_to_the_layers_neurons(width):
    """Each row is its estimator applied to the layer's neurons as points (their incoming weights), to
    ``W^T W``, ``W Sigma W^T`` or the activations' second moment, with the neighbour count of MLE at
    ``min(20, distinct neurons - 1)`` and the Wasserstein rate at the given repeats and seed."""
    from lmcot.dimension import model_dimensions
    from lmcot.models import build_model
    from lmcot.permutation import identity_permutations, incoming_weights

    torch.manual_seed(0)
    model = build_model("mlp", (12,), 3, width, 1).eval()
    x = torch.randn(150, 12)
    rows = model_dimensions(model, x, repeats=2, seed=5, min_ambient=1)
    got = {row["estimator"]: row["value"] for row in rows}
    assert {row["layer"] for row in rows} == {"P0"} and len(rows) == len(got) == 9
    state, spec = model.state_dict(), model.permutation_spec()
    w = incoming_weights(spec, "P0", state, identity_permutations(spec, state), solved=[]).double()
    assert w.shape == (width, 12)
    z = x.double()  # the first layer's inputs
    with torch.no_grad():
        h = model.hidden_activations(x)["P0"].double()
    points = w.numpy()
    expected = {
        "pr_weights": participation_ratio(w.T @ w),
        "pr_cov": participation_ratio(w @ (z.T @ z / len(x)) @ w.T),
        "pr_activations": participation_ratio(h.T @ h / len(x)),
        **{f"pca{round(f * 100)}": v for f, v in pca_components(points).items()},
        "two_nn": two_nn_dimension(points),
        "mle": mle_dimension(points, k=min(20, width - 1)),
        "wasserstein_rate": (
            wasserstein_rate_dimension(points, repeats=2, seed=5)["dimension"] if width >= 32 else float("nan")
        ),
    }
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5, nan_ok=True), key


@pytest.mark.parametrize("shape", [(2, 3), (3,), (2, 2, 2)])
def test_participation_ratio_needs_a_square_matrix(shape):
    with pytest.raises(ValueError, match=rf"square matrix, got shape \({shape[0]},"):
        participation_ratio(np.ones(shape))


def test_default_sizes_by_hand():
    """2000 points: 16 * 62.5^(k/5) for k = 0..5 (16 to half the cloud), rounded; 11 points: 2 to 5 (a quarter to a
    half of the cloud, whole numbers); 4 points, the fewest: 1 and 2."""
    assert default_sizes(2000) == [16, 37, 84, 191, 437, 1000]
    assert default_sizes(11) == [2, 3, 4, 5]
    assert default_sizes(4) == [1, 2]
    # 58 points: from 29 // 2 = 14 (a whole number of points) to 29, ratio (29 / 14)^(1/5) = 1.1568
    assert default_sizes(58) == [14, 16, 19, 22, 25, 29]
    with pytest.raises(ValueError, match="need at least 4 points for a grid of subsample sizes, got 3"):
        default_sizes(3)


def test_one_point_subsamples_and_the_refusals():
    a, b = disjoint_subsamples(2, 1, np.random.default_rng(0))
    assert sorted([*a, *b]) == [0, 1]
    for n_points, n in ((5, 0), (5, 3)):
        with pytest.raises(ValueError, match=f"cannot draw two disjoint subsamples of {n} from {n_points} points"):
            disjoint_subsamples(n_points, n, np.random.default_rng(0))


def test_pca_centres_each_coordinate():
    """Points on a line through (5, 2, 0) along (1, 0, 3): one component after centring each coordinate
    (centring by the mean of all coordinates would leave the offset, a second direction)."""
    t = np.linspace(-1, 1, 9)
    points = np.stack([5 + t, 2 + 0 * t, 3 * t], axis=1)
    assert pca_components(points) == {0.9: 1, 0.95: 1, 0.99: 1}
    for fraction in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=rf"fractions must lie in \(0, 1\], got {fraction}"):
            pca_components(points, (0.5, fraction))


def test_wasserstein_rate_bounds():
    """32 points are the fewest; sizes need two distinct values in [1, half the cloud], however they are listed."""
    points = np.random.default_rng(0).normal(size=(32, 3))
    assert wasserstein_rate_dimension(points, sizes=[16, 1, 1], repeats=1)["sizes"] == [1, 16]
    assert wasserstein_rate_dimension(points, sizes=[1, 2], repeats=1)["sizes"] == [1, 2]
    with pytest.raises(ValueError, match="needs at least 32 points, got 31"):
        wasserstein_rate_dimension(points[:31])
    with pytest.raises(ValueError, match=r"need at least 2 distinct subsample sizes to fit a slope, got \[5\]"):
        wasserstein_rate_dimension(points, sizes=[5, 5])
    for sizes in ([0, 2], [17, 1, 2]):
        with pytest.raises(ValueError, match=r"subsample sizes must lie in \[1, 16\], got \["):
            wasserstein_rate_dimension(points, sizes=sizes, repeats=1)


def test_an_estimate_at_the_bound_is_kept_and_a_failed_fit_says_so():
    """Four neurons at the corners of a square (2 inputs each): TwoNN sees only ties (inf, with the reason), and
    min_ambient = 2, the layer's own bound, still estimates its weights' participation ratio: W^T W = [[2, 1], [1, 2]],
    eigenvalues 3 and 1, (3 + 1)^2 / (9 + 1) = 1.6."""
    from lmcot.dimension import model_dimensions
    from lmcot.models import build_model

    model = build_model("mlp", (2,), 2, 4, 1).eval()
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    rows = {row["estimator"]: row for row in model_dimensions(model, torch.randn(50, 2), repeats=1, min_ambient=2)}
    assert rows["pr_weights"]["value"] == pytest.approx(1.6) and rows["pr_weights"]["note"] == ""
    assert rows["two_nn"]["value"] == float("inf")
    assert rows["two_nn"]["note"] == "not finite: the estimator's fit failed (e.g. distances that do not shrink)"


def test_the_rate_fit_is_the_least_squares_line_of_its_data(rate_results):
    """The slope is the first-degree least-squares fit of log W on log n, computed here from the returned data."""
    for result in rate_results.values():
        line = np.polyfit(np.log(result["sizes"]), np.log(result["distances"]), 1)
        assert result["slope"] == float(line[0])
        assert result["dimension"] == -1.0 / result["slope"]


def test_the_documented_defaults_are_the_ones_used():
    """mle's k = 20 and the rate's repeats = 5, seed = 0: the default call equals the explicit one, and the next
    value differs (so the defaults are not dead)."""
    points = cube(240, 3, 6, seed=1)
    assert mle_dimension(points) == mle_dimension(points, k=20) != mle_dimension(points, k=21)
    default = wasserstein_rate_dimension(points, sizes=[16, 32, 64])
    assert default == wasserstein_rate_dimension(points, sizes=[16, 32, 64], repeats=5, seed=0)
    assert default["distances"] != wasserstein_rate_dimension(points, sizes=[16, 32, 64], repeats=6)["distances"]
    assert default["distances"] != wasserstein_rate_dimension(points, sizes=[16, 32, 64], seed=1)["distances"]


@pytest.mark.parametrize(("distance", "slope"), [(lambda n: 1.0, 0.0), (lambda n: n**0.5, 0.5)])
def test_a_rate_that_does_not_shrink_gives_an_infinite_dimension(monkeypatch, distance, slope):
    """Distances constant in ``n`` (slope exactly 0) or growing as ``sqrt(n)`` (slope 1/2): no finite ``d`` has
    ``W ~ n^(-1/d)``, so the dimension is infinite, not ``-1 / slope``."""
    import lmcot.dimension

    monkeypatch.setattr(lmcot.dimension, "wasserstein_distance", lambda a, b: distance(len(a)))
    result = wasserstein_rate_dimension(cube(200, 2, 5, seed=4), sizes=[16, 32, 64], repeats=1)
    assert result["slope"] == pytest.approx(slope, abs=1e-12)
    assert result["dimension"] == math.inf


def test_activation_second_moments_pass_their_batch_size_on():
    """The batch size bounds memory: the model sees batches of at most that many samples."""
    from lmcot.dimension import activation_second_moments

    seen = []

    class Recorder(torch.nn.Module):
        def hidden_activations(self, x):
            seen.append(len(x))
            return {"P0": x}

    x = torch.arange(20.0).reshape(10, 2)
    moments = activation_second_moments(Recorder(), x, batch_size=4)
    assert seen == [4, 4, 2]
    assert torch.allclose(moments["P0"], (x.T @ x).double() / 10)


def test_model_dimensions_default_to_three_repeats_from_seed_zero():
    """The documented defaults; the Wasserstein rate of 40 neurons depends on both (other values give other
    estimates), so a changed default shows."""
    from lmcot.dimension import model_dimensions
    from lmcot.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", (12,), 3, 40, 1).eval()
    x = torch.randn(150, 12)

    def rate(**options):
        rows = model_dimensions(model, x, min_ambient=1, **options)
        return next(r["value"] for r in rows if r["estimator"] == "wasserstein_rate")

    default = rate()
    assert default == rate(repeats=3, seed=0)
    assert default != rate(repeats=4, seed=0) and default != rate(repeats=3, seed=1)
