"""Dimension estimates for point clouds, such as the hidden units of one layer.

Ferbach et al. (AISTATS 2024) view the ``m`` hidden units of a wide layer as ``m`` samples from a weight distribution.
The empirical measures of two such networks get closer in Wasserstein distance at a rate of about ``m^(-1/d)``, where
``d`` is the dimension of the distribution's support, so ``d`` controls how wide a layer must be before two networks
can be aligned. This module gives several estimates of ``d``:

- ``participation_ratio``: the "approximate dimension" of a layer, ``tr(S)^2 / tr(S^2)`` for a PSD matrix ``S``;
- ``pca_components``: the number of principal components that explain a fraction of the variance (linear dimension);
- ``two_nn_dimension``: TwoNN (Facco et al. 2017), from the first two nearest-neighbour distances (intrinsic);
- ``mle_dimension``: Levina and Bickel (2004) with ``k`` neighbours, MacKay-Ghahramani average (intrinsic);
- ``wasserstein_rate_dimension``: the rate itself, from W2 distances between disjoint subsamples of growing size.

Points are ``(n_points, n_features)`` arrays (one row per hidden unit: its incoming weights, for instance). Numpy
arrays and torch tensors (any device) are accepted; all computations are in float64 numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.neighbors import NearestNeighbors

MIN_SUBSAMPLE = 16  # smallest subsample size of the default grid of wasserstein_rate_dimension


def _as_array(x) -> np.ndarray:
    """``x`` as a float64 numpy array; torch tensors are detached and moved to the CPU first."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_points(points) -> np.ndarray:
    """``points`` as a ``(n_points, n_features)`` float64 array; raises ValueError for any other shape."""
    x = _as_array(points)
    if x.ndim != 2:
        raise ValueError(f"points must be a 2-d array (n_points, n_features), got shape {x.shape}")
    return x


def _neighbour_distances(points: np.ndarray, k: int) -> np.ndarray:
    """Distances from each point to its ``k`` nearest other points, ``(n_points', k)``, sorted by distance.

    Duplicate points (e.g. duplicate neurons) are removed first, since a zero distance makes every ratio of distances
    undefined; rows whose first distance is still zero (distinct points closer than floating-point precision) are
    dropped as well, so every returned distance is positive. Raises ValueError if fewer than ``k + 1`` distinct points
    remain.
    """
    unique = np.unique(points, axis=0)
    if len(unique) < k + 1:
        raise ValueError(f"need at least {k + 1} distinct points, got {len(unique)}")
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(unique).kneighbors(unique)
    distances = distances[:, 1:]  # column 0 is the point itself
    return distances[distances[:, 0] > 0]


def participation_ratio(matrix) -> float:
    """Participation ratio ``tr(S)^2 / tr(S^2)`` of a symmetric PSD matrix ``S`` of shape ``(k, k)``.

    With eigenvalues ``l_i``, this is ``(sum l_i)^2 / sum l_i^2``: ``k`` when all eigenvalues are equal, 1 for a
    rank-1 matrix, and in between otherwise. It is invariant to scaling ``S`` and to orthogonal changes of basis. The
    zero matrix returns 0.0 (no direction carries any mass). Symmetry and positivity are assumed, not checked. Raises
    ValueError if ``matrix`` is not square.
    """
    s = _as_array(matrix)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"participation_ratio needs a square matrix, got shape {s.shape}")
    trace_of_square = float(np.sum(s * s.T))  # tr(S S) without forming the product
    if trace_of_square == 0.0:
        return 0.0
    return float(np.trace(s)) ** 2 / trace_of_square


def pca_components(points, fractions: Sequence[float] = (0.9, 0.95, 0.99)) -> dict[float, int]:
    """Number of principal components needed to explain each fraction of the variance of the centred cloud.

    ``points`` is ``(n_points, n_features)``; each fraction must lie in (0, 1]. Returns ``{fraction: n_components}``,
    with ``n_components`` the smallest ``c`` such that the ``c`` leading components hold at least that fraction of the
    total variance. A cloud with zero variance (all points equal) needs 0 components for every fraction.
    """
    x = _as_points(points)
    for fraction in fractions:
        if not 0 < fraction <= 1:
            raise ValueError(f"fractions must lie in (0, 1], got {fraction}")
    singular_values = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    variances = singular_values**2  # proportional to the variance along each principal axis, in decreasing order
    total = variances.sum()
    if total == 0:
        return {float(f): 0 for f in fractions}
    explained = np.cumsum(variances) / total
    tolerance = 1e-12  # so that fraction 1.0 is reached despite rounding in the cumulative sum
    return {float(f): int(np.argmax(explained >= f - tolerance)) + 1 for f in fractions}


