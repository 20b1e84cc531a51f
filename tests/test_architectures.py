"""Every architecture works with the spine: its permutation spec fits it, permutations keep its function,
every alignment method recovers a planted permutation, and it trains reproducibly."""

import pytest
import torch

from lmcot.align.methods import METHODS, align, output_change, permuted_copy
from lmcot.choices import BIAS_AWARE_UNSUPPORTED, HEADED, HEADS_UNSUPPORTED
from lmcot.models import ARCHITECTURES, build_model
from lmcot.permutation import (
    apply_permutations,
    identity_permutations,
    incoming_weights,
    invert_permutations,
    random_permutations,
)
from lmcot.training import Recipe, train_models

SHAPES = {"mnist1d": (1, 40), "digits": (1, 8, 8)}
DATA_METHODS = {"activation_matching", "activation_covariance"}


def heads(arch):
    """Two attention heads for the architectures that have heads, None for the others."""
    return 2 if arch in HEADED else None


def make(arch, shape, width=6, depth=2, seed=0):
    """A model with non-trivial weights (and, with BatchNorm, non-trivial running statistics)."""
    torch.manual_seed(seed)
    model = build_model(arch, shape, 10, width, depth, heads(arch))
    model.train()
    with torch.no_grad():
        model(torch.randn(256, *shape))  # fills BatchNorm statistics; other models ignore train mode
    return model.eval()


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_random_permutation_keeps_the_function(arch, shape, generator):
    model = make(arch, shape)
    spec = model.permutation_spec()
    sizes = spec.sizes(model.state_dict())
    assert set(sizes.values()) == ({6, 12} if arch in HEADED else {6})  # a transformer's MLP is twice as wide
    perms = random_permutations(spec, model.state_dict(), generator)
    x = torch.randn(32, *shape)
    assert output_change(model, perms, x) < 1e-5
    assert not torch.equal(permuted_copy(model, perms).state_dict()[spec.axes[spec.names[0]][0][0]],
                           model.state_dict()[spec.axes[spec.names[0]][0][0]])  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize(
    "method",
    [pytest.param(m, marks=pytest.mark.slow) if m == "ot_sinkhorn" else m for m in sorted(set(METHODS) - {"identity"})],
)  # Sinkhorn on every pair of a transformer's heads takes seconds: in the slow tier
def test_planted_permutation_is_recovered(arch, shape, method, generator):
    model = make(arch, shape, width=8)
    spec = model.permutation_spec()
    planted = random_permutations(spec, model.state_dict(), generator)
    shuffled = permuted_copy(model, planted)
    x = torch.randn(200, *shape)
    if method in HEADS_UNSUPPORTED and arch in HEADED:
        with pytest.raises(ValueError, match="attention head"):
            align(method, model, shuffled, x)
        return
    if method == "cov_weight_matching_with_biases" and arch in BIAS_AWARE_UNSUPPORTED:
        # the architectures listed as unsupported (which check_params refuses early) are exactly those that fail
        with pytest.raises(ValueError, match="one incoming weight matrix and one bias"):
            align(method, model, shuffled, x)
        return
    found = align(method, model, shuffled, x)
    expected = invert_permutations(planted)
    if method in DATA_METHODS:  # units that never vary on the data cannot be told apart
        active = {k: v.std(0) > 1e-6 for k, v in model.hidden_activations(x).items()}
        for name in spec.names:
            assert torch.equal(found[name][active[name]], expected[name][active[name]]), name
    else:
        for name in spec.names:
            assert torch.equal(found[name], expected[name]), name
        restored = apply_permutations(spec, found, shuffled.state_dict())
        assert all(torch.allclose(restored[k], v) for k, v in model.state_dict().items())
    assert output_change(shuffled, found, x) < 1e-5


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_layer_inputs_match_the_incoming_weights(arch, shape):
    """Covariance-aware matching pairs each layer's incoming weights with the inputs they multiply."""
    model = make(arch, shape)
    spec = model.permutation_spec()
    x = torch.randn(16, *shape)
    inputs = model.layer_inputs(x)
    activations = model.hidden_activations(x)
    assert set(inputs) == set(spec.names) == set(activations)
    unpermuted = identity_permutations(spec, model.state_dict())
    for done, name in enumerate(spec.names):
        w = incoming_weights(spec, name, model.state_dict(), unpermuted, solved=spec.names[:done])
        assert inputs[name].shape[1] == w.shape[1], name
        assert activations[name].shape[1] == len(w), name


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet"])
def test_layer_inputs_times_weights_are_the_first_layer_preactivations(arch):
    model = make(arch, (1, 8, 8))
    spec = model.permutation_spec()
    x = torch.randn(4, 1, 8, 8)
    name = spec.names[0]
    w = incoming_weights(spec, name, model.state_dict(), identity_permutations(spec, model.state_dict()), solved=[])
    bias = model.state_dict()[spec.axes[name][1][0]]
    post = torch.relu(model.layer_inputs(x)[name] @ w.T + bias)
    assert torch.allclose(post, model.hidden_activations(x)[name][: len(post)], atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_sequences_are_read_step_by_step(shape):
    from lmcot.models.recurrent import Recurrent

    x = torch.randn(3, *shape)
    seq = Recurrent.sequence(x)
    assert seq.shape == ((3, 40, 1) if len(shape) == 2 else (3, 8, 8))
    assert torch.equal(seq[:, 2], x[:, :, 2] if len(shape) == 2 else x[:, 0, 2])


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_trains_reproducibly(arch, digits):
    recipe = Recipe(lr=0.05, epochs=1, batch_size=128)
    first, history = train_models(digits, arch, 6, 1, recipe, [0, 1], progress=False, heads=heads(arch))
    assert len(history) == 2 and all(h[-1]["train_loss"] < 10 for h in history)
    if arch in ("cnn", "lstm", "resnet_bn", "vit"):
        second, _ = train_models(digits, arch, 6, 1, recipe, [0, 1], progress=False, heads=heads(arch))
        for a, b in zip(first, second, strict=True):
            assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
        assert any(not torch.equal(first[0].state_dict()[k], v) for k, v in first[1].state_dict().items())


def test_lstm_learns_on_digits_rows(digits):
    """Not only runs: an LSTM reading the 8 rows reaches well above chance in a few epochs."""
    recipe = Recipe(lr=0.1, epochs=8, batch_size=64)
    _, (history,) = train_models(digits, "lstm", 32, 1, recipe, [0], progress=False)
    assert history[-1]["test_accuracy"] > 0.5
