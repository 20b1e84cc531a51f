"""Wasserstein-barycentre fusion: exact on copies and permuted copies, valid couplings, any target width,
the recurrent term, and fused models checked against the baselines."""

import copy
import itertools

import numpy as np
import pytest
import torch

from lmcot.align.methods import permuted_copy
from lmcot.evaluation import ensemble_evaluate, evaluate
from lmcot.fusion import (
    Fusion,
    barycenter_permutations,
    fuse,
    one_shot_fusion,
    permutations_from_fusion,
    recurrent_cost,
    vanilla_average,
    wasserstein_barycenter,
)
from lmcot.models import build_model
from lmcot.ot import entropic_log_plan, solve_lap, uniform_plan
from lmcot.permutation import invert_permutations, random_permutations

SHAPE = (1, 8, 8)
ARCHS = ["mlp", "cnn", "resnet_bn", "lstm"]


def make(arch, width=6, depth=2, seed=0):
    torch.manual_seed(seed)
    model = build_model(arch, SHAPE, 10, width, depth)
    model.train()
    with torch.no_grad():
        model(torch.randn(256, *SHAPE))  # BatchNorm statistics
    return model.eval()


def target(arch, width, depth=2):
    return build_model(arch, SHAPE, 10, width, depth).eval()


@pytest.mark.parametrize("solver", ["emd", "sinkhorn"])
@pytest.mark.parametrize("arch", ARCHS)
def test_fusing_copies_returns_the_model(arch, solver):
    model = make(arch)
    fusion = wasserstein_barycenter([model, copy.deepcopy(model), copy.deepcopy(model)], target(arch, 6), solver=solver)
    for key, value in model.state_dict().items():
        assert torch.allclose(fusion.state[key].to(value.dtype), value, atol=1e-4), key


@pytest.mark.parametrize("arch", ARCHS)
def test_fusing_with_a_permuted_copy_keeps_the_function(arch, generator):
    model = make(arch)
    shuffled = permuted_copy(model, random_permutations(model.permutation_spec(), model.state_dict(), generator))
    fused = fuse([model, shuffled], target(arch, 6))
    x = torch.randn(64, *SHAPE)
    assert torch.allclose(fused(x), model(x), atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_barycenter_permutations_recover_a_planted_permutation(arch, generator):
    model = make(arch)
    planted = random_permutations(model.permutation_spec(), model.state_dict(), generator)
    found = barycenter_permutations(model, permuted_copy(model, planted))
    expected = invert_permutations(planted)
    assert all(torch.equal(found[k], expected[k]) for k in expected)


@pytest.mark.parametrize("solver", ["emd", "sinkhorn"])
@pytest.mark.parametrize("width", [3, 6, 11])
@pytest.mark.parametrize("arch", ARCHS)
def test_couplings_have_uniform_marginals_and_any_width_runs(arch, width, solver):
    models = [make(arch, seed=s) for s in range(3)]
    fusion = wasserstein_barycenter(
        models, target(arch, width), solver=solver, epsilon=0.1, start="mean", max_iterations=3
    )  # epsilon 0.1: the marginals hold for any; a smaller one only makes Sinkhorn take longer (40 s at 0.01)
    for couplings in fusion.couplings:
        for name, plan in couplings.items():
            m, n = plan.shape
            assert m == width and n == 6, name
            assert (plan >= 0).all()
            tol = 1e-8  # sinkhorn plans are rounded onto the marginals
            assert torch.allclose(plan.sum(1), torch.full((m,), 1 / m, dtype=plan.dtype), atol=tol), name
            assert torch.allclose(plan.sum(0), torch.full((n,), 1 / n, dtype=plan.dtype), atol=tol), name
    fused = target(arch, width)
    fused.load_state_dict(fusion.state)
    assert fused.permutation_spec().sizes(fused.state_dict()) == {k: width for k in fusion.couplings[0]}
    out = fused(torch.randn(5, *SHAPE))
    assert out.shape == (5, 10) and torch.isfinite(out).all()


def test_a_wider_target_of_copies_computes_the_same_function_when_inputs_are_summed():
    """Splitting each unit in two and halving its outgoing weights is exact: a 2x target of copies must be."""
    model = make("mlp", width=6)
    fused = fuse([model, copy.deepcopy(model)], target("mlp", 12), input_transport="sum")
    x = torch.randn(64, *SHAPE)
    assert torch.allclose(fused(x), model(x), atol=1e-4)


def two_unit_mlp():
    """1 hidden layer of 2 units, 2 inputs, 2 classes, with round numbers."""
    model = build_model("mlp", (2,), 2, 2, 1)
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
        model.layers[0].bias.copy_(torch.tensor([1.0, -1.0]))
        model.layers[1].weight.copy_(torch.tensor([[2.0, 4.0], [-6.0, 0.0]]))
        model.layers[1].bias.copy_(torch.tensor([0.5, -0.5]))
    return model.eval()


@pytest.mark.parametrize("input_transport", ["average", "sum"])
def test_width_changes_by_hand_on_two_units(input_transport):
    """2 units into 1: the unit is the mean of both (incoming [0.5, 1.5], bias 0); its outgoing weights
    are the mean of the two columns (their code: [3, -3]) or their sum ([6, -6]). 2 units into 4: each unit
    is split in two, passing each half its outgoing column (sum) or the whole column (average)."""
    model = two_unit_mlp()
    narrow = wasserstein_barycenter([model], build_model("mlp", (2,), 2, 1, 1), input_transport=input_transport)
    assert narrow.couplings[0]["P0"].tolist() == [[0.5, 0.5]]
    assert narrow.state["layers.0.weight"].tolist() == [[0.5, 1.5]]
    assert narrow.state["layers.0.bias"].tolist() == [0.0]
    factor = 1 if input_transport == "sum" else 0.5
    assert narrow.state["layers.1.weight"].tolist() == [[6.0 * factor], [-6.0 * factor]]
    assert narrow.state["layers.1.bias"].tolist() == [0.5, -0.5]

    wide = wasserstein_barycenter([model], build_model("mlp", (2,), 2, 4, 1), input_transport=input_transport)
    plan = wide.couplings[0]["P0"]
    assert sorted(plan.argmax(1).tolist()) == [0, 0, 1, 1]  # each unit split over two target units
    assert torch.allclose(plan.sum(1), torch.full((4,), 0.25, dtype=plan.dtype))
    share = 0.5 if input_transport == "sum" else 1.0
    for j, k in enumerate(plan.argmax(1).tolist()):
        assert wide.state["layers.0.weight"][j].tolist() == model.layers[0].weight[k].tolist()
        assert wide.state["layers.1.weight"][:, j].tolist() == (share * model.layers[1].weight[:, k]).tolist()


def test_recurrent_cost_by_hand():
    """sum_{j',k'} (H[j,j'] - H_i[k,k'])^2 pi[j',k'] with pi = I / 2 (entries summing to 1): the mean of
    the squared row differences after the permutation, e.g. (j, k) = (0, 1): ((1-3)^2 + (2-4)^2) / 2 = 4."""
    target_self = [torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)]
    recurrent = [torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)]
    plan = torch.eye(2, dtype=torch.float64) / 2
    expected = [[(1 + 4) / 2, (4 + 4) / 2], [(9 + 16) / 2, 0.0]]
    assert recurrent_cost(target_self, recurrent, plan).tolist() == expected
    # a coupling that swaps the units reads H_i's columns swapped: (0, 1): ((1-4)^2 + (2-3)^2) / 2 = 5
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64) / 2
    assert recurrent_cost(target_self, recurrent, swap).tolist() == [[(1 + 4) / 2, (9 + 1) / 2], [(9 + 16) / 2, 1.0]]
    # the old scale (a permutation matrix, entries summing to n) is n times this one
    assert torch.allclose(
        recurrent_cost(target_self, recurrent, plan * 2), 2 * recurrent_cost(target_self, recurrent, plan)
    )


