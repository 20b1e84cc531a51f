"""Exact expected values for the science core, each computed here independently of the code under test
(by hand, or by brute force over every permutation of a width-4 network), so that a plausible wrong
formula fails."""

import itertools
import math

import numpy as np
import pytest
import torch

from lmcot.align.methods import align
from lmcot.barrier import barrier_summary
from lmcot.dimension import mle_dimension, two_nn_dimension
from lmcot.evaluation import output_statistics
from lmcot.models import build_model
from lmcot.permutation import apply_permutations, chain_spec

WIDTH = 4
PERMS = [torch.tensor(p) for p in itertools.permutations(range(WIDTH))]


# --- barriers ------------------------------------------------------------------------------------------------


def test_a_curve_below_its_chord_has_no_barrier():
    """Loss 1 -> 3 on the uneven grid 0, .2, .5, .9, 1, every inner point below the chord 1 + 2a: the barrier
    is the largest ``value - chord``, here 0 at the endpoints (a max of absolute gaps would give 0.5)."""
    summary = barrier_summary([0, 0.2, 0.5, 0.9, 1], [1.0, 1.2, 1.5, 2.5, 3.0])
    assert summary["barrier"] == 0.0
    assert summary["midpoint"] == 1.5
    assert summary["max_minus_endpoint_mean"] == pytest.approx(3.0 - 2.0)
    assert (summary["value_a"], summary["value_b"]) == (1.0, 3.0)


def test_a_curve_crossing_its_chord_on_an_uneven_grid():
    """Chord 1 + 2a at a = .2, .5, .9 is 1.4, 2, 2.8; values 1.0, 1.5, 2.9: gaps -0.4, -0.5, +0.1."""
    summary = barrier_summary([0, 0.2, 0.5, 0.9, 1], [1.0, 1.0, 1.5, 2.9, 3.0])
    assert summary["barrier"] == pytest.approx(0.1)
    assert summary["midpoint"] == 1.5  # the value at a = 0.5, not at the middle index of an uneven grid


def test_the_midpoint_is_read_at_one_half_on_a_grid_crowded_at_one_end():
    alphas = [0, 0.05, 0.1, 0.15, 0.5, 1]  # the middle index holds a = 0.15
    summary = barrier_summary(alphas, [0.0, 0.1, 0.2, 0.3, 0.7, 0.0])
    assert summary["midpoint"] == 0.7
    assert summary["barrier"] == pytest.approx(0.7)


# --- the permutation convention -------------------------------------------------------------------------------


def test_a_permutation_puts_the_rows_it_names_in_order():
    """``perm = [2, 0, 1]`` puts B's rows 2, 0, 1 in positions 0, 1, 2, and B's columns of the next layer
    likewise (an inverse applied instead would give rows 1, 2, 0)."""
    spec = chain_spec(["first", "second"])
    first = torch.tensor([[10.0], [11.0], [12.0]])
    second = torch.tensor([[20.0, 21.0, 22.0]])
    state = {"first.weight": first, "first.bias": torch.tensor([0.0, 1.0, 2.0]), "second.weight": second}
    state["second.bias"] = torch.tensor([5.0])
    out = apply_permutations(spec, {"P0": torch.tensor([2, 0, 1])}, state)
    assert out["first.weight"].flatten().tolist() == [12.0, 10.0, 11.0]
    assert out["first.bias"].tolist() == [2.0, 0.0, 1.0]
    assert out["second.weight"].flatten().tolist() == [22.0, 20.0, 21.0]
    assert out["second.bias"].tolist() == [5.0]


# --- weight matching against brute force ----------------------------------------------------------------------


def pair_of_mlps(depth, seed=0, features=5, classes=3):
    torch.manual_seed(seed)
    return [build_model("mlp", (features,), classes, WIDTH, depth).eval() for _ in range(2)]


