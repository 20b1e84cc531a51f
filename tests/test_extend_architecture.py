"""A new architecture needs one class and one registry line: the generic machinery (training, alignment,
fusion, dimensions, barriers) then works on it unchanged. Shown on a one-hidden-layer network defined here."""

import math

import pytest
import torch
from torch import nn

from lmcot.align.methods import align, output_change, permuted_copy
from lmcot.barrier import barrier_summary, interpolation_curve
from lmcot.choices import HEADED
from lmcot.dimension import model_dimensions
from lmcot.evaluation import evaluate
from lmcot.fusion import fuse
from lmcot.models import ARCHITECTURES, build_model
from lmcot.models.base import Architecture, Stackable
from lmcot.permutation import PermutationSpec, chain_spec
from lmcot.training import Recipe, train_models


class Tiny(nn.Module):
    """One hidden ReLU layer of ``width`` units (``depth`` is ignored)."""

    def __init__(self, input_shape, num_classes: int, width: int, depth: int):
        super().__init__()
        self.hidden = nn.Linear(math.prod(input_shape), width)
        self.out = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x.flatten(1))))

    def permutation_spec(self) -> PermutationSpec:
        return chain_spec(["hidden", "out"])

    def hidden_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"P0": torch.relu(self.hidden(x.flatten(1)))}

    def layer_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"P0": x.flatten(1)}


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, "tiny", Tiny)
    return "tiny"


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(300, 1, 8, 8, generator=g), torch.randint(0, 10, (300,), generator=g)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_registered_architecture_meets_the_protocol(arch):
    model = build_model(arch, (1, 8, 8), 10, 4, 1, 2 if arch in HEADED else None)
    assert isinstance(model, Architecture)
    assert isinstance(model, Stackable) == (arch in ("mlp", "rnn", "lstm"))


def test_a_registered_architecture_is_built_and_meets_the_protocol(tiny):
    torch.manual_seed(0)
    model = build_model(tiny, (1, 8, 8), 10, 16, 1)
    assert type(model) is Tiny and isinstance(model, Architecture) and not isinstance(model, Stackable)
    assert not isinstance(nn.Linear(2, 2), Architecture)  # the check is not vacuous
    x = torch.randn(5, 1, 8, 8)
    assert model(x).shape == (5, 10)
    assert {k: v.shape for k, v in model.hidden_activations(x).items()} == {"P0": (5, 16)}
    assert {k: v.shape for k, v in model.layer_inputs(x).items()} == {"P0": (5, 64)}
    assert set(model.permutation_spec().sizes(model.state_dict()).values()) == {16}


@pytest.mark.parametrize("method", ["weight_matching", "activation_matching", "cov_weight_matching"])
def test_alignment_keeps_its_function(tiny, data, method):
    x, _ = data
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(build_model(tiny, (1, 8, 8), 10, 16, 1))
    perms = align(method, *models, x)
    assert output_change(models[1], perms, x) < 1e-5
    assert any(not torch.equal(p, torch.arange(16)) for p in perms.values())


def test_trains_aligns_fuses_and_interpolates(tiny, digits):
    recipe = Recipe(lr=0.05, epochs=2, batch_size=128)
    (model_a, model_b), history = train_models(digits, tiny, 16, 1, recipe, [0, 1], progress=False)
    assert all(h[-1]["train_accuracy"] > 0.5 for h in history)

    perms = align("weight_matching", model_a, model_b)
    assert output_change(model_b, perms, digits.x_test) < 1e-5
    aligned = permuted_copy(model_b, perms)

    container = build_model(tiny, digits.input_shape, digits.num_classes, 16, 1)
    split = digits.split("test")
    for correction in (None, "repair"):
        rows = interpolation_curve(
            container, model_a.state_dict(), aligned.state_dict(), [0.0, 0.5, 1.0], {"test": split},
            correction=correction, norm_inputs=digits.x_train,
        )  # fmt: skip
        losses = [r["value"] for r in rows if r["metric"] == "loss"]
        assert losses[0] == pytest.approx(evaluate(model_a, *split)["loss"], rel=1e-5)
        assert losses[2] == pytest.approx(evaluate(model_b, *split)["loss"], rel=1e-5)
        assert math.isfinite(barrier_summary([0.0, 0.5, 1.0], losses)["barrier"])

    fused = fuse([model_a, model_b], build_model(tiny, digits.input_shape, digits.num_classes, 16, 1))
    assert type(fused) is Tiny and math.isfinite(evaluate(fused, *split)["loss"])
    rows = model_dimensions(model_a, digits.x_train[:200])
    assert {r["layer"] for r in rows} == {"P0"}
