"""Wasserstein-barycentre fusion: exact on copies and permuted copies, valid couplings, any target width,
the recurrent term, and fused models checked against the baselines."""

import copy

import pytest
import torch

from lmcot.alignment import permuted_copy
from lmcot.fusion import (
    barycenter_permutations,
    ensemble_evaluate,
    fuse,
    one_shot_fusion,
    ot_plan,
    vanilla_average,
    wasserstein_barycenter,
)
from lmcot.models import build_model
from lmcot.permutation import invert_permutations, random_permutations
from lmcot.training import evaluate

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
    fusion = wasserstein_barycenter(models, target(arch, width), solver=solver, epsilon=0.01)
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


def test_a_wider_target_of_copies_computes_the_same_function():
    """Splitting each unit in two and halving its outgoing weights is exact: a 2x target of copies must be."""
    model = make("mlp", width=6)
    fused = fuse([model, copy.deepcopy(model)], target("mlp", 12))
    x = torch.randn(64, *SHAPE)
    assert torch.allclose(fused(x), model(x), atol=1e-4)


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


def test_ot_plan_rejects_an_unknown_solver():
    with pytest.raises(ValueError, match="valid: emd, sinkhorn"):
        ot_plan(torch.rand(3, 3), "hungarian")
