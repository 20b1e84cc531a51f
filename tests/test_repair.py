"""REPAIR (Jordan et al. 2023) on networks without normalisation layers: mlp, VGG-style cnn, plain resnet.

The statistics are measured here with forward hooks on modules named by the test, not by the code under test.
"""

import copy

import pytest
import torch
from conftest import batch_sizes, trained_models

from lmcot.align.methods import align, permuted_copy
from lmcot.barrier import interpolation_curve
from lmcot.evaluation import correction_refusal, repair, repair_layers
from lmcot.models import build_model
from lmcot.training import Recipe

# the modules whose output units are permuted, by architecture (width 8, depth 2): the classifier is not one
CORRECTED = {
    "mlp": ["layers.0", "layers.1"],
    "cnn": ["convs.0", "convs.1"],
    "resnet": ["stem.conv", "blocks.0.a.conv", "blocks.0.b.conv", "blocks.1.a.conv", "blocks.1.b.conv"],
}


@torch.no_grad()
def channel_stats(model, names, inputs):
    """Per named module, the ``(channels,)`` mean and population std of its output over samples and positions."""
    outputs = {}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: outputs.__setitem__(n, o)) for n in names]
    model.eval()
    model(inputs)
    for hook in hooks:
        hook.remove()
    stats = []
    for n in names:
        flat = outputs[n].transpose(0, 1).flatten(1).double()  # (channels, samples * positions)
        stats.append((flat.mean(1), flat.std(1, correction=0)))
    return stats


@pytest.fixture(scope="module")
def aligned_pairs(digits, trained_pair):
    """Per architecture, model A and model B aligned to A by weight matching."""
    recipe = Recipe(lr=0.05, epochs=2, batch_size=64)
    pairs = {"mlp": trained_pair}
    for arch in ("cnn", "resnet"):
        pairs[arch] = trained_models(digits, arch, 8, 2, recipe, (0, 1))
    return {arch: (a, permuted_copy(b, align("weight_matching", a, b))) for arch, (a, b) in pairs.items()}


def repaired(model_a, model_b, alpha, inputs, batch_size=4096):
    """The container that interpolation_curve leaves at ``alpha`` after REPAIR (no split is evaluated)."""
    container = copy.deepcopy(model_a)
    interpolation_curve(container, model_a.state_dict(), model_b.state_dict(), [alpha], {}, batch_size,
                        correction="repair", norm_inputs=inputs)  # fmt: skip
    return container


@pytest.mark.parametrize("batch_size", [4096, 128])  # one forward pass, and one pass over 3 batches per layer
@pytest.mark.parametrize("alpha", [0.3, 0.5])
@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet"])
def test_repair_gives_every_channel_the_interpolated_statistics(digits, aligned_pairs, arch, alpha, batch_size):
    model_a, model_b = aligned_pairs[arch]
    inputs = digits.x_train[:300]
    names = CORRECTED[arch]
    after = channel_stats(repaired(model_a, model_b, alpha, inputs, batch_size), names, inputs)
    stats_a, stats_b = channel_stats(model_a, names, inputs), channel_stats(model_b, names, inputs)
    for name, (mean, std), (mean_a, std_a), (mean_b, std_b) in zip(names, after, stats_a, stats_b, strict=True):
        goal_mean, goal_std = (1 - alpha) * mean_a + alpha * mean_b, (1 - alpha) * std_a + alpha * std_b
        assert torch.allclose(mean, goal_mean, atol=1e-4 * goal_std.max()), name
        assert torch.allclose(std, goal_std, rtol=1e-4), name


def test_repair_corrects_the_permuted_linear_and_conv_modules_only():
    for arch, names in CORRECTED.items():
        model = build_model(arch, (1, 8, 8), 10, 8, 2)
        modules = dict(model.named_modules())
        assert repair_layers(model) == [modules[n] for n in names], arch
    model = build_model("resnet_bn", (1, 8, 8), 10, 8, 2)
    assert all(isinstance(m, torch.nn.BatchNorm2d) for m in repair_layers(model)) and len(repair_layers(model)) == 5


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet"])
def test_repair_at_the_endpoints_keeps_the_models(digits, aligned_pairs, arch):
    model_a, model_b = aligned_pairs[arch]
    splits = {"train": (digits.x_train, digits.y_train), "test": (digits.x_test, digits.y_test)}
    states = model_a.state_dict(), model_b.state_dict()
    plain = interpolation_curve(copy.deepcopy(model_a), *states, [0, 1], splits)
    fixed = interpolation_curve(copy.deepcopy(model_a), *states, [0, 1], splits, correction="repair",
                                norm_inputs=digits.x_train[:300])  # fmt: skip
    assert [r["value"] for r in fixed] == pytest.approx([r["value"] for r in plain], rel=1e-4, abs=1e-6)


