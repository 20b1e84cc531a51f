"""The landscape plane's geometry, and the BatchNorm corrections of the barrier stage (REPAIR without
BatchNorm: test_repair.py)."""

import copy

import numpy as np
import pytest
import torch
from conftest import batch_sizes, trained_models

from lmcot.barrier import interpolation_curve
from lmcot.config import Configuration
from lmcot.evaluation import batchnorm_layers, batchnorm_statistics, evaluate, repair, reset_batchnorm
from lmcot.models import build_model
from lmcot.plane import (
    evaluate_plane,
    flatten_state,
    fusion_planes,
    grid_axes,
    load_flat,
    plane_basis,
    plane_tables,
)
from lmcot.training import Recipe


def test_plane_basis_is_orthonormal_and_reproduces_the_points(generator):
    origin, first, second = (torch.randn(50, generator=generator, dtype=torch.float64) for _ in range(3))
    e1, e2, points = plane_basis(origin, first, second)
    assert e1.norm().item() == pytest.approx(1) and e2.norm().item() == pytest.approx(1)
    assert (e1 @ e2).item() == pytest.approx(0, abs=1e-12)
    for vector, name in ((origin, "origin"), (first, "first"), (second, "second")):
        x, y = points[name]
        assert torch.allclose(origin + x * e1 + y * e2, vector)


def test_plane_basis_refuses_points_on_one_line():
    origin, first = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="one line"):
        plane_basis(origin, first, 3 * first)
    with pytest.raises(ValueError, match="equals the origin"):
        plane_basis(origin, origin, first)


def test_grid_covers_the_points_with_a_margin():
    points = {"origin": (0.0, 0.0), "first": (2.0, 0.0), "second": (1.0, 1.0)}
    xs, ys = grid_axes(points, 5, 0.5)
    assert len(xs) == len(ys) == 5
    assert xs[0] == pytest.approx(-1) and xs[-1] == pytest.approx(3)  # extent 2, margin 1 on each side
    assert ys[0] == pytest.approx(-1) and ys[-1] == pytest.approx(2)


def test_load_flat_round_trip_keeps_integer_buffers():
    model = build_model("resnet_bn", (1, 8, 8), 10, 4, 1)
    state = copy.deepcopy(model.state_dict())
    vector = flatten_state(state)
    load_flat(model, torch.zeros_like(vector))
    assert flatten_state(model.state_dict()).abs().max() == 0
    load_flat(model, vector)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    with pytest.raises(ValueError, match="values"):
        load_flat(model, vector[:-1])


def test_plane_corners_are_the_models(digits, trained_pair):
    """The grid point at a model's coordinates evaluates to that model's own loss."""
    a, b = trained_pair
    train, test = (digits.x_train, digits.y_train), (digits.x_test, digits.y_test)
    container = copy.deepcopy(a)
    # a third point off the line a-b: b with its output layer negated
    third = {k: (-v if k.endswith("weight") else v) for k, v in b.state_dict().items()}
    rows, points = evaluate_plane(container, a.state_dict(), b.state_dict(), third, train, test, 3, 0.0, progress=False)
    assert len(rows) == 9
    loss_a = torch.nn.functional.cross_entropy(a(digits.x_train), digits.y_train).item()
    origin = min(rows, key=lambda r: (r["x"] - points["origin"][0]) ** 2 + (r["y"] - points["origin"][1]) ** 2)
    assert origin["x"] == pytest.approx(0, abs=1e-9) and origin["y"] == pytest.approx(0, abs=1e-9)
    assert origin["train_loss"] == pytest.approx(loss_a, rel=1e-4)
    assert all(np.isfinite(r["train_loss"]) and 0 <= r["test_error"] <= 1 for r in rows)


def test_the_permutation_planes_third_model_is_model_2_with_its_function_kept(trained_pair, digits):
    model_1, model_2 = trained_pair
    planes = fusion_planes(model_1, model_2, {"solver": "emd", "max_iterations": 5})
    assert list(planes) == ["permutation", "fusion"]
    first, permuted, labels = planes["permutation"]
    assert labels == {"origin": "model 1", "first": "model 2", "second": "permuted model 2"}
    assert all(torch.equal(v, model_2.state_dict()[k]) for k, v in first.items())
    copy_2 = copy.deepcopy(model_2)
    copy_2.load_state_dict(permuted)
    assert torch.allclose(copy_2(digits.x_test), model_2(digits.x_test), atol=1e-5)
    assert not torch.equal(permuted["layers.0.weight"], first["layers.0.weight"])  # independent seeds differ
    assert planes["fusion"][2]["second"] == "fused model"