def test_recurrent_cost_sums_over_matrices_and_trailing_axes():
    """Two matrices (an LSTM's gates) and a trailing axis of 2: the cost is the sum of each part's cost, the
    first part being the hand-computed matrix of the test above."""
    first_target = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    first = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    second_target, second = torch.stack([first_target, 2 * first_target], -1), torch.stack([first, first], -1)
    plan = torch.eye(2, dtype=torch.float64) / 2
    by_hand = torch.tensor([[(1 + 4) / 2, (4 + 4) / 2], [(9 + 16) / 2, 0.0]], dtype=torch.float64)
    # second_target[..., 1] = 2 H against the same H_i: (j, k) = (0, 0): ((2-0)^2 + (4-0)^2) / 2 = 10
    doubled = recurrent_cost([2 * first_target], [first], plan)
    assert doubled.tolist() == [[10.0, ((2 - 3) ** 2 + (4 - 4) ** 2) / 2], [(36 + 64) / 2, ((6 - 3) ** 2 + 16) / 2]]
    total = recurrent_cost([first_target, second_target], [first, second], plan)
    assert total.tolist() == (by_hand + by_hand + doubled).tolist()


@pytest.mark.parametrize("start", ["mean", "best"])
def test_a_symmetric_start_gives_the_same_barycentre_for_any_order(start):
    models = [make("mlp", seed=s) for s in range(3)]
    first = wasserstein_barycenter(models, target("mlp", 6), start=start)
    reordered = wasserstein_barycenter([models[2], models[0], models[1]], target("mlp", 6), start=start)
    for key, value in first.state.items():
        assert torch.allclose(reordered.state[key], value, atol=1e-6), key
    assert reordered.cost == pytest.approx(first.cost)
    anchored = [wasserstein_barycenter(order, target("mlp", 6), start="first") for order in (models, models[::-1])]
    assert not torch.allclose(anchored[0].state["layers.0.weight"], anchored[1].state["layers.0.weight"])


def test_the_barycentre_cost_never_rises_and_best_keeps_the_lowest():
    models = [make("mlp", seed=s) for s in range(3)]
    mean = wasserstein_barycenter(models, target("mlp", 6), start="mean", max_iterations=50)
    for name, costs in mean.costs.items():
        assert all(b <= a + 1e-9 for a, b in zip(costs, costs[1:], strict=False)), (name, costs)
    assert max(mean.iterations.values()) > 1  # the mean start moves
    best = wasserstein_barycenter(models, target("mlp", 6), start="best")
    assert set(best.start_costs) == {"mean", "model 0", "model 1", "model 2"}
    assert best.cost == min(best.start_costs.values())


def test_exact_ot_started_at_one_of_two_models_stops_there_and_is_one_shot_fusion():
    """With two models, the mean of the models aligned to model s is (p_s + P p_t) / 2, and each model's exact
    coupling to it is its coupling to s (both terms of the score peak there), so the loop started at s ends
    after its first update: one-shot fusion anchored at s."""
    models = [make("mlp", seed=s) for s in range(2)]
    x = torch.randn(16, *SHAPE)
    for anchor in range(2):
        fusion = wasserstein_barycenter(models, target("mlp", 6), start=anchor)
        assert set(fusion.iterations.values()) == {2}  # one update, then the couplings no longer change
        fused = target("mlp", 6)
        fused.load_state_dict(fusion.state)
        assert torch.allclose(fused(x), one_shot_fusion(models, anchor=anchor)(x), atol=1e-5)


@pytest.mark.parametrize("arch", ["rnn", "lstm"])
def test_the_recurrent_term_and_its_ablation_both_fuse(arch):
    models = [make(arch, seed=s) for s in range(2)]
    with_term = wasserstein_barycenter(models, target(arch, 6), alpha_h=1.0)
    without = wasserstein_barycenter(models, target(arch, 6), alpha_h=0.0)
    for fusion in (with_term, without):
        for plan in fusion.couplings[1].values():
            assert torch.allclose(plan.sum(0), torch.full((6,), 1 / 6, dtype=plan.dtype))
    differs = any(not torch.equal(with_term.couplings[1][k], without.couplings[1][k]) for k in without.couplings[1])
    heavy = wasserstein_barycenter(models, target(arch, 6), alpha_h=100.0)
    assert differs or any(not torch.equal(heavy.couplings[1][k], without.couplings[1][k]) for k in without.couplings[1])