def rebasin_objective(state_a, state_b, perms, depth, with_outgoing=True):
    """Git Re-Basin's objective written out: sum over layers of <W_A, P_l W_B P_{l-1}^T> and <b_A, P_l b_B>
    (the classifier's columns permuted by the last P); ``with_outgoing=False`` drops every term of the
    layer after, the plausible mistake."""
    total = 0.0
    previous = torch.arange(5)
    for layer in range(depth + 1):
        p = perms[layer] if layer < depth else torch.arange(3)
        w_b = state_b[f"layers.{layer}.weight"][p][:, previous]
        b_b = state_b[f"layers.{layer}.bias"][p]
        if with_outgoing or layer < depth:
            total += float(
                (state_a[f"layers.{layer}.weight"] * w_b).sum() + (state_a[f"layers.{layer}.bias"] * b_b).sum()
            )
        previous = p
    return total


def test_weight_matching_of_one_hidden_layer_is_the_brute_force_optimum():
    """One permutation: its LAP is exact, so weight matching must return the best of all 24 permutations of
    the full objective, which here differs from the best of the incoming weights alone."""
    model_a, model_b = pair_of_mlps(depth=1, seed=0)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    values = [rebasin_objective(state_a, state_b, [p], 1) for p in PERMS]
    best = PERMS[int(np.argmax(values))]
    incoming_only = PERMS[int(np.argmax([rebasin_objective(state_a, state_b, [p], 1, False) for p in PERMS]))]
    assert not torch.equal(best, incoming_only)  # the test can tell the two objectives apart
    assert torch.equal(align("weight_matching", model_a, model_b)["P0"], best)


def test_weight_matching_of_two_hidden_layers_cannot_be_improved_by_changing_one_permutation():
    """Coordinate descent with exact LAPs ends where no single permutation can be changed for the better: checked
    against all 24 alternatives of each, with the objective written out here. On this pair it is also the
    brute-force optimum over all 576 pairs of permutations."""
    model_a, model_b = pair_of_mlps(depth=2, seed=1)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    perms = align("weight_matching", model_a, model_b)
    found = rebasin_objective(state_a, state_b, [perms["P0"], perms["P1"]], 2)
    for layer in range(2):
        for p in PERMS:
            changed = [perms["P0"], perms["P1"]]
            changed[layer] = p
            assert rebasin_objective(state_a, state_b, changed, 2) <= found + 1e-5
    best = max(rebasin_objective(state_a, state_b, [p0, p1], 2) for p0 in PERMS for p1 in PERMS)
    assert found == pytest.approx(best, abs=1e-5)


def batchnorm_network(seed: int) -> torch.nn.Module:
    """A width-4 ResNet with BatchNorm whose running statistics are far larger than its weights (means of
    scale 30, variances up to 900), as after training on unnormalised inputs."""
    torch.manual_seed(seed)
    model = build_model("resnet_bn", (1, 8, 8), 10, 4, 1)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(30 * torch.randn_like(buffer))
            elif name.endswith("running_var"):
                buffer.copy_(1 + 900 * torch.rand_like(buffer))
    return model.eval()


def test_weight_matching_of_a_batchnorm_network_scores_its_parameters_only():
    """Git Re-Basin's objective sums <theta_A, pi(theta_B)> over the parameters; BatchNorm's running statistics
    are moved by the permutations but take no part. Over all 576 pairs of permutations of this network
    (residual stream and block), weight matching returns the best of that objective, which differs from the
    best with the statistics counted in."""
    model_a, model_b = batchnorm_network(2), batchnorm_network(3)
    spec, state_a, state_b = model_a.permutation_spec(), model_a.state_dict(), model_b.state_dict()
    parameters = [name for name, _ in model_a.named_parameters()]
    statistics = [name for name in state_a if "running" in name]

    def objective(perms, names):
        permuted = apply_permutations(spec, perms, state_b)
        return float(sum((state_a[k].double() * permuted[k].double()).sum() for k in names))

    pairs = [dict(zip(spec.names, (p, q), strict=True)) for p in PERMS for q in PERMS]
    best = max(pairs, key=lambda perms: objective(perms, parameters))
    with_statistics = max(pairs, key=lambda perms: objective(perms, parameters + statistics))
    assert any(not torch.equal(best[n], with_statistics[n]) for n in spec.names)  # the objectives differ here
    found = align("weight_matching", model_a, model_b)
    assert all(torch.equal(found[n], best[n]) for n in spec.names)