def test_repair_undoes_the_variance_collapse_of_two_aligned_mlps(digits, aligned_pairs):
    """The plain midpoint's channels are narrower than the interpolated goal (variance collapse); REPAIR
    restores them, and the midpoint's train loss drops."""
    model_a, model_b = aligned_pairs["mlp"]
    inputs, names = digits.x_train[:500], CORRECTED["mlp"]
    splits = {"train": (digits.x_train, digits.y_train)}
    states = model_a.state_dict(), model_b.state_dict()
    plain_model = copy.deepcopy(model_a)
    plain = interpolation_curve(plain_model, *states, [0.5], splits)
    fixed = interpolation_curve(copy.deepcopy(model_a), *states, [0.5], splits, correction="repair",
                                norm_inputs=inputs)  # fmt: skip
    loss = {
        name: next(r["value"] for r in rows if r["metric"] == "loss")
        for name, rows in [("plain", plain), ("repair", fixed)]
    }
    assert loss["repair"] < loss["plain"] - 0.02, loss
    stats = [channel_stats(model, names, inputs) for model in (plain_model, model_a, model_b)]
    for name, (_, std), (_, std_a), (_, std_b) in zip(names, *stats, strict=True):
        ratio = std / ((std_a + std_b) / 2)
        assert ratio.mean() < 0.95 and (ratio < 1).float().mean() > 0.9, (name, ratio)


@pytest.mark.parametrize("arch", ["rnn", "lstm"])
def test_repair_is_refused_for_recurrent_networks(digits, arch):
    model = build_model(arch, (1, 8, 8), 10, 8, 1)
    assert repair_layers(model) == []
    why = correction_refusal(model, "repair")
    assert "neither" in why and "recurrent" in why
    with pytest.raises(ValueError, match="REPAIR.*(RNN|LSTM) has neither"):
        interpolation_curve(model, model.state_dict(), model.state_dict(), [0.5], {}, correction="repair",
                            norm_inputs=digits.x_train[:10])  # fmt: skip


def test_which_corrections_apply_to_which_architecture():
    applies = {
        arch: [c for c in ("reset", "repair") if correction_refusal(build_model(arch, (1, 8, 8), 10, 4, 1), c) is None]
        for arch in ("mlp", "cnn", "resnet", "resnet_bn", "rnn", "lstm")
    }
    assert applies == {"mlp": ["repair"], "cnn": ["repair"], "resnet": ["repair"], "resnet_bn": ["reset", "repair"],
                       "rnn": [], "lstm": []}  # fmt: skip
    with pytest.raises(ValueError, match="no BatchNorm"):
        model = build_model("mlp", (1, 8, 8), 10, 4, 1)
        interpolation_curve(model, model.state_dict(), model.state_dict(), [0], {}, correction="reset",
                            norm_inputs=torch.zeros(1, 1, 8, 8))  # fmt: skip


def test_repair_refuses_a_layer_without_bias():
    """The shift needs a bias; adding one would change the state dict the path interpolates."""
    model = build_model("mlp", (1, 8, 8), 10, 4, 1)
    model.layers[0].bias = None
    goal = [(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64))]
    with pytest.raises(ValueError, match="needs a weight and a bias"):
        repair(model, goal, torch.randn(20, 1, 8, 8))


def test_a_reset_without_batchnorm_is_refused_naming_the_model():
    assert correction_refusal(build_model("mlp", (4,), 2, 4, 1), "reset") == (
        "BN reset recomputes BatchNorm statistics and MLP has no BatchNorm layer"
    )
    assert correction_refusal(build_model("resnet_bn", (1, 8, 8), 2, 4, 1), "reset") is None


def test_repair_is_refused_for_a_transformer_and_only_repair():
    """A ViT's Linear layers act on (batch, tokens, channels), not on channels at axis 1: REPAIR is refused in
    those words; BN reset is refused for it as for any network without BatchNorm."""
    vit = build_model("vit", (1, 8, 8), 10, 8, 1, 2)
    assert correction_refusal(vit, "repair") == (
        "REPAIR measures each channel's statistics on axis 1, and ViT's Linear layers act on "
        "(batch, tokens, channels): a transformer is not corrected"
    )
    assert correction_refusal(vit, "reset") == (
        "BN reset recomputes BatchNorm statistics and ViT has no BatchNorm layer"
    )


def test_repair_checks_the_goal_count_and_passes_its_batch_size_on(digits, trained_pair):
    model = copy.deepcopy(trained_pair[0])  # an MLP of 2 hidden layers of 24 units
    inputs = digits.x_train[:10]
    goal = [(torch.zeros(24, dtype=torch.float64), torch.ones(24, dtype=torch.float64))]
    with pytest.raises(ValueError, match=r"^REPAIR: 1 goal statistics for 2 layers$"):
        repair(model, goal, inputs)
    seen = batch_sizes(model)
    repair(model, goal * 2, inputs, batch_size=4)
    assert seen and max(seen) == 4  # every pass in batches of at most 4