def test_plane_tables_mark_the_models_and_evaluate_model_1_at_the_origin(trained_pair, digits):
    config = Configuration("digits", "mlp", 2, 24, 0.05)
    model_1, model_2 = trained_pair
    options = {"grid_size": 3, "margin": 0.0, "num_samples": 400}  # no margin: model 1 is a grid corner
    before = copy.deepcopy(model_1.state_dict())
    planes = plane_tables(config, model_1, model_2, digits, options, {"solver": "emd", "max_iterations": 5}, "cpu")
    assert len(planes.grid) == 2 * 9 and list(planes.grid.columns[:6]) == [*config.as_dict(), "plane"]
    points = planes.points.set_index(["plane", "point"])
    assert len(points) == 6
    distance = (flatten_state(model_2.state_dict()) - flatten_state(model_1.state_dict())).norm().item()
    for plane in ("permutation", "fusion"):
        assert tuple(points.loc[(plane, "model 1"), ["x", "y"]]) == (0.0, 0.0)
        assert tuple(points.loc[(plane, "model 2"), ["x", "y"]]) == pytest.approx((distance, 0.0))
        origin = planes.grid.query(f"plane == '{plane}' and x == 0 and y == 0")
        loss_1 = evaluate(model_1, digits.x_train[:400], digits.y_train[:400])["loss"]
        assert origin["train_loss"].item() == pytest.approx(loss_1, rel=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in model_1.state_dict().items())  # the container is a copy


@pytest.fixture(scope="module")
def bn_models(digits):
    recipe = Recipe(lr=0.05, epochs=2, batch_size=64)
    return [model.eval() for model in trained_models(digits, "resnet_bn", 6, 1, recipe, (0, 1))]


def test_reset_sets_running_statistics_to_the_batch_statistics(digits, bn_models):
    """After a reset, eval mode normalises with the statistics that train mode computes on the inputs."""
    model = copy.deepcopy(bn_models[0])
    inputs = digits.x_train[:300]
    reset_batchnorm(model, inputs)
    assert not model.training
    probe = copy.deepcopy(bn_models[0]).train()
    captured = []
    hooks = [layer.register_forward_hook(lambda m, i, o: captured.append(i[0])) for layer in batchnorm_layers(probe)]
    with torch.no_grad():
        probe(inputs)
    for hook in hooks:
        hook.remove()
    for layer, x in zip(batchnorm_layers(model), captured, strict=True):
        flat = x.transpose(0, 1).flatten(1)
        assert torch.allclose(layer.running_mean, flat.mean(1), atol=1e-5)
        assert torch.allclose(layer.running_var, flat.var(1), rtol=1e-3, atol=1e-5)  # unbiased, as torch keeps it
    # in batches, the running statistics are the mean of the batches' statistics: close to the full ones
    batched = copy.deepcopy(bn_models[0])
    reset_batchnorm(batched, inputs, batch_size=100)
    for layer, full in zip(batchnorm_layers(batched), batchnorm_layers(model), strict=True):
        assert torch.allclose(layer.running_mean, full.running_mean, atol=0.05)