# --- covariance-aware matching against brute force ------------------------------------------------------------


def expected_output_gap(w_a, w_b, h):
    """``E|W_A h - W_B h|^2`` over the rows of ``h`` (samples), float64."""
    return float(((h @ w_a.T - h @ w_b.T) ** 2).sum(1).mean())


def test_covariance_aware_matching_minimises_the_expected_output_gap_on_model_as_inputs():
    """Layer by layer, ``min_P E|W_A h - P W_B h|^2`` with ``h`` model A's inputs to the layer (the data, then
    A's hidden activations), B's columns aligned by the layer before: brute force over 24 permutations per
    layer. On this pair B's activations, or A's centred, would each give another answer."""
    model_a, model_b = pair_of_mlps(depth=2, seed=2)
    x = torch.randn(400, 5, generator=torch.Generator().manual_seed(0)) + 0.5
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    h_a = torch.relu(x @ state_a["layers.0.weight"].T + state_a["layers.0.bias"]).double()
    h_b = torch.relu(x @ state_b["layers.0.weight"].T + state_b["layers.0.bias"]).double()
    w_a0, w_b0 = state_a["layers.0.weight"].double(), state_b["layers.0.weight"].double()
    p0 = min(PERMS, key=lambda p: expected_output_gap(w_a0, w_b0[p], x.double()))
    w_a1 = state_a["layers.1.weight"].double()
    w_b1 = state_b["layers.1.weight"].double()[:, p0]  # B's inputs aligned by P0

    def best_for(h):
        return min(PERMS, key=lambda p: expected_output_gap(w_a1, w_b1[p], h))

    p1 = best_for(h_a)
    assert not torch.equal(p1, best_for(h_b)) and not torch.equal(p1, best_for(h_a - h_a.mean(0)))
    perms = align("cov_weight_matching", model_a, model_b, x)
    assert torch.equal(perms["P0"], p0)
    assert torch.equal(perms["P1"], p1)


# --- dimensions -----------------------------------------------------------------------------------------------


def test_two_nn_on_three_points_by_hand():
    """Points 0, 1, 3 on a line: second / first neighbour distances 3/1, 2/1, 3/2, so
    d = (N - 1) / sum(log mu) = 2 / log 9."""
    assert two_nn_dimension(np.array([[0.0], [1.0], [3.0]])) == pytest.approx(2 / math.log(9))


# --- fusion ---------------------------------------------------------------------------------------------------


def test_a_two_model_barycentre_by_hand():
    """Two MLPs (2 inputs, 2 hidden units, 2 classes) whose hidden units are the same up to a swap and small
    changes. Started from model A, the exact barycentre matches A's unit 0 with B's unit 1 and A's unit 1 with
    B's unit 0 and averages them; the classifier averages A's columns with B's columns in that order."""
    from lmcot.fusion import wasserstein_barycenter

    def mlp(w0, b0, w1, b1):
        model = build_model("mlp", (2,), 2, 2, 1)
        model.load_state_dict(
            {
                "layers.0.weight": torch.tensor(w0),
                "layers.0.bias": torch.tensor(b0),
                "layers.1.weight": torch.tensor(w1),
                "layers.1.bias": torch.tensor(b1),
            }  # fmt: skip
        )
        return model

    a = mlp([[1.0, 0.0], [0.0, 1.0]], [0.1, 0.2], [[1.0, 2.0], [3.0, 4.0]], [0.0, 0.0])
    b = mlp([[0.0, 1.2], [0.8, 0.0]], [0.3, 0.1], [[2.2, 0.8], [4.2, 2.8]], [0.2, 0.4])
    fusion = wasserstein_barycenter([a, b], build_model("mlp", (2,), 2, 2, 1), solver="emd", start=0)
    expected = {
        "layers.0.weight": [[0.9, 0.0], [0.0, 1.1]],
        "layers.0.bias": [0.1, 0.25],
        "layers.1.weight": [[0.9, 2.1], [2.9, 4.1]],
        "layers.1.bias": [0.1, 0.2],
    }
    for name, value in expected.items():
        torch.testing.assert_close(fusion.state[name].double(), torch.tensor(value, dtype=torch.float64), msg=name)


