"""The plumbing of ``lmcot.any_network`` on tiny networks, message by message: a module run twice gives its tensors
concatenated, a model with its own spec is kept as it is, architectures are built by name or import path, and every
bad checkpoint, tensor file, architecture or unsupported method gets the one line that says what is wrong and what
would be valid."""

import argparse

import pytest
import torch
from torch import nn

from lmcot.any_network import (
    InferredSpec,
    LayerInputs,
    ProducerOutputs,
    UnknownArchitectureError,
    build_architecture,
    infer_num_classes,
    layer_input_modules,
    load_network,
    load_state_into,
    module_tensors,
    read_state_dict,
    read_tensor,
    stating_modules,
    with_inferred_spec,
    with_spec,
)
from lmcot.errors import DamagedFileError, MissingFileError, UnsupportedModelError
from lmcot.models import build_model
from lmcot.models.transformer import SelfAttention
from lmcot.spec_inference import infer_spec

WEIGHTS_ONLY = "give a file saved with torch.save(model.state_dict())"


class Twice(nn.Module):
    """One Linear run twice, then another run once."""

    def __init__(self):
        super().__init__()
        self.shared, self.head = nn.Linear(2, 2), nn.Linear(2, 3)

    def forward(self, x):
        return self.head(self.shared(self.shared(x)))


def test_a_module_run_twice_gives_both_outputs_along_the_batch_axis():
    torch.manual_seed(0)
    model, x = Twice(), torch.randn(4, 2)
    got = module_tensors(model, {"s": ("shared", "output"), "h": ("head", "output"), "i": ("head", "input")}, x)
    with torch.no_grad():
        once = model.shared(x)
        assert torch.equal(got["s"], torch.cat([once, model.shared(once)]))
        assert torch.equal(got["h"], model(x))
        assert torch.equal(got["i"], model.shared(once))


def test_a_model_with_its_own_spec_is_kept_in_eval_mode():
    model = build_model("mlp", (4,), num_classes=2, width=3, depth=1).train()
    assert with_spec(model, torch.zeros(1, 4)) is model
    assert not model.training


def test_a_permutation_stated_by_a_module_without_hidden_activations_is_refused():
    model = Twice()
    with pytest.raises(UnsupportedModelError) as error:
        ProducerOutputs(model, ["shared.qk"], {"shared.qk": "shared"})(torch.zeros(1, 2))
    assert str(error.value) == (
        "hidden activations (activation matching, activation covariance): permutation 'shared.qk' is stated by "
        "Linear 'shared', which has no hidden_activations(x, prefix) giving its units' activations; use a method "
        "that reads weights only (weight_matching)"
    )
    with pytest.raises(UnsupportedModelError) as error:
        ProducerOutputs(model, ["shared[0:1]"])(torch.zeros(1, 2))
    assert str(error.value) == (
        "hidden activations (activation matching, activation covariance): permutation 'shared[0:1]' is no module's "
        "output (units inside nn.MultiheadAttention, or a section of a layer's outputs that a split cuts), which "
        "hooks cannot read; use a method that reads weights only (weight_matching)"
    )


def test_layer_inputs_with_the_units_own_state_are_refused():
    with pytest.raises(UnsupportedModelError) as error:
        LayerInputs(Twice(), {"shared": "shared"})(torch.zeros(1, 2), with_state=True)
    assert str(error.value) == (
        "layer inputs with the units' own outputs (covariance-aware matching of units that read themselves through "
        "a square weight): hooks give a layer's input, not that state; use recurrent_iterations=0 or weight_matching"
    )


def test_architectures_by_torchvision_name_or_import_path():
    assert build_architecture("resnet18").fc.out_features == 1000  # torchvision's default classes
    assert build_architecture("resnet18", num_classes=7).fc.out_features == 7
    assert isinstance(build_architecture("torch.nn:Identity"), nn.Identity)
    with pytest.raises(UnknownArchitectureError) as error:  # a detection model is no classifier
        build_architecture("fasterrcnn_resnet50_fpn")
    message = str(error.value)
    assert message.startswith(
        "unknown arch 'fasterrcnn_resnet50_fpn': valid are 'package.module:function' or a torchvision model: "
        "alexnet, convnext_base, convnext_large, "
    )
    assert message.endswith(", wide_resnet50_2")