def two_nn_dimension(points) -> float:
    """TwoNN intrinsic dimension (Facco et al. 2017), maximum-likelihood form.

    For each point, ``mu = r2 / r1`` is the ratio of its second to its first nearest-neighbour distance. If the density
    is locally uniform on a ``d``-dimensional set, ``mu`` follows a Pareto law ``P(mu > t) = t^(-d)``, whose
    (unbiased) maximum-likelihood estimate is ``d = (N - 1) / sum(log mu)``. We use this form rather than Facco et al.'s
    linear fit of ``-log(1 - F(mu))`` against ``log(mu)``: it needs no choice of points to discard and is as accurate on
    our test sets. Duplicate points are removed first (see ``_neighbour_distances``). Returns ``inf`` if every ``mu``
    is 1 (all first and second neighbours tied, as on a regular grid). Needs at least 3 distinct points.
    """
    distances = _neighbour_distances(_as_points(points), k=2)
    if len(distances) < 2:
        raise ValueError("two_nn_dimension: fewer than 2 points with a positive nearest-neighbour distance")
    log_mu = np.log(distances[:, 1] / distances[:, 0])
    total = float(log_mu.sum())
    return (len(log_mu) - 1) / total if total > 0 else float("inf")


def mle_dimension(points, k: int = 20) -> float:
    """Levina-Bickel (2004) maximum-likelihood intrinsic dimension with ``k`` neighbours, MacKay-Ghahramani average.

    For a point with neighbour distances ``T_1 <= ... <= T_k``, the per-point estimate is ``m = 1 / a`` with
    ``a = sum_{j<k} log(T_k / T_j) / (k - 1)``. Levina and Bickel average the ``m`` over points; following MacKay and
    Ghahramani (2005) we average the inverses ``a`` instead and invert the mean, ``d = 1 / mean(a)``, which is less
    biased (``a`` is an unbiased estimate of ``1 / d`` under a locally uniform density). Duplicate points are removed
    first (see ``_neighbour_distances``). Needs ``k >= 2`` and at least ``k + 1`` distinct points.
    """
    if k < 2:
        raise ValueError(f"mle_dimension needs k >= 2, got {k}")
    distances = _neighbour_distances(_as_points(points), k=k)
    inverse_estimates = np.log(distances[:, -1:] / distances[:, :-1]).sum(axis=1) / (k - 1)
    mean_inverse = float(inverse_estimates.mean())
    return 1.0 / mean_inverse if mean_inverse > 0 else float("inf")