def test_fusion_beats_vanilla_averaging_on_trained_models(trained_pair, digits):
    fused = fuse(list(trained_pair), target("mlp", 24))
    vanilla = vanilla_average(list(trained_pair))
    fused_loss = evaluate(fused, digits.x_test, digits.y_test)["loss"]
    vanilla_loss = evaluate(vanilla, digits.x_test, digits.y_test)["loss"]
    assert fused_loss < vanilla_loss
    one_shot = one_shot_fusion(list(trained_pair))
    assert evaluate(one_shot, digits.x_test, digits.y_test)["loss"] < vanilla_loss


def test_one_shot_fusion_and_ensemble_of_copies_are_the_model(digits):
    model = make("mlp")
    copies = [model, copy.deepcopy(model)]
    x = digits.x_test
    assert torch.allclose(one_shot_fusion(copies)(x), model(x), atol=1e-5)
    single = evaluate(model, x, digits.y_test)
    ensemble = ensemble_evaluate(copies, x, digits.y_test)
    assert ensemble["accuracy"] == single["accuracy"]
    assert ensemble["loss"] == pytest.approx(single["loss"], rel=1e-5)


def test_lambda_weights_are_checked_and_respected():
    a, b = make("mlp", seed=0), make("mlp", seed=1)
    with pytest.raises(ValueError, match="weights must be 2 non-negative"):
        wasserstein_barycenter([a, b], target("mlp", 6), weights=[1.0])
    with pytest.raises(ValueError, match="weights must be 2 non-negative"):
        wasserstein_barycenter([a, b], target("mlp", 6), weights=[-1.0, 2.0])
    all_on_b = wasserstein_barycenter([a, b], target("mlp", 6), weights=[0.0, 1.0])
    fused = target("mlp", 6)
    fused.load_state_dict(all_on_b.state)
    x = torch.randn(16, *SHAPE)
    assert torch.allclose(fused(x), b(x), atol=1e-4)  # a permutation of B, whatever the coupling to A


def test_vanilla_averaging_by_hand():
    """Weights [3, 1]: each float tensor is 0.75 A + 0.25 B in A's dtype; the batch count (an integer buffer)
    is model A's, never averaged."""
    a, b = make("resnet_bn", seed=0), make("resnet_bn", seed=1)
    count = next(k for k, v in a.state_dict().items() if not v.is_floating_point())
    a.state_dict()[count].fill_(3)
    b.state_dict()[count].fill_(6)
    for weights, share in ((None, 0.5), ([3, 1], 0.75), ([0.3, 0.1], 0.75)):
        state = vanilla_average([a, b], weights).state_dict()
        for key, value in a.state_dict().items():
            if key == count:
                assert state[key].item() == 3
                continue
            expected = share * value.double() + (1 - share) * b.state_dict()[key].double()
            assert state[key].dtype == value.dtype
            assert torch.allclose(state[key].double(), expected, atol=1e-6), key
    with pytest.raises(ValueError):
        vanilla_average([a, b], [1.0])


def test_one_shot_fusion_weights_anchor_and_solver():
    """One-shot fusion anchors at model 0 by default: with all the weight on it, the result is model 0 itself;
    with all the weight on model 1, model 1 aligned to it (the same function). Sinkhorn at its default epsilon is
    sharp enough to fuse a model with a permuted copy exactly; at epsilon 1 it blurs the units together."""
    a, b = make("mlp", seed=0), make("mlp", seed=1)
    x = torch.randn(32, *SHAPE)
    on_a = one_shot_fusion([a, b], weights=[1.0, 0.0])
    for key, value in a.state_dict().items():
        assert torch.allclose(on_a.state_dict()[key], value, atol=1e-6), key
    assert torch.allclose(one_shot_fusion([a, b], weights=[0.0, 1.0])(x), b(x), atol=1e-5)
    shuffled = permuted_copy(a, random_permutations(a.permutation_spec(), a.state_dict(), torch.Generator()))
    assert torch.allclose(one_shot_fusion([a, shuffled], solver="sinkhorn")(x), a(x), atol=1e-4)
    assert not torch.allclose(one_shot_fusion([a, shuffled], solver="sinkhorn", epsilon=1.0)(x), a(x), atol=1e-2)


@pytest.mark.parametrize("arch", ["mlp", "rnn"])
def test_one_shot_fusion_is_the_barycentre_loop_kept_at_its_anchor(arch):
    """Three models: one coupling of each to the anchor, no update of the target, no hidden-state term."""
    models = [make(arch, seed=s) for s in range(3)]
    for anchor in (0, 2):
        fusion = wasserstein_barycenter(models, models[anchor], start=anchor, alpha_h=0.0, update_target=False)
        fused = one_shot_fusion(models, anchor=anchor)
        for key, value in fusion.state.items():
            assert torch.allclose(fused.state_dict()[key], value.to(torch.float32), atol=1e-6), key


def test_updating_the_target_or_the_hidden_term_change_a_recurrent_fusion():
    """Why the two switches one-shot fusion sets matter: on three RNNs each changes the fused weights."""
    models = [make("rnn", seed=s) for s in range(3)]
    one_shot = one_shot_fusion(models).state_dict()
    for options in ({"alpha_h": 0.0, "update_target": True}, {"alpha_h": 1.0, "update_target": False}):
        other = wasserstein_barycenter(models, models[0], start=0, **options).state
        assert any(not torch.allclose(one_shot[k], v.float(), atol=1e-3) for k, v in other.items()), options