@pytest.mark.parametrize(
    "arch, message",
    [
        (
            "torch.nn:Identity:extra",
            "arch 'torch.nn:Identity:extra': cannot import 'Identity:extra' from module 'torch.nn' (module "
            "'torch.nn' has no attribute 'Identity:extra'); give an importable 'package.module:function' that "
            "returns the model",
        ),
        ("math:pi", "arch 'math:pi': calling it with no arguments failed ('float' object is not callable); "
         "give a function that builds the model"),
        ("builtins:dict", "arch 'builtins:dict': returned dict, not a torch.nn.Module"),
    ],
)  # fmt: skip
def test_an_architecture_that_builds_no_model_is_named(arch, message):
    with pytest.raises(UnknownArchitectureError) as error:
        build_architecture(arch)
    assert str(error.value) == message


def test_state_dict_files_that_cannot_be_read_are_named(tmp_path):
    path = tmp_path / "net.pt"
    with pytest.raises(MissingFileError) as error:
        read_state_dict(path)
    assert str(error.value) == f"{path}: no such file; {WEIGHTS_ONLY.replace('a file', 'a state dict')}"
    expected = {
        b"": "EOFError",  # an empty message: the error's type names it
        b"not a checkpoint": "Weights only load failed",
    }
    for content, reason in expected.items():
        path.write_bytes(content)
        with pytest.raises(DamagedFileError) as error:
            read_state_dict(path)
        assert str(error.value) == (
            f"{path}: cannot read it as a PyTorch state dict ({reason}): not a torch.save file, or it pickles "
            f"objects other than tensors; {WEIGHTS_ONLY}"
        )
    # a training script's checkpoint that pickles its arguments: refused, since unpickling runs code
    torch.save({"state_dict": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(DamagedFileError, match=r"\(Weights only load failed\)"):
        read_state_dict(path)
    torch.save([torch.ones(2)], path)
    with pytest.raises(DamagedFileError) as error:
        read_state_dict(path)
    assert str(error.value) == f"{path}: holds list, not a state dict of tensors; {WEIGHTS_ONLY}"


def test_input_tensor_files_are_checked_against_the_model_input(tmp_path):
    path = tmp_path / "x.pt"
    with pytest.raises(MissingFileError) as error:
        read_tensor(path, (3, 2))
    assert str(error.value) == f"{path}: no such file; give a tensor of inputs saved with torch.save"
    torch.save(torch.ones(1, 3, 2, dtype=torch.float64), path)
    one = read_tensor(path, (3, 2))  # a single sample is enough
    assert one.dtype == torch.float32 and one.shape == (1, 3, 2)
    cases = [
        (torch.ones(4, 2, 3), "[4, 2, 3]"),
        (torch.ones(0, 3, 2), "[0, 3, 2]"),
        ({"x": torch.ones(4, 3, 2)}, "dict"),
        (b"not a tensor", "nothing that torch.load reads"),
    ]
    for content, found in cases:
        path.write_bytes(content) if isinstance(content, bytes) else torch.save(content, path)
        with pytest.raises(DamagedFileError) as error:
            read_tensor(path, (3, 2))
        assert (
            str(error.value) == f"{path}: holds {found}, not a tensor of inputs (samples, 3, 2) saved with torch.save"
        )
    torch.save(argparse.Namespace(x=1), path)  # pickles an object: not loaded, since unpickling runs code
    with pytest.raises(DamagedFileError, match="holds nothing that torch.load reads"):
        read_tensor(path, (3, 2))


def test_the_classes_are_the_rows_of_the_last_weight_with_two_axes():
    state = {"conv.weight": torch.ones(6, 3, 1, 1), "fc.weight": torch.ones(10, 6), "fc.bias": torch.ones(10)}
    assert infer_num_classes(state) == 10
    assert infer_num_classes(state | {"norm.weight": torch.ones(7), "queue": torch.ones(5, 6)}) == 10
    with pytest.raises(ValueError, match=r"^no matrix in the state dict$"):
        infer_num_classes({"norm.weight": torch.ones(7)})


def test_a_state_dict_that_does_not_fit_names_the_first_keys():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 4))  # 0.weight, 0.bias, 1.weight, 1.bias
    own = model.state_dict()
    cases = [
        ({}, "4 missing: 0.weight, 0.bias, 1.weight and 1 more"),
        ({"0.weight": own["0.weight"], "extra": torch.ones(1)},
         "3 missing: 0.bias, 1.weight, 1.bias; 1 unexpected: extra"),
        (own | {"0.weight": torch.ones(5, 2), "1.bias": torch.ones(1)},
         "2 wrong shape (file vs model): 0.weight [5, 2] vs [3, 2], 1.bias [1] vs [4]"),
    ]  # fmt: skip
    for state, problems in cases:
        with pytest.raises(DamagedFileError) as error:
            load_state_into(model, state, "net.pt", "tiny")
        assert str(error.value) == (
            f"net.pt: the state dict does not fit arch 'tiny' ({problems}); "
            "give the architecture the checkpoint was saved from"
        )
    new = {k: torch.full_like(v, 0.5) for k, v in own.items()}
    load_state_into(model, new, "net.pt", "tiny")
    assert all(torch.equal(v, new[k]) for k, v in model.state_dict().items())