@pytest.mark.parametrize("batch_size", [4096, 128])  # one forward pass; one pass over 3 batches per layer
def test_repair_reaches_its_goal_statistics(digits, bn_models, batch_size):
    model = copy.deepcopy(bn_models[0])
    inputs = digits.x_train[:300]
    before = batchnorm_statistics(model, inputs)
    goal = [(mean + 0.5, 2 * std) for mean, std in before]
    repair(model, goal, inputs, batch_size)
    after = batchnorm_statistics(model, inputs)
    for (mean, std), (goal_mean, goal_std) in zip(after, goal, strict=True):
        assert torch.allclose(mean, goal_mean, atol=1e-4)
        assert torch.allclose(std, goal_std, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("correction", [None, "reset", "repair"])
def test_self_barrier_of_a_batchnorm_network_is_zero(digits, bn_models, correction):
    model = bn_models[0]
    splits = {"test": (digits.x_test, digits.y_test)}
    rows = interpolation_curve(copy.deepcopy(model), model.state_dict(), model.state_dict(), [0, 0.5, 1], splits,
                               correction=correction, norm_inputs=digits.x_train[:300])  # fmt: skip
    losses = [r["value"] for r in rows if r["metric"] == "loss"]
    assert max(losses) - min(losses) < 1e-5


def test_repair_at_an_endpoint_keeps_the_model(digits, bn_models):
    """At alpha = 0 REPAIR's goal is the model's own statistics: nothing changes."""
    model = bn_models[0]
    splits = {"test": (digits.x_test, digits.y_test)}
    plain = interpolation_curve(copy.deepcopy(model), model.state_dict(), bn_models[1].state_dict(), [0], splits)
    repaired = interpolation_curve(copy.deepcopy(model), model.state_dict(), bn_models[1].state_dict(), [0], splits,
                                   correction="repair", norm_inputs=digits.x_train[:300])  # fmt: skip
    assert [r["value"] for r in repaired] == pytest.approx([r["value"] for r in plain], rel=1e-4)


def test_corrections_lower_the_midpoint_loss_of_two_batchnorm_networks(digits, bn_models):
    a, b = bn_models
    splits = {"test": (digits.x_test, digits.y_test)}
    midpoint = {}
    for correction in (None, "reset", "repair"):
        rows = interpolation_curve(copy.deepcopy(a), a.state_dict(), b.state_dict(), [0.5], splits,
                                   correction=correction, norm_inputs=digits.x_train[:500])  # fmt: skip
        midpoint[correction] = next(r["value"] for r in rows if r["metric"] == "loss")
    assert midpoint["reset"] < midpoint[None] and midpoint["repair"] < midpoint[None], midpoint


def test_unknown_correction_is_named():
    model = build_model("mlp", (1, 8, 8), 10, 4, 1)
    with pytest.raises(ValueError, match="'renorm'.*reset, repair"):
        interpolation_curve(model, model.state_dict(), model.state_dict(), [0], {}, correction="renorm",
                            norm_inputs=torch.zeros(1, 1, 8, 8))  # fmt: skip


def test_batchnorm_statistics_pass_their_batch_size_on(bn_models, digits):
    """The batch size bounds memory: the network sees batches of at most that many samples (the statistics are
    the same either way)."""
    model = copy.deepcopy(bn_models[0])
    seen = batch_sizes(model)
    inputs = digits.x_train[:10]
    batched = batchnorm_statistics(model, inputs, batch_size=4)
    assert seen == [4, 4, 2]
    for (mean, std), (whole_mean, whole_std) in zip(batched, batchnorm_statistics(model, inputs), strict=True):
        assert torch.allclose(mean, whole_mean) and torch.allclose(std, whole_std)


def test_bn_reset_averages_over_batches_and_restores_the_momentum(bn_models):
    """Running statistics after a reset are the cumulative mean over batches (momentum None while it runs), the
    layers' own momentum is back afterwards, and the default batch is 4096 samples (5000 inputs: two batches)."""
    inputs = torch.randn(5000, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    default, explicit, other = (copy.deepcopy(bn_models[0]) for _ in range(3))
    momenta = [layer.momentum for layer in batchnorm_layers(default)]
    reset_batchnorm(default, inputs)
    reset_batchnorm(explicit, inputs, batch_size=4096)
    reset_batchnorm(other, inputs, batch_size=2500)
    assert [layer.momentum for layer in batchnorm_layers(default)] == momenta
    for a, b, c in zip(*(batchnorm_layers(m) for m in (default, explicit, other)), strict=True):
        assert torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)
        assert not torch.allclose(a.running_var, c.running_var, rtol=1e-6, atol=0)  # batches weigh alike


def test_output_statistics_that_stop_after_the_last_layer_measure_every_layer(bn_models, digits):
    """``stop=True`` ends each pass after the last of the layers; the earlier layers are still measured."""
    from lmcot.evaluation import output_statistics

    model = bn_models[0]
    layers = batchnorm_layers(model)[:2]
    inputs = digits.x_train[:50]
    stopped = output_statistics(model, layers, inputs, batch_size=20, stop=True)
    full = output_statistics(model, layers, inputs, batch_size=20)
    for (mean, std), (full_mean, full_std) in zip(stopped, full, strict=True):
        assert torch.equal(mean, full_mean) and torch.equal(std, full_std)


def test_a_reset_path_recomputes_statistics_in_batches_of_its_batch_size(bn_models, digits):
    container = copy.deepcopy(bn_models[0])
    seen = batch_sizes(container)
    states = [model.state_dict() for model in bn_models]
    x, y = digits.split("test")
    split = {"test": (x[:40], y[:40])}
    interpolation_curve(container, *states, [0.5], split, batch_size=16, correction="reset", norm_inputs=x[:40])
    assert seen and max(seen) == 16