def test_an_unknown_input_transport():
    with pytest.raises(ValueError, match="unknown input_transport 'mean'; valid: average, sum"):
        wasserstein_barycenter([make("mlp")], target("mlp", 6), input_transport="mean")


def test_the_target_units_start_from_distinct_units_or_every_unit_then_repeats():
    """Narrower: m distinct units in order; as wide: every unit once; wider (even more than twice): every unit,
    then repeats."""
    from lmcot.fusion import _initial_units

    for seed in range(5):
        generator = np.random.default_rng(seed)
        narrow = _initial_units(10, 9, generator)
        assert len(set(narrow.tolist())) == 9 and narrow.tolist() == sorted(narrow.tolist())
        assert _initial_units(6, 6, generator).tolist() == list(range(6))
        wide = _initial_units(4, 13, generator)
        assert wide[:4].tolist() == [0, 1, 2, 3] and len(wide) == 13 and set(wide[4:].tolist()) <= {0, 1, 2, 3}


def test_evaluation_adds_up_every_batch(digits):
    """Loss and accuracy in batches of 30 (the last one of 10) are those of the whole set at once, by hand."""
    model = make("mlp")
    x, y = digits.x_test[:100], digits.y_test[:100]
    with torch.no_grad():
        logits = model.eval()(x)
    by_hand = {
        "loss": torch.nn.functional.cross_entropy(logits, y).item(),
        "accuracy": (logits.argmax(1) == y).sum().item() / len(y),
    }
    batched = evaluate(model, x, y, batch_size=30)
    assert batched["loss"] == pytest.approx(by_hand["loss"], rel=1e-6)
    assert batched["accuracy"] == by_hand["accuracy"]
    assert 0.0 < batched["accuracy"] < 1.0  # some right and some wrong: a count that was reset would show


def test_ensemble_weights_are_normalised_checked_and_summed_over_batches(digits):
    """Weights 1 and 3 are weights 1/4 and 3/4; a weight per model or a ValueError; batches add up to the whole."""
    models = [make("mlp"), make("mlp")]
    with torch.no_grad():
        models[1].layers[0].weight.mul_(3)  # a different model
    x, y = digits.x_test[:100], digits.y_test[:100]
    quarter = ensemble_evaluate(models, x, y, weights=[0.25, 0.75])
    assert ensemble_evaluate(models, x, y, weights=[1, 3]) == pytest.approx(quarter, rel=1e-12)
    assert ensemble_evaluate(models, x, y)["loss"] != pytest.approx(quarter["loss"], rel=1e-6)
    batched = ensemble_evaluate(models, x, y, weights=[1, 3], batch_size=30)
    assert batched["accuracy"] == quarter["accuracy"] and batched["loss"] == pytest.approx(quarter["loss"], rel=1e-9)
    with pytest.raises(ValueError, match="zip"):
        ensemble_evaluate(models, x, y, weights=[1.0])


def test_a_recurrent_matrix_merged_into_one_unit_by_hand():
    """Two units merged into one (plan ``[[1/2, 1/2]]``): ``H = [[1, 2], [3, 4]]`` becomes the mean of its four
    entries, 2.5, when both axes are averaged (the default, the Gromov-Wasserstein update), and 5 when the
    input axis sums (each unit's contribution kept)."""
    from lmcot.fusion import _transport_square

    plan, h = torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert _transport_square(plan, h).tolist() == [[2.5]]
    assert _transport_square(plan, h[..., None], "sum").tolist() == [[[5.0]]]


# Two units that only their recurrent matrices tell apart: no input cost, and B's H is A's with the units swapped,
# plus 1 on its last entry.
H_TARGET = torch.tensor([[1.0, 5.0], [0.0, -2.0]], dtype=torch.float64)
H_MODEL = torch.tensor([[-2.0, 0.0], [5.0, 2.0]], dtype=torch.float64)
SWAP, IDENTITY = torch.tensor([[0.0, 0.5], [0.5, 0.0]]).double(), torch.eye(2).double() / 2


def layer_options(
    tolerance=0.0,
    max_iterations=20,
    input_transport="average",
    alpha_h=0.0,
    solver="emd",
    epsilon=1e-3,
    couple_to="others",
):
    """The barycentre's options for one layer, as ``wasserstein_barycenter`` hands them on."""
    from lmcot.fusion import _Options

    return _Options(solver, epsilon, max_iterations, alpha_h, tolerance, input_transport, couple_to)


def couple(previous=None, solver="emd", epsilon=1e-3, **cap):
    from lmcot.fusion import _couple

    options = layer_options(max_iterations=1, alpha_h=1.0, solver=solver, epsilon=epsilon)
    zeros = torch.zeros(2, 3, dtype=torch.float64)
    return _couple(zeros, [H_TARGET], zeros, [H_MODEL], previous, options, **cap)  # cap: fixed_point


def test_the_recurrent_coupling_by_hand():
    """From the identity, the Gromov-Wasserstein cost ``sum_j' (H[j,j'] - H_B[k,j'])^2 / 2`` is
    ``[[17, 12.5], [4, 20.5]]``: the swap is cheaper (16.5 < 37.5), and at the swap the cost is
    ``[[25, 0.5], [0, 26.5]]``, so the swap stays: the coupling is the swap and its cost ``(0.5 + 0) / 2``."""
    plan, cost, solved_for = couple()
    assert plan.tolist() == SWAP.tolist() and solved_for.tolist() == [[25.0, 0.5], [0.0, 26.5]]
    assert cost == pytest.approx(0.25, abs=1e-12)
    # with no refinement, the coupling given is kept and costed as it is: (17 + 20.5) / 2
    plan, cost, solved_for = couple(previous=IDENTITY, fixed_point=0)
    assert plan.tolist() == IDENTITY.tolist() and cost == pytest.approx(18.75, abs=1e-12)
    assert solved_for.tolist() == [[17.0, 12.5], [4.0, 20.5]]