def test_a_loading_error_is_named_by_its_first_sentence(tmp_path, monkeypatch):
    path = tmp_path / "net.pt"
    path.write_bytes(b"anything")

    def fail(*args, **kwargs):
        raise RuntimeError("Unreadable record X.\nMore detail. And more.")

    monkeypatch.setattr(torch, "load", fail)
    with pytest.raises(DamagedFileError) as error:
        read_state_dict(path)
    assert str(error.value).startswith(f"{path}: cannot read it as a PyTorch state dict (Unreadable record X): ")


@pytest.mark.parametrize("state, held", [({}, "dict"), ({"w": 1}, "dict"), ({"model": {}}, "dict")])
def test_a_dict_that_holds_no_tensors_is_no_state_dict(tmp_path, state, held):
    path = tmp_path / "net.pt"
    torch.save(state, path)
    with pytest.raises(DamagedFileError) as error:
        read_state_dict(path)
    assert str(error.value) == f"{path}: holds {held}, not a state dict of tensors; {WEIGHTS_ONLY}"


def test_a_file_without_an_architecture_must_be_an_lmcot_model_file(tmp_path):
    with pytest.raises(UnknownArchitectureError) as error:
        load_network(tmp_path / "net.pt")
    assert str(error.value) == (
        f"{tmp_path / 'net.pt'}: not an lmcot model file (.safetensors with its .json sidecar); for a plain state "
        "dict give its arch (a torchvision model name or 'package.module:function')"
    )
    with pytest.raises(MissingFileError):  # a sidecar's path is an lmcot model file's: read as one
        load_network(tmp_path / "net.json")


def test_a_state_dict_without_a_matrix_loads_into_the_default_classes(tmp_path):
    path = tmp_path / "net.pt"
    torch.save({"bn1.weight": torch.ones(64)}, path)  # no classifier to count classes from: 1000 by default
    with pytest.raises(DamagedFileError, match=r"does not fit arch 'resnet18' \(\d+ missing: conv1.weight, bn1.bias"):
        load_network(path, "resnet18")


class WithoutInputs(SelfAttention):
    """An attention that states its symmetry but gives no ``layer_inputs``."""

    @property
    def layer_inputs(self):
        raise AttributeError("layer_inputs")


def attention_stack(attention=SelfAttention) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), attention(8, 2), attention(8, 2), nn.Linear(8, 2))


def test_every_module_that_states_its_symmetry_owns_its_permutations():
    model = attention_stack()
    spec = infer_spec(model, torch.randn(2, 3, 4))
    assert stating_modules(model, spec) == {"1.qk": "1", "1.vo": "1", "2.qk": "2", "2.vo": "2"}
    inputs = {"0": "0", "1.qk": "1", "1.vo": "1", "1": "1.o", "2.qk": "2", "2.vo": "2", "2": "2.o"}  # no residual
    assert layer_input_modules(model, spec) == (inputs, None)


def test_layer_inputs_are_refused_where_a_module_or_a_convolution_cannot_give_them():
    model = attention_stack(WithoutInputs)
    modules, why = layer_input_modules(model, infer_spec(model, torch.randn(2, 3, 4)))
    assert modules is None and why.startswith("permutation '1.qk' has 2 incoming weight matrices (1.q.weight, ")
    model = nn.Sequential(nn.Conv2d(3, 4, 3, dilation=2, padding=2), nn.ReLU(), nn.Conv2d(4, 2, 1))
    assert layer_input_modules(model, infer_spec(model, torch.randn(2, 3, 6, 6))) == (
        None,
        "permutation '0': Conv2d '0' has dilation (2, 2), 1 groups, padding (2, 2) (zeros); only dilation 1, one "
        "group and numeric zero padding are unfolded",
    )


def test_the_model_given_is_left_as_it_was():
    model, x = attention_stack(), torch.randn(2, 3, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inferred = with_inferred_spec(model, x)
    with torch.no_grad():
        inferred[0].weight.add_(1.0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not hasattr(model, "permutation_spec") or not isinstance(model.permutation_spec, InferredSpec)