def test_two_nn_on_a_tie_and_on_the_fewest_points():
    """The corners of a square: every point's two neighbours tie (mu = 1), so no rate can be read: inf.
    Points 0, 0, 1, 3 on a line: the duplicate is dropped, leaving 0 (mu = 3 / 1), 1 (mu = 2 / 1) and 3
    (mu = 3 / 2): d = (3 - 1) / log(3 * 2 * 1.5) = 2 / log 9. Points 0 and 1e-200 are distinct, but their
    distance underflows to 0: with 1, only one point has a positive first distance, too few for a rate; with
    1 and 3, two: 1 (mu = 1 / 1) and 3 (mu = 3 / 2) give d = 1 / log 1.5."""
    square = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert two_nn_dimension(square) == math.inf
    assert two_nn_dimension(np.array([[0.0], [0.0], [1.0], [3.0]])) == pytest.approx(2 / math.log(9))
    with pytest.raises(ValueError, match="two_nn_dimension: fewer than 2 points with a positive nearest-neighbour"):
        two_nn_dimension(np.array([[0.0], [1e-200], [1.0]]))
    assert two_nn_dimension(np.array([[0.0], [1e-200], [1.0], [3.0]])) == pytest.approx(1 / math.log(1.5))


def test_output_statistics_pooled_over_batches_by_hand():
    """A Conv2d whose one output channel is its input: per-channel mean and population std over samples and positions,
    pooled over batches of 3, equal numpy's over the whole set."""
    conv = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    x = torch.arange(40.0).reshape(10, 1, 2, 2) ** 1.5
    ((mean, std),) = output_statistics(torch.nn.Sequential(conv), [conv], x, batch_size=3)
    values = x.double().numpy().ravel()
    assert mean.tolist() == pytest.approx([values.mean()], rel=1e-6)
    assert std.tolist() == pytest.approx([values.std()], rel=1e-6)


def test_mle_with_two_neighbours_by_hand():
    """k = 2 on points 0, 1, 3: log(T2 / T1) is log 3, log 2 and log 1.5, whose mean is log 9 / 3: d = 3 / log 9.
    Ties everywhere (a square's corners) give inf; k = 1 has no ratio to take."""
    assert mle_dimension(np.array([[0.0], [1.0], [3.0]]), k=2) == pytest.approx(3 / math.log(9))
    assert mle_dimension(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), k=2) == math.inf
    with pytest.raises(ValueError, match="mle_dimension needs k >= 2, got 1"):
        mle_dimension(np.zeros((5, 2)), k=1)
    with pytest.raises(ValueError, match="need at least 3 distinct points, got 2"):
        mle_dimension(np.array([[0.0], [1.0], [1.0]]), k=2)
    with pytest.raises(ValueError, match=r"points must be a 2-d array \(n_points, n_features\), got shape \(3,\)"):
        mle_dimension(np.array([0.0, 1.0, 3.0]), k=2)


# --- activation statistics ----------------------------------------------------------------------------------------


class FixedActivations(torch.nn.Module):
    """A stand-in model whose hidden activations are a fixed linear map of its inputs; records batch sizes."""

    def __init__(self, weight):
        super().__init__()
        self.weight, self.batches = torch.as_tensor(weight, dtype=torch.float32), []

    def hidden_activations(self, x):
        self.batches.append(len(x))
        return {"P0": x @ self.weight}