def test_the_recurrent_fixed_point_stops_when_the_coupling_repeats_or_after_20_solves(monkeypatch):
    """Each solve gets the caller's solver and epsilon; a repeated coupling ends the loop at once, and one that
    keeps changing is re-solved 20 times after the first."""
    import lmcot.fusion as fusion_module

    calls = []

    def alternating(cost, solver, epsilon):
        calls.append((solver, epsilon))
        return (SWAP, IDENTITY)[len(calls) % 2]

    monkeypatch.setattr(fusion_module, "uniform_plan", alternating)
    couple(solver="sinkhorn", epsilon=0.37)
    assert calls == [("sinkhorn", 0.37)] * 21
    calls.clear()
    monkeypatch.setattr(fusion_module, "uniform_plan", lambda cost, solver, epsilon: calls.append(1) or SWAP)
    couple()
    assert len(calls) == 2  # the start, then one solve that repeats it


def test_a_layers_units_carry_their_inputs_by_the_chosen_transport():
    """Layer P1's units, after P0's two units were merged into one (plan ``[[1/2, 1/2]]``): each row of
    ``layers.1.weight`` becomes the sum of its two entries (``sum``) or their mean (``average``); the one input
    it then carries makes the mean over inputs the row itself, and the bias is not part of the point."""
    from lmcot.fusion import _units

    model = build_model("mlp", (2,), 2, 2, 2)
    state = {k: v.double() for k, v in model.state_dict().items()}
    w = state["layers.1.weight"]
    plan = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    spec = model.permutation_spec()
    for transport, columns in (("sum", w.sum(1)), ("average", w.mean(1))):
        points, recurrent = _units(spec, "P1", state, {"P0": plan}, set(state), ["P0"], transport)
        torch.testing.assert_close(points, columns[:, None])
        assert recurrent == []


def test_a_narrower_target_draws_its_starting_units_from_the_seed_alone():
    """Fusing into fewer units starts from a random subset chosen by ``seed``: the same seed gives the same
    fused weights whatever numpy's global state, and another seed may start elsewhere."""
    models = [make("mlp", seed=s) for s in range(2)]
    fused = []
    for global_seed in (0, 1):
        np.random.seed(global_seed)
        fused.append(wasserstein_barycenter(models, target("mlp", 4), start=0, max_iterations=1, seed=3).state)
    for key in fused[0]:
        assert torch.equal(fused[0][key], fused[1][key])
    assert any(
        not torch.equal(wasserstein_barycenter(models, target("mlp", 4), start=0, max_iterations=1, seed=s).state[k], v)
        for s in range(4, 8)
        for k, v in fused[0].items()
    )


class UnreadLayer(torch.nn.Module):
    """A spec with a permutation ``Q`` that acts on no tensor's units (only on ``fc2``'s inputs)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)

    def permutation_spec(self):
        from lmcot.permutation import PermutationSpec

        return PermutationSpec({"P0": (("fc1.weight", 0), ("fc1.bias", 0)), "Q": (("fc2.weight", 1),)})


def test_the_barycentres_refusals_word_for_word():
    with pytest.raises(ValueError) as refused:
        wasserstein_barycenter([UnreadLayer(), UnreadLayer()], UnreadLayer(), start="mean")
    assert str(refused.value) == "layer 'Q' has no incoming weights whose inputs are solved before it"
    models = [make("mlp", seed=s) for s in range(2)]
    with pytest.raises(ValueError) as refused:
        wasserstein_barycenter(models, target("mlp", 4), start=0, update_target=False)
    assert str(refused.value) == "one-shot fusion needs the target as wide as model 0 at 'P0' (4 != 6)"
    refusals = {
        "wasserstein_barycenter needs at least one model": dict(models=[]),
        "weights must be 2 non-negative numbers, not all 0; got [0.0, 0.0]": dict(weights=[0, 0]),
        "unknown OT solver 'hungarian'; valid: emd, sinkhorn": dict(solver="hungarian"),
        "start='best' needs update_target=True": dict(update_target=False),
        "unknown start 2; valid: mean, best, first or a model index below 2": dict(start=2),
        "unknown start -1; valid: mean, best, first or a model index below 2": dict(start=-1),
        "update_target=False needs a model to anchor on (start=<model index>)": dict(start="mean", update_target=False),
    }
    for message, arguments in refusals.items():
        arguments = {"models": models, "target": target("mlp", 6), **arguments}
        with pytest.raises(ValueError) as refused:
            wasserstein_barycenter(**arguments)
        assert str(refused.value) == message


def test_a_transformers_heads_are_refused_by_name():
    vits = [build_model("vit", SHAPE, 10, 8, 2, heads=2) for _ in range(2)]
    heads = ", ".join(vits[0].permutation_spec().head_groups())
    assert heads.count(",") >= 1  # the separator shows
    with pytest.raises(ValueError) as refused:
        wasserstein_barycenter(vits, build_model("vit", SHAPE, 10, 8, 2, heads=2), start=0)
    assert str(refused.value) == (
        f"the Wasserstein barycentre couples units one at a time, so it may split an attention head ({heads}); "
        "align heads with weight_matching or activation_matching instead"
    )


def test_the_best_start_runs_every_start_with_the_callers_options():
    """``start="best"`` is the lowest-cost one of the runs from each start with the same solver, epsilon,
    iteration cap, tolerance and seed (a narrower target, so that the seed matters)."""
    models = [make("mlp", seed=s) for s in range(2)]
    options = dict(solver="sinkhorn", epsilon=0.05, max_iterations=3, tolerance=0.5, seed=3)
    best = wasserstein_barycenter(models, target("mlp", 4), start="best", **options)
    tried = {
        f.start: f
        for f in (wasserstein_barycenter(models, target("mlp", 4), start=s, **options) for s in ["mean", 0, 1])
    }
    assert best.start_costs == {name: fusion.cost for name, fusion in tried.items()}
    same = tried[best.start]
    assert best.iterations == same.iterations and best.costs == same.costs
    assert all(torch.equal(best.state[k], v) for k, v in same.state.items())
    # the iteration cap reaches every start too
    capped = wasserstein_barycenter(models, target("mlp", 4), start="best", max_iterations=1)
    assert set(capped.iterations.values()) == {1}
    # the options matter here: the defaults (exact OT, 20 iterations, tolerance 1e-6, seed 0) give other costs
    assert wasserstein_barycenter(models, target("mlp", 4), start="best").start_costs != best.start_costs


def test_the_default_iteration_cap_is_20_and_alpha_h_is_1():
    """With a tolerance of 0 every layer runs to the cap; a recurrent layer's hidden term weighs 1 by default."""
    models = [make("mlp", seed=s) for s in range(2)]
    assert set(wasserstein_barycenter(models, target("mlp", 6), start=0, tolerance=0.0).iterations.values()) == {20}
    lstms = [make("lstm", seed=s) for s in range(2)]
    runs = [wasserstein_barycenter(lstms, target("lstm", 6), start="mean", **alpha) for alpha in ({}, {"alpha_h": 1.0})]
    assert all(torch.equal(runs[0].state[k], v) for k, v in runs[1].state.items())
    assert runs[0].costs == runs[1].costs
    doubled = wasserstein_barycenter(lstms, target("lstm", 6), start="mean", alpha_h=2.0)
    assert doubled.costs != runs[0].costs  # the weight shows