def disjoint_subsamples(n_points: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random sets of ``n`` indices into ``range(n_points)``, as integer arrays of shape ``(n,)``.

    Raises ValueError if ``2 * n > n_points``.
    """
    if n < 1 or 2 * n > n_points:
        raise ValueError(f"cannot draw two disjoint subsamples of {n} from {n_points} points")
    chosen = rng.permutation(n_points)[: 2 * n]
    return chosen[:n], chosen[n:]


def wasserstein_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Exact 2-Wasserstein distance between the uniform empirical measures on ``a`` ``(n, p)`` and ``b`` ``(m, p)``.

    Solved as a linear program with POT (``ot.emd2`` on squared Euclidean costs); same units as the points.
    """
    import ot  # POT imports scikit-learn: about a second, which only this function needs

    cost = ot.dist(a, b)  # squared Euclidean by default
    weights_a = np.full(len(a), 1.0 / len(a))
    weights_b = np.full(len(b), 1.0 / len(b))
    squared = float(ot.emd2(weights_a, weights_b, cost, numItermax=10_000_000))
    return float(np.sqrt(max(squared, 0.0)))


def default_sizes(n_points: int, n_sizes: int = 6) -> list[int]:
    """Geometric grid of about ``n_sizes`` subsample sizes from 16 to ``n_points // 2`` (fewer if they round equal).

    When ``n_points // 2 < 32`` the grid starts at ``n_points // 4`` instead, so that it still holds several sizes.
    """
    largest = n_points // 2
    if largest < 2:
        raise ValueError(f"need at least 4 points for a grid of subsample sizes, got {n_points}")
    smallest = min(MIN_SUBSAMPLE, largest // 2)
    grid = np.geomspace(smallest, largest, n_sizes)
    return sorted({int(round(n)) for n in grid})


def wasserstein_rate_dimension(points, sizes: Sequence[int] | None = None, repeats: int = 5, seed: int = 0) -> dict:
    """Dimension from the rate at which two independent samples of the cloud get close in Wasserstein distance.

    For each ``n`` in ``sizes`` (default: ``default_sizes(len(points))``, about 6 sizes from 16 to half the cloud), two
    disjoint random subsamples of ``n`` points are drawn (``disjoint_subsamples``, with
    ``np.random.default_rng(seed)``) and the 2-Wasserstein distance between their uniform empirical measures is
    computed (``wasserstein_distance``); distances are averaged over ``repeats`` draws. The slope of ``log W`` against
    ``log n`` is fitted by least squares; for a ``d``-dimensional support ``W ~ n^(-1/d)``, so ``d = -1 / slope``.

    Caveats: the rate ``n^(-1/d)`` holds for ``d >= 3``. In dimension 1 the distance decays as ``n^(-1/2)`` and in
    dimension 2 as ``sqrt(log(n) / n)``, so sets of dimension 1 or 2 both give estimates of about 2 (1.6 to 2.6 on
    unit cubes of 2000 points). At small ``n`` the estimate is also biased (up to about 10% low for ``d = 3`` or 4
    with a few thousand points).

    Returns ``{"dimension", "slope", "sizes", "distances"}``: ``dimension`` is ``inf`` when ``slope >= 0`` (the
    distances do not shrink) and ``nan`` when some distance is zero (e.g. all points equal); ``sizes`` are ints and
    ``distances`` the mean W2 per size, in the units of the points. Raises ValueError with fewer than 32 points, or if
    ``sizes`` has fewer than 2 distinct values or a size larger than half the cloud.
    """
    x = _as_points(points)
    if len(x) < 2 * MIN_SUBSAMPLE:
        raise ValueError(f"wasserstein_rate_dimension needs at least {2 * MIN_SUBSAMPLE} points, got {len(x)}")
    sizes = default_sizes(len(x)) if sizes is None else sorted({int(n) for n in sizes})
    if len(sizes) < 2:
        raise ValueError(f"need at least 2 distinct subsample sizes to fit a slope, got {sizes}")
    if sizes[0] < 1 or 2 * sizes[-1] > len(x):
        raise ValueError(f"subsample sizes must lie in [1, {len(x) // 2}], got {sizes}")
    rng = np.random.default_rng(seed)
    distances = []
    for n in sizes:
        draws = []
        for _ in range(repeats):
            idx_a, idx_b = disjoint_subsamples(len(x), n, rng)
            draws.append(wasserstein_distance(x[idx_a], x[idx_b]))
        distances.append(float(np.mean(draws)))
    if min(distances) <= 0:
        slope, dimension = math.nan, math.nan
    else:
        slope = float(np.polyfit(np.log(sizes), np.log(distances), 1)[0])
        dimension = -1.0 / slope if slope < 0 else float("inf")
    return {"dimension": dimension, "slope": slope, "sizes": sizes, "distances": distances}


def estimate_all(points) -> dict[str, float]:
    """All point-cloud estimates with their default settings, for one ``(n_points, n_features)`` cloud.

    Returns ``{"pca90", "pca95", "pca99", "two_nn", "mle", "wasserstein_rate"}`` as floats (PCA counts included).
    The participation ratio works on a matrix, not on points: call ``participation_ratio`` separately. Needs at least
    32 points (for the Wasserstein rate) and 21 distinct points (for the MLE with ``k = 20``).
    """
    x = _as_points(points)
    pca = pca_components(x)
    return {
        "pca90": float(pca[0.9]),
        "pca95": float(pca[0.95]),
        "pca99": float(pca[0.99]),
        "two_nn": two_nn_dimension(x),
        "mle": mle_dimension(x),
        "wasserstein_rate": wasserstein_rate_dimension(x)["dimension"],
    }


# --- the layers of a network ----------------------------------------------------------------------


def activation_second_moments(model, inputs, batch_size: int = 4096) -> dict:
    """Per permutation name, ``E[a a^T]`` (uncentred, ``(units, units)``) of the hidden activations."""
    import torch

    from lmcot.moments import second_moments

    with torch.no_grad():
        return second_moments(model.eval().hidden_activations, inputs, batch_size)


def largest_possible(estimator: str, units: int, fan_in: int) -> int:
    """The largest value ``estimator`` can take on a layer of ``units`` neurons with ``fan_in`` incoming weights:
    ``W^T W`` and ``W Sigma W^T`` have rank at most ``min(units, fan_in)``, as do ``units`` points of ``fan_in``
    coordinates; the activations' second moment is ``units x units``."""
    return units if estimator == "pr_activations" else min(units, fan_in)


def model_dimensions(model, inputs, repeats: int = 3, seed: int = 0, min_ambient: int = 8) -> list[dict]:
    """Every dimension estimate of every hidden layer of ``model``: rows ``{layer, estimator, value, note}``.

    Participation ratios of ``S = W^T W`` (``pr_weights``), ``W Sigma W^T`` (``pr_cov``, Sigma the
    uncentred second moment of the layer's inputs on ``inputs``) and ``E[a a^T]`` (``pr_activations``);
    then ``pca90/95/99``, ``two_nn``, ``mle`` and ``wasserstein_rate`` on the layer's neurons as points
    (their incoming weight vectors, ``(units, fan_in)``). An estimate that is not finite (a layer too small for
    the estimator, a failed fit) says why in ``note``; the note is empty otherwise. An estimate that can be at
    most :func:`largest_possible` ``< min_ambient`` (e.g. a recurrent layer reading one value per step,
    a stem convolution over 3 values) would only restate the layer's shape: it is NaN with that reason.
    """
    import torch

    from lmcot.moments import input_second_moments
    from lmcot.permutation import identity_permutations, incoming_weights

    spec = model.permutation_spec()
    state = spec.split({k: v.detach().float() for k, v in model.state_dict().items()})
    unpermuted = identity_permutations(spec, state)
    sigma = input_second_moments(model, inputs)
    activations = activation_second_moments(model, inputs)
    rows = []
    with torch.no_grad():
        for done, name in enumerate(spec.names):
            # the same rows as layer-by-layer matching and layer_inputs() use (see incoming_weights)
            w = incoming_weights(spec, name, state, unpermuted, solved=spec.names[:done]).double()
            estimates, notes = layer_estimates(w, sigma[name].double(), activations[name], repeats, seed, min_ambient)
            rows += [
                {"layer": name, "estimator": key, "value": float(value), "note": notes.get(key, "")}
                for key, value in estimates.items()
            ]
    return rows


def layer_estimates(w, sigma, activations, repeats: int, seed: int, min_ambient: int) -> tuple[dict, dict]:
    """Every estimate of one layer from its incoming weights ``w`` ``(units, fan_in)`` float64, the second
    moment ``sigma`` ``(fan_in, fan_in)`` of its inputs and ``activations`` ``(units, units)`` of its outputs:
    ``(estimates, notes)``, a note saying why an estimate is NaN (see :func:`model_dimensions`)."""
    matrices = {"pr_weights": w.T @ w, "pr_cov": w @ sigma @ w.T, "pr_activations": activations}
    estimates = {key: participation_ratio(m) for key, m in matrices.items()}
    points = w.cpu().numpy()
    estimates.update({f"pca{round(f * 100)}": v for f, v in pca_components(points).items()})
    estimators = {
        "two_nn": two_nn_dimension,
        "mle": lambda p: mle_dimension(p, k=min(20, len(np.unique(p, axis=0)) - 1)),
        "wasserstein_rate": lambda p: wasserstein_rate_dimension(p, repeats=repeats, seed=seed)["dimension"],
    }
    notes = {}
    for key, estimate in estimators.items():
        try:
            estimates[key] = estimate(points)
        except ValueError as err:  # too few (distinct) neurons for this estimator: say so in the row
            estimates[key], notes[key] = math.nan, str(err)
    units, fan_in = points.shape
    for key in estimates:
        bound = largest_possible(key, units, fan_in)
        if bound < min_ambient:
            estimates[key] = math.nan
            notes[key] = (
                f"undefined: at most {bound} on a layer of {units} units with {fan_in} incoming weights each, "
                f"fewer than dimension.min_ambient = {min_ambient}; it would measure the layer's shape"
            )
    for key, value in estimates.items():
        if not math.isfinite(value) and key not in notes:
            notes[key] = "not finite: the estimator's fit failed (e.g. distances that do not shrink)"
    return estimates, notes
