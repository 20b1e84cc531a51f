"""Training is reproducible, follows its schedule, stops on divergence, resumes from checkpoints;
models save and load safely."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from lmcot.config import Configuration
from lmcot.design import stream_seed
from lmcot.model_files import load_model, save_model
from lmcot.models import build_model
from lmcot.training import (
    Checkpoint,
    Recipe,
    fit,
    make_optimizer,
    run_key,
    train_configuration,
    train_model,
    train_models,
)


def train(digits, seed, **recipe):
    return train_model(
        digits, "mlp", 16, 2, Recipe(**{"lr": 0.05, "epochs": 2, "batch_size": 64, **recipe}), seed, progress=False
    )


def test_same_seed_gives_bit_identical_weights(digits):
    (first, history_1), (second, history_2) = train(digits, 7), train(digits, 7)
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())
    assert history_1 == history_2


def test_different_seeds_give_different_weights(digits):
    first, second = train(digits, 0)[0], train(digits, 1)[0]
    assert not torch.equal(first.state_dict()["layers.0.weight"], second.state_dict()["layers.0.weight"])


def test_training_learns(digits):
    _, history = train(digits, 0, epochs=5)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > 0.8  # digits is easy; chance is 0.1


def test_schedule_warms_up_then_decays_to_zero():
    recipe = Recipe(lr=1.0, epochs=10, warmup_epochs=2, schedule="cosine")
    factors = [recipe.lr_factor(step, steps_per_epoch=5) for step in range(50)]
    assert factors[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    assert factors[-1] < 0.01
    assert Recipe(lr=1.0, schedule="constant").lr_factor(1000, 5) == 1.0


def test_warm_up_in_steps_replaces_the_warm_up_in_epochs():
    # Ferbach et al.'s schedule: 10 warm-up steps, then cosine over the rest (16 batches x 50 epochs here)
    recipe = Recipe(lr=1.0, epochs=50, warmup_steps=10, warmup_epochs=0, schedule="cosine")
    factors = [recipe.lr_factor(step, steps_per_epoch=16) for step in range(800)]
    assert factors[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert factors[10] == pytest.approx(1.0)
    # halfway through the 790 steps after the warm-up, the cosine is at one half
    assert factors[10 + 395] == pytest.approx(0.5)
    assert factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 789 / 790)))
    # the same warm-up in epochs would be 2 epochs = 32 steps: the step count wins when it is given
    assert Recipe(lr=1.0, epochs=50, warmup_epochs=2).lr_factor(9, 16) == pytest.approx(10 / 32)


def test_divergence_names_the_run(digits):
    with pytest.raises(FloatingPointError, match=r"seed=3: .* at step \d+ \(epoch 1\)"):
        train(digits, 3, lr=1e12, epochs=1)


def test_saved_model_loads_ready_to_use(tmp_path, digits):
    model, history = train(digits, 0)
    config = {"arch": "mlp", "input_shape": list(digits.input_shape), "num_classes": 10, "width": 16, "depth": 2}
    save_model(model, tmp_path / "m.safetensors", config, history[-1])
    loaded = load_model(tmp_path / "m.safetensors")
    assert not loaded.training
    assert torch.equal(loaded(digits.x_test), model(digits.x_test))
    assert json.loads((tmp_path / "m.json").read_text())["metrics"] == history[-1]
    assert load_model(tmp_path / "m.json") is not None  # the sidecar path works too


def test_damaged_models_are_detected_with_the_file_named(tmp_path, digits):
    model, history = train(digits, 0)
    config = {"arch": "mlp", "input_shape": list(digits.input_shape), "num_classes": 10, "width": 16, "depth": 2}
    path = tmp_path / "m.safetensors"
    save_model(model, path, config, history[-1])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match=r"m\.safetensors.*checksum"):
        load_model(path)
    # a sidecar that describes another architecture
    save_model(model, path, {**config, "depth": 3}, history[-1])
    with pytest.raises(ValueError, match=r"m\.safetensors.*cannot load"):
        load_model(path)
    (tmp_path / "m.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"m\.json"):
        load_model(path)


def plain_loop(digits, recipe, seed, width=16, depth=2):
    """The usual PyTorch loop for one model, with the data order train_models documents."""
    torch.manual_seed(seed)
    model = build_model("mlp", digits.input_shape, digits.num_classes, width, depth)
    optimizer = make_optimizer(model.parameters(), recipe)
    order = torch.Generator().manual_seed(seed)
    n, step = len(digits.x_train), 0
    for _ in range(recipe.epochs):
        for batch in torch.randperm(n, generator=order).split(recipe.batch_size):
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * recipe.lr_factor(step, -(-n // recipe.batch_size))
            loss = F.cross_entropy(model(digits.x_train[batch]), digits.y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    return model


# Adam divides by the root of the squared-gradient average, so round-off in a near-zero gradient can
# move a weight by up to lr per step; SGD passes round-off through unamplified.
@pytest.mark.parametrize("optimizer, atol", [("sgd", 1e-6), ("adam", 1e-4)])
def test_stacked_training_matches_each_seed_trained_alone(digits, optimizer, atol):
    recipe = Recipe(
        lr=0.05 if optimizer == "sgd" else 1e-3,
        optimizer=optimizer,
        epochs=3,
        batch_size=100,
        warmup_epochs=1,
        weight_decay=1e-4,
    )
    stacked, _ = train_models(digits, "mlp", 16, 2, recipe, [3, 5, 8, 13], progress=False)
    for seed, model in zip([3, 5, 8, 13], stacked, strict=True):
        alone = plain_loop(digits, recipe, seed)
        for name, value in alone.state_dict().items():
            torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=atol, msg=f"seed {seed} {name}")


class Interrupted(Exception):
    pass


def crash(epoch):
    raise Interrupted


def fresh_models(digits, arch, seeds, width=8, depth=1):
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(build_model(arch, digits.input_shape, digits.num_classes, width, depth))
    return models


@pytest.mark.parametrize("arch", ["mlp", "resnet_bn"])  # stacked training, and separate models with buffers
def test_resumed_training_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, digits, arch):
    recipe, seeds = Recipe(lr=0.05, epochs=4, batch_size=128, optimizer="sgd"), [0, 1]
    whole, whole_histories = fit(fresh_models(digits, arch, seeds), digits, recipe, seeds, progress=False)

    checkpoint = Checkpoint(tmp_path / "ck" / "train.pt", key="run", every=1)

    def crash_after_epoch_2(epoch):
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(
            fresh_models(digits, arch, seeds),
            digits,
            recipe,
            seeds,
            progress=False,
            checkpoint=checkpoint,
            on_epoch_end=crash_after_epoch_2,
        )
    assert torch.load(checkpoint.path, weights_only=True)["epoch"] == 2
    # other initial weights: what is resumed must come from the checkpoint
    resumed, histories = fit(
        fresh_models(digits, arch, [7, 8]), digits, recipe, seeds, progress=False, checkpoint=checkpoint
    )
    assert histories == whole_histories
    for a, b in zip(whole, resumed, strict=True):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key


def test_checkpoints_of_another_run_or_damaged_are_ignored(tmp_path, digits, caplog):
    recipe, seeds = Recipe(lr=0.05, epochs=2, batch_size=128), [0, 1]
    path = tmp_path / "train.pt"
    with pytest.raises(Interrupted):
        fit(
            fresh_models(digits, "mlp", [5, 6]),
            digits,
            recipe,
            seeds,
            progress=False,
            checkpoint=Checkpoint(path, "other run"),
            on_epoch_end=crash,
        )
    whole, _ = fit(fresh_models(digits, "mlp", seeds), digits, recipe, seeds, progress=False)
    for damage in ("another key", "truncated"):
        if damage == "truncated":
            path.write_bytes(path.read_bytes()[:100])
        started, _ = fit(
            fresh_models(digits, "mlp", seeds),
            digits,
            recipe,
            seeds,
            progress=False,
            checkpoint=Checkpoint(path, "this run"),
        )
        assert all(
            torch.equal(a.state_dict()[k], v)
            for a, b in zip(whole, started, strict=True)
            for k, v in b.state_dict().items()
        ), damage
    assert "checkpoint of another run" in caplog.text and "cannot read the checkpoint" in caplog.text
    assert str(path) in caplog.text


@pytest.mark.parametrize("arch", ["rnn", "lstm"])
@pytest.mark.parametrize("input_shape", [(1, 40), (3, 4, 5)])
def test_recurrent_networks_of_several_seeds_run_as_one_with_each_ones_logits(arch, input_shape):
    """stacked_forward (each seed's recurrence in the fused kernel, one after another) gives each model's forward."""
    from torch.func import stack_module_state

    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(build_model(arch, input_shape, 10, 8, 2))
    params, _ = stack_module_state(models)
    x = torch.randn(3, 6, *input_shape)
    logits = models[0].stacked_forward(params, x)
    assert logits.shape == (3, 6, 10)
    for i, model in enumerate(models):
        torch.testing.assert_close(logits[i], model(x[i]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("lstm", [False, True])
def test_a_recurrent_layer_is_torchs_own_with_the_same_weights(lstm):
    """lmcot's layer (one bias, gates as separate tensors) computes what nn.LSTM / nn.RNN compute, values and
    gradients, from the gates' weights stacked in the order i, f, g, o."""
    from lmcot.models.recurrent import recurrent_layer

    torch.manual_seed(0)
    reference = (torch.nn.LSTM if lstm else torch.nn.RNN)(3, 5, batch_first=True)
    x = torch.randn(4, 7, 3)
    w_ih, w_hh = (p.detach().clone().requires_grad_() for p in (reference.weight_ih_l0, reference.weight_hh_l0))
    bias = (reference.bias_ih_l0 + reference.bias_hh_l0).detach().clone().requires_grad_()
    ours = recurrent_layer(x, w_ih, w_hh, bias, lstm)
    theirs, _ = reference(x)
    torch.testing.assert_close(ours, theirs)
    ours.square().sum().backward()
    theirs.square().sum().backward()
    torch.testing.assert_close(w_ih.grad, reference.weight_ih_l0.grad)
    torch.testing.assert_close(w_hh.grad, reference.weight_hh_l0.grad)
    torch.testing.assert_close(bias.grad, reference.bias_ih_l0.grad)


def test_an_lstm_cell_by_hand():
    """One step, one unit, from zero state: c = sig(i) tanh(g), h = sig(o) tanh(c)."""
    from lmcot.models.recurrent import recurrent_layer

    w_ih = torch.tensor([[1.0], [2.0], [3.0], [4.0]])  # gates i, f, g, o of one unit, one input feature
    h = recurrent_layer(torch.tensor([[[0.5]]]), w_ih, torch.zeros(4, 1), torch.zeros(4), lstm=True)
    c = torch.sigmoid(torch.tensor(0.5)) * torch.tanh(torch.tensor(1.5))
    torch.testing.assert_close(h.flatten(), (torch.sigmoid(torch.tensor(2.0)) * torch.tanh(c)).reshape(1))


def test_the_run_key_changes_with_everything_the_weights_depend_on():
    config = Configuration("digits", "mlp", 2, 16, 0.05)
    recipe = {"epochs": 2, "batch_size": 64}
    key = run_key(config, recipe, [0, 1], "cpu", "abc")
    assert key == run_key(Configuration("digits", "mlp", 2, 16, 0.05), dict(recipe), [0, 1], "cpu", "abc")
    others = [
        run_key(Configuration("digits", "mlp", 2, 16, 0.01), recipe, [0, 1], "cpu", "abc"),
        run_key(config, {**recipe, "epochs": 3}, [0, 1], "cpu", "abc"),
        run_key(config, recipe, [0, 2], "cpu", "abc"),
        run_key(config, recipe, [0, 1], "cuda", "abc"),
        run_key(config, recipe, [0, 1], "cpu", "abd"),
    ]
    assert len({key, *others}) == 6


def test_a_trained_configurations_sidecars_rebuild_its_models(tmp_path, digits):
    config = Configuration("digits", "mlp", 2, 16, 0.05)
    recipe = {"epochs": 2, "batch_size": 64}
    trained = train_configuration(config, digits, recipe, [4, 2])
    assert [t.seed for t in trained.seeds] == [4, 2]
    assert [(r["seed"], r["epoch"]) for r in trained.history] == [(4, 1), (4, 2), (2, 1), (2, 2)]
    assert all(list(r)[0] == "seed" for r in trained.history)
    stream = stream_seed(config.name, 4)  # seed 4 of this configuration trains from its own random stream
    alone, history = train_model(digits, "mlp", 16, 2, Recipe(lr=0.05, **recipe), stream, progress=False)
    first = trained.seeds[0]
    assert first.sidecar["seed"] == 4 and first.sidecar["recipe"] == recipe and first.sidecar["lr"] == 0.05
    assert first.sidecar["stream_seed"] == stream
    assert first.metrics == pytest.approx({k: v for k, v in history[-1].items() if k != "epoch"}, rel=1e-4)
    save_model(first.model, tmp_path / "seed4.safetensors", first.sidecar, first.metrics)
    loaded = load_model(tmp_path / "seed4.safetensors")
    assert torch.equal(loaded(digits.x_test), first.model(digits.x_test))
    assert torch.allclose(loaded(digits.x_test), alone(digits.x_test), atol=1e-4)  # each seed as if trained alone


def test_no_two_configurations_share_a_random_stream(digits):
    """Seed 0 of two widths (or two learning rates) starts from other weights and sees the batches in another
    order, so their models are independent samples: with torch seeded by the seed itself, the first 8 rows of the
    wider first layer would be the narrower one's. The same configuration and seed always give the same weights."""
    first = lambda model: next(p for p in model.parameters() if p.dim() == 2)  # noqa: E731

    def initial(width, seed):
        torch.manual_seed(seed)
        return first(build_model("mlp", digits.input_shape, digits.num_classes, width, 2))

    assert torch.equal(initial(16, 0)[:8], initial(8, 0))  # what a shared stream does
    assert not torch.allclose(initial(16, stream_seed("digits-mlp-d2-w16-lr0.05", 0))[:8],
                              initial(8, stream_seed("digits-mlp-d2-w8-lr0.05", 0)), atol=1e-2)  # fmt: skip
    assert not torch.allclose(initial(8, stream_seed("digits-mlp-d2-w8-lr0.1", 0)),
                              initial(8, stream_seed("digits-mlp-d2-w8-lr0.05", 0)), atol=1e-2)  # fmt: skip
    recipe = {"epochs": 1, "batch_size": 64}
    narrow = train_configuration(Configuration("digits", "mlp", 2, 8, 0.05), digits, recipe, [0]).seeds[0].model
    wide = train_configuration(Configuration("digits", "mlp", 2, 16, 0.05), digits, recipe, [0]).seeds[0].model
    assert not torch.allclose(first(wide)[:8], first(narrow), atol=1e-2)
    again = train_configuration(Configuration("digits", "mlp", 2, 8, 0.05), digits, recipe, [0]).seeds[0].model
    assert all(
        torch.equal(a, b) for a, b in zip(narrow.state_dict().values(), again.state_dict().values(), strict=True)
    )
    assert len({stream_seed(c, s, p) for c in ("a", "b") for s in (0, 1) for p in ("train", "fine-tune")}) == 8