def test_the_default_seed_is_0():
    models = [make("mlp", seed=s) for s in range(2)]
    default = wasserstein_barycenter(models, target("mlp", 4), start=0, max_iterations=1).state
    seed_0 = wasserstein_barycenter(models, target("mlp", 4), start=0, max_iterations=1, seed=0).state
    assert all(torch.equal(default[k], v) for k, v in seed_0.items())


def test_weights_are_normalised_in_double_precision():
    from lmcot.fusion import _normalised_weights

    assert _normalised_weights([1, 3], 2).tolist() == [0.25, 0.75]
    thirds = _normalised_weights(np.array([1, 2], dtype=np.float32), 2)
    assert thirds.dtype == np.float64 and thirds.tolist() == [1 / 3, 2 / 3]
    assert _normalised_weights(None, 4).tolist() == [0.25] * 4


def test_each_layers_barycentre_is_logged_with_its_iterations_and_cost(caplog):
    import logging

    with caplog.at_level(logging.DEBUG, logger="lmcot.fusion"):
        fusion = wasserstein_barycenter([two_unit_mlp()], build_model("mlp", (2,), 2, 1, 1), start="mean")
    assert fusion.iterations == {"P0": 2}  # one update of the merged unit, then no change
    cost = fusion.costs["P0"][-1]
    assert [r.getMessage() for r in caplog.records if r.name == "lmcot.fusion"] == [
        f"layer P0: 2 barycentre iterations, cost {cost:.6g}"
    ]


def test_a_wider_target_starts_from_the_same_width_barycentre_by_hand():
    """Two models of two 1-d units, A = (0, 10) and B = (10, 1); their mean (5, 5.5) is coupled to A as is
    (25 + 20.25 < 25 + 30.25) and to B swapped (16 + 20.25 < 25 + 20.25), so the barycentre's units are
    ((0 + 1) / 2, (10 + 10) / 2) = (0.5, 10), a fixed point. A target of three units starts from both of them
    and one repeat, not from the mean."""
    from lmcot.fusion import _start_units

    points = [torch.tensor([[0.0], [10.0]], dtype=torch.float64), torch.tensor([[10.0], [1.0]], dtype=torch.float64)]
    options = layer_options(tolerance=1e-9)
    start, start_self = _start_units(points, [[], []], [0.5, 0.5], "mean", 3, options, np.random.default_rng(0))
    assert start[:2].tolist() == [[0.5], [10.0]] and start[2].tolist() in ([0.5], [10.0])
    assert start_self == []


def test_transport_tensor_carries_every_coupled_axis_past_an_uncoupled_one():
    """``layers.1.weight`` lists its input axis (P0) before its units (P1): with P1's coupling alone, the rows
    move and the columns stay. A permutation coupling ``C[i, perm[i]] = 1/3`` moves row ``perm[i]`` to ``i``."""
    from lmcot.fusion import transport_tensor

    model = build_model("mlp", (4,), 3, 3, 2)
    spec = model.permutation_spec()
    assert list(spec.acting_on("layers.1.weight").items()) == [(1, "P0"), (0, "P1")]
    coupling = torch.zeros(3, 3, dtype=torch.float64)
    coupling[torch.arange(3), torch.tensor([2, 0, 1])] = 1 / 3
    weight = torch.arange(9.0, dtype=torch.float64).reshape(3, 3)
    moved = transport_tensor(spec, {"P1": coupling}, "layers.1.weight", weight)
    assert moved.tolist() == weight[[2, 0, 1]].tolist()


def test_copies_cost_nothing_at_every_iteration():
    """The barycentre cost sums each model's weighted coupling cost from zero: for copies it is 0 throughout."""
    model = make("mlp")
    fusion = wasserstein_barycenter([model, copy.deepcopy(model)], target("mlp", 6), start="mean", tolerance=0.0)
    assert all(cost == pytest.approx(0.0, abs=1e-9) for costs in fusion.costs.values() for cost in costs)
    assert set(fusion.iterations.values()) == {20}  # a tolerance of 0 is never undercut by a change of 0