def test_activation_statistics_pooled_over_uneven_batches_by_hand():
    """Population cross-covariance and standard deviations of 10 samples read in batches of 3, 3, 3 and 1,
    against numpy on the whole set at once."""
    from lmcot.align.activations import activation_statistics

    x = torch.tensor(np.random.default_rng(0).normal(size=(10, 3)) + [1.0, -2.0, 0.5], dtype=torch.float32)
    model_a = FixedActivations([[1.0, 0.0], [2.0, 1.0], [0.0, -1.0]])
    model_b = FixedActivations([[0.5, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 1.0]])
    ((name, (cov, std_a, std_b)),) = activation_statistics(model_a, model_b, x, batch_size=3).items()
    assert name == "P0" and model_a.batches == model_b.batches == [3, 3, 3, 1]
    a, b = ((x.double() @ m.weight.double()).numpy() for m in (model_a, model_b))
    expected = (a - a.mean(0)).T @ (b - b.mean(0)) / 10
    assert cov.shape == (2, 3) and cov.dtype == torch.float64
    np.testing.assert_allclose(cov.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std_a.numpy(), a.std(0), rtol=1e-5)
    np.testing.assert_allclose(std_b.numpy(), b.std(0), rtol=1e-5)


@pytest.mark.parametrize("method", ["activation_matching", "activation_covariance"])
def test_activation_methods_pass_their_batch_size_on(method, monkeypatch):
    from lmcot.align import activations

    asked = []
    stats = {"P0": (torch.eye(2, dtype=torch.float64), torch.ones(2).double(), torch.ones(2).double())}
    monkeypatch.setattr(
        activations, "activation_statistics", lambda a, b, x, batch_size: asked.append(batch_size) or stats
    )
    model = build_model("mlp", (3,), 2, 2, 1)
    getattr(activations, method)(model, model, torch.zeros(7, 3), batch_size=4)
    getattr(activations, method)(model, model, torch.zeros(7, 3))
    assert asked == [4, 4096]


def test_activation_matching_scores_correlation_not_covariance(monkeypatch):
    """Units of very different scales: correlation ``cov / (std_a std_b)`` keeps the identity (0.11 against 0.009),
    where covariance times the scales would swap the two units (11 against 90)."""
    from lmcot.align import activations

    cov = torch.tensor([[1.0, 0.0], [0.9, 0.1]], dtype=torch.float64)
    stats = {"P0": (cov, torch.tensor([1.0, 10.0]).double(), torch.tensor([10.0, 1.0]).double())}
    monkeypatch.setattr(activations, "activation_statistics", lambda *args: stats)
    model = build_model("mlp", (3,), 2, 2, 1)
    assert activations.activation_matching(model, model, torch.zeros(1, 3))["P0"].tolist() == [0, 1]


def test_second_moments_over_uneven_batches_by_hand():
    """``E[f f^T]`` uncentred over 5 samples read in batches of 2, 2 and 1: rows (1, 0), (0, 2), (1, 1), (2, 0),
    (0, 1) give sums 1 + 1 + 4 = 6, 1 * 1 = 1 and 4 + 1 + 1 = 6, divided by 5."""
    from lmcot.moments import input_second_moments, second_moments

    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [2.0, 0.0], [0.0, 1.0]])
    batches = []

    def features(batch):
        batches.append(len(batch))
        return {"P0": batch}

    moments = second_moments(features, x, batch_size=2)
    assert batches == [2, 2, 1] and moments["P0"].dtype == torch.float64
    assert moments["P0"].tolist() == [[6 / 5, 1 / 5], [1 / 5, 6 / 5]]
    batches.clear()
    sigma = input_second_moments(None, x, batch_size=2, features=features)
    assert batches == [2, 2, 1] and sigma["P0"].dtype == torch.float32
    assert torch.allclose(sigma["P0"], torch.tensor([[1.2, 0.2], [0.2, 1.2]]))