def test_one_iteration_updates_the_targets_units_and_recurrent_matrix_by_hand():
    """Two models of two units merged into one target unit (both plans ``[[1/2, 1/2]]``), weights 1/4 and 3/4:
    the unit is the weighted mean of the models' means, ``1/4 * 0.5 + 3/4 * 5 = 3.875``, and with the input axis
    summed each ``H`` becomes half the sum of its entries, ``1/4 * 10/2 + 3/4 * 4/2 = 2.75`` (2.5 and 1 averaged:
    1.375)."""
    from lmcot.fusion import _layer_barycenter

    points = [torch.tensor([[0.0], [1.0]]).double(), torch.tensor([[4.0], [6.0]]).double()]
    recurrent = [[torch.tensor([[1.0, 2.0], [3.0, 4.0]]).double()], [torch.tensor([[2.0, 2.0], [2.0, -2.0]]).double()]]
    start, start_self = torch.zeros(1, 1, dtype=torch.float64), [torch.zeros(1, 1, dtype=torch.float64)]
    for transport, expected in (("sum", 2.75), ("average", 1.375)):
        options = layer_options(max_iterations=1, input_transport=transport)
        plans, units, target_self, _, _ = _layer_barycenter(
            points, recurrent, [0.25, 0.75], start, start_self, options, True
        )
        assert [p.tolist() for p in plans] == [[[0.5, 0.5]]] * 2
        assert units.tolist() == [[3.875]]
        assert [h.tolist() for h in target_self] == [[[expected]]]


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_the_barycentre_stops_on_the_change_relative_to_the_targets_norm_at_any_scale(scale):
    """A = (0, 10) and B = (2, 12), started at A: the first update moves the target to (1, 11), a change of
    ``sqrt(2) / 10 = 0.1414`` relative to A's norm at every scale, and the next changes nothing. A tolerance
    above it stops after one iteration, one below it after two."""
    from lmcot.fusion import _layer_barycenter

    a, b = (scale * torch.tensor([[0.0], [10.0]]).double(), scale * torch.tensor([[2.0], [12.0]]).double())
    for tolerance, iterations in ((0.15, 1), (0.13, 2)):
        options = layer_options(tolerance, couple_to="all")
        _, units, _, costs, _ = _layer_barycenter([a, b], [[], []], [0.5, 0.5], a, [], options, True)
        assert len(costs) == iterations
        torch.testing.assert_close(units, scale * torch.tensor([[1.0], [11.0]]).double())


def test_each_iteration_starts_a_models_recurrent_coupling_from_its_last_one(monkeypatch):
    """The fixed point of the recurrent term is warm-started: the first iteration has no coupling to start from,
    and every later one hands each model its own coupling from the iteration before."""
    import lmcot.fusion as fusion_module

    calls, couple_once = [], fusion_module._couple

    def recorded(target_points, target_self, points, recurrent, previous, options):
        plan, cost, solved_for = couple_once(target_points, target_self, points, recurrent, previous, options)
        calls.append((previous, plan))
        return plan, cost, solved_for

    monkeypatch.setattr(fusion_module, "_couple", recorded)
    points = [torch.tensor([[0.0], [3.0]]).double(), torch.tensor([[1.0], [2.0]]).double()]
    recurrent = [[H_TARGET], [H_MODEL]]
    options = layer_options(max_iterations=3, alpha_h=1.0)
    fusion_module._layer_barycenter(points, recurrent, [0.5, 0.5], points[0], [H_TARGET], options, True)
    assert len(calls) == 6 and calls[0][0] is None and calls[1][0] is None
    assert all(calls[k][0] is calls[k - 2][1] for k in range(2, 6))


def test_a_sinkhorn_coupling_is_rounded_to_the_assignment_of_least_cost_not_of_most_mass():
    """Sinkhorn's plan at epsilon 0.5 for this 4 x 4 cost puts the most mass on 0->0, 1->3, 2->1, 3->2 (total cost
    1.34), while the assignment of least cost (by brute force over all 24; the next is 0.02 dearer) is 0->0, 1->2,
    2->3, 3->1 (1.28): the largest log-plan's, and the one the barycentre alignment returns."""
    cost = torch.tensor([[0.08, 0.59, 0.9, 0.58], [0.85, 0.57, 0.41, 0.21], [0.29, 0.74, 0.71, 0.46],
                         [0.58, 0.33, 0.31, 0.83]], dtype=torch.float64)  # fmt: skip
    plan = uniform_plan(cost, "sinkhorn", 0.5)
    least = min(itertools.permutations(range(4)), key=lambda p: float(sum(cost[i, p[i]] for i in range(4))))
    assert least == (0, 2, 3, 1) and solve_lap(plan).tolist() == [0, 3, 1, 2]
    assert solve_lap(torch.from_numpy(entropic_log_plan(cost.numpy(), 0.5))).tolist() == list(least)
    anchor = {"P0": torch.eye(4, dtype=torch.float64) / 4}
    fusion = Fusion({}, [anchor, {"P0": plan}], {"P0": 1},
                    transport_costs=[{"P0": 1 - 4 * anchor["P0"]}, {"P0": cost}])  # fmt: skip
    assert permutations_from_fusion(fusion)["P0"].tolist() == list(least)


def test_a_fusion_keeps_the_cost_matrix_each_coupling_was_solved_for():
    """With the exact solver, each model's coupling is the optimal plan of its kept cost matrix, recurrent
    term included: the plan's cost equals the least assignment's."""
    models = [make("lstm", seed=s) for s in range(2)]
    fusion = wasserstein_barycenter(models, target("lstm", 6), start="mean", max_iterations=3)
    for couplings, matrices in zip(fusion.couplings, fusion.transport_costs, strict=True):
        assert couplings.keys() == matrices.keys()
        for name, plan in couplings.items():
            best = solve_lap(-matrices[name])
            least = float(matrices[name][torch.arange(len(best)), best].sum()) / len(best)
            assert float((plan * matrices[name]).sum()) == pytest.approx(least, abs=1e-9)


def paper_cost(target_state, model_state, layer, previous, plan, alpha_h):
    """Akash et al.'s cost of a 2-layer RNN's layer ``layer`` by brute force: ``sum_{j',k'} (W[j,j'] -
    W_i[k,k'])^2 previous[j',k'] + alpha_h sum_{j',k'} (H[j,j'] - H_i[k,k'])^2 plan[j',k']``, both couplings with
    entries summing to 1, biases left out."""
    w, w_i = target_state[f"layers.{layer}.weight_ih"], model_state[f"layers.{layer}.weight_ih"]
    h, h_i = target_state[f"layers.{layer}.weight_hh"], model_state[f"layers.{layer}.weight_hh"]
    m, n = plan.shape
    cost = torch.zeros(m, n, dtype=torch.float64)
    for j, k in itertools.product(range(m), range(n)):
        for a, b in itertools.product(range(previous.shape[0]), range(previous.shape[1])):
            cost[j, k] += (w[j, a] - w_i[k, b]).double() ** 2 * previous[a, b]
        for a, b in itertools.product(range(m), range(n)):
            cost[j, k] += alpha_h * (h[j, a] - h_i[k, b]).double() ** 2 * plan[a, b]
    return cost


@pytest.mark.parametrize("alpha_h", [0.5, 3.0])
def test_a_two_layer_rnns_costs_are_the_papers_by_brute_force(alpha_h):
    """Started at model 0 for one iteration, model 1's coupling at each layer is solved for the paper's cost
    against model 0's units: the input term a mean under the previous coupling (the identity over the 8 input
    features at the first layer, model 1's first coupling at the second), the hidden term a mean under the
    coupling itself. A sum over the inputs (4 times the input term at the second layer, 8 times at the first)
    or a bias in the point fails it."""
    models = [make("rnn", width=4, seed=s) for s in (3, 4)]
    with torch.no_grad():
        for model in models:
            for layer in model.layers:
                layer["bias"].normal_()  # biases that would change the cost if they were in it
    states = [{k: v.double() for k, v in m.state_dict().items()} for m in models]
    fusion = wasserstein_barycenter(models, target("rnn", 4), start=0, max_iterations=1, alpha_h=alpha_h)
    previous = torch.eye(8, dtype=torch.float64) / 8
    for layer, name in enumerate(["P0", "P1"]):
        plan = fusion.couplings[1][name]
        expected = paper_cost(states[0], states[1], layer, previous, plan, alpha_h)
        torch.testing.assert_close(fusion.transport_costs[1][name], expected, rtol=1e-10, atol=1e-10)
        previous = plan


def test_coupling_each_model_to_the_others_is_coordinate_descent_that_finds_the_best_matching():
    """Three sets of four points in the plane, started at the first: coupled to the others' mean, the barycentre
    cost never rises, each set's final permutation is the best against the mean of the other two (brute force
    over its 24), and the cost reaches the least over all 24 x 24 matchings in all 40 cases; the paper's loop
    (coupled to the barycentre, each set's own points included) stops above it in 19 of them, never below."""
    from lmcot.fusion import _layer_barycenter

    perms = [list(p) for p in itertools.permutations(range(4))]

    def cost(sets):  # sum_i 1/3 <pi_i, C_i> at the mean, pi_i = P_i / 4
        mean = sum(sets) / 3
        return float(sum(((mean - s) ** 2).sum() for s in sets)) / 12

    stuck = missed = 0
    for seed in range(40):
        generator = torch.Generator().manual_seed(seed)
        points = [torch.randn(4, 2, generator=generator).double() for _ in range(3)]
        least = min(cost([points[0], points[1][p], points[2][q]]) for p in perms for q in perms)
        found = {}
        for couple_to in ("others", "all"):
            options = layer_options(couple_to=couple_to)
            plans, _, _, costs, _ = _layer_barycenter(
                points, [[], [], []], np.full(3, 1 / 3), points[0], [], options, True
            )
            assert all(b <= a + 1e-12 for a, b in zip(costs, costs[1:], strict=False)), (couple_to, costs)
            found[couple_to] = costs[-1]
            if couple_to == "others":
                aligned = [p[solve_lap(plan)] for p, plan in zip(points, plans, strict=True)]  # in the target's order
                for i in range(3):
                    others = [aligned[b] for b in range(3) if b != i]
                    best = min(cost([*others, points[i][p]]) for p in perms)
                    assert cost([*others, aligned[i]]) == pytest.approx(best, abs=1e-12)
        assert found["others"] <= found["all"] + 1e-12 and found["all"] >= least - 1e-12
        stuck += found["all"] > least + 1e-9
        missed += found["others"] > least + 1e-9
    assert (stuck, missed) == (19, 0)


def test_coupled_to_the_others_a_model_start_moves_past_one_shot_fusion():
    """Three models started at the first: the paper's loop stops after one update, at one-shot fusion anchored
    there; coupled to the others' mean it moves on, and at the first layer (whose inputs no coupling changes)
    ends at a lower cost. From the unaligned mean, the paper's loop stops at once and coupling to the others
    ends far lower. A start that its first update leaves in place (a model and its copy) is still swept once.
    Later layers read inputs carried by different couplings, so their costs are not comparable across runs."""
    models = [make("mlp", seed=s) for s in range(3)]
    paper = wasserstein_barycenter(models, target("mlp", 6), start=0, couple_to="all")
    assert set(paper.iterations.values()) == {2}
    moved = wasserstein_barycenter(models, target("mlp", 6), start=0)
    assert max(moved.iterations.values()) > 2 and moved.costs["P0"][-1] < paper.costs["P0"][-1] - 1e-6
    mean_paper = wasserstein_barycenter(models, target("mlp", 6), start="mean", couple_to="all")
    mean = wasserstein_barycenter(models, target("mlp", 6), start="mean")
    assert mean_paper.iterations["P0"] == 1 and mean.iterations["P0"] > 2
    assert mean.cost < 0.7 * mean_paper.cost
    copies = wasserstein_barycenter([models[0], copy.deepcopy(models[0])], target("mlp", 6), start=0)
    assert set(copies.iterations.values()) == {2}


def test_an_unknown_couple_to_is_refused_by_name():
    models = [make("mlp", seed=s) for s in range(2)]
    with pytest.raises(ValueError, match="unknown couple_to 'mine'; valid: others, all"):
        wasserstein_barycenter(models, target("mlp", 6), couple_to="mine")
