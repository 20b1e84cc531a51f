"""infer_spec reads the permutation spec from the torch.fx graph: the same groups as the hand-written specs,
an order layer-by-layer alignment can walk, a spec whose permutations keep the function (torchvision's
ResNet-18 too), and a refusal that names the node for anything it cannot reason about."""

import copy

import pytest
import torch
from cli_networks import seeded
from torch import nn
from torch.nn import functional as F
from torchvision.models import resnet18, vgg11_bn

from lmcot.choices import HEADED
from lmcot.errors import UserError
from lmcot.models import ARCHITECTURES, build_model
from lmcot.permutation import apply_permutations, random_permutations, unit_parameters
from lmcot.spec_inference import SpecInferenceError, infer_spec

SHAPES = {"mnist1d": (1, 40), "digits": (1, 8, 8)}
TRACEABLE = ["cnn", "mlp", "resnet", "resnet_bn", "vit"]
UNTRACEABLE = sorted(set(ARCHITECTURES) - set(TRACEABLE))  # the recurrent ones branch on the input's rank


def make(arch, shape, width=6, depth=2):
    """A model with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    model = build_model(arch, shape, 10, width, depth, 2 if arch in HEADED else None).train()
    with torch.no_grad():
        model(torch.randn(256, *shape))
    return model.eval()


def groups(spec):
    return {frozenset(pairs) for pairs in spec.axes.values()}


def assert_input_to_output(spec):
    """Every permutation's units have incoming tensors whose other axes are earlier permutations'."""
    for i, name in enumerate(spec.names):
        inputs, _ = unit_parameters(spec, name, solved=spec.names[:i])
        assert inputs, name


def assert_function_kept(model, spec, x, generator):
    state = model.state_dict()
    perms = random_permutations(spec, state, generator)
    permuted = copy.deepcopy(model)
    permuted.load_state_dict(apply_permutations(spec, perms, state))
    with torch.no_grad():
        assert torch.allclose(model(x), permuted(x), atol=1e-5)
    assert any(not torch.equal(state[k], v) for k, v in permuted.state_dict().items())  # the weights moved


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("arch", TRACEABLE)
def test_same_groups_as_the_hand_written_spec(arch, shape):
    model = make(arch, shape)
    spec = infer_spec(model, torch.randn(2, *shape))
    assert groups(spec) == groups(model.permutation_spec())
    assert_input_to_output(spec)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("arch", TRACEABLE)
def test_inferred_permutations_keep_the_function(arch, shape, generator):
    model = make(arch, shape)
    spec = infer_spec(model, torch.randn(2, *shape))
    assert_function_kept(model, spec, torch.randn(16, *shape), generator)


def test_a_transformer_is_inferred_whole_heads_and_all():
    """The attention states its own symmetry (a leaf of the trace): the inferred spec is the hand-written one, the
    same names in the same order, the same head groups, and its permutations (head swaps included) keep the
    function. The patches' reshape and permute, the position embedding and the mean over tokens are read too."""
    for shape in SHAPES.values():
        model = make("vit", shape, width=8)
        spec, by_hand = infer_spec(model, torch.randn(2, *shape)), model.permutation_spec()
        assert spec.names == by_hand.names and spec.groups == by_hand.groups
        assert {k: set(v) for k, v in spec.axes.items()} == {k: set(v) for k, v in by_hand.axes.items()}
        assert {heads for heads, _ in spec.groups.values()} == {"blocks.0.attn.heads", "blocks.1.attn.heads"}


class Transposed(nn.Module):
    """Channels moved last for a Linear and back: the transposes carry the permuted axis."""

    def __init__(self):
        super().__init__()
        self.conv, self.mix, self.out = nn.Conv1d(2, 6, 3), nn.Linear(6, 6), nn.Conv1d(6, 3, 1)

    def forward(self, x):
        h = torch.relu(self.conv(x)).transpose(1, 2)  # (batch, positions, 6)
        h = torch.relu(self.mix(h)).permute(0, 2, 1)  # (batch, 6, positions)
        return self.out(h).mean(2)


def test_transposes_move_the_permuted_axes(generator):
    model, x = Transposed().eval(), torch.randn(4, 2, 9)
    spec = infer_spec(model, x)
    assert groups(spec) == {
        frozenset({("conv.weight", 0), ("conv.bias", 0), ("mix.weight", 1)}),
        frozenset({("mix.weight", 0), ("mix.bias", 0), ("out.weight", 1)}),
    }
    assert_function_kept(model, spec, x, generator)


def test_names_are_the_producing_modules_from_input_to_output():
    assert infer_spec(make("resnet", (1, 8, 8)), torch.randn(2, 1, 8, 8)).names == [
        "stem.conv",
        "blocks.0.a.conv",
        "blocks.1.a.conv",
    ]
    assert infer_spec(make("mlp", (1, 40)), torch.randn(2, 1, 40)).names == ["layers.0", "layers.1"]


@pytest.mark.parametrize("arch", UNTRACEABLE)
def test_recurrent_architectures_are_refused_naming_the_fused_kernel(arch):
    """lmcot's rnn and lstm branch on the input's rank, so they trace on the example only; there they call
    PyTorch's fused recurrent kernel, which returns a tuple the inference cannot look into."""
    kernel = {"rnn": "rnn_tanh", "lstm": "lstm"}[arch]
    with pytest.raises(
        SpecInferenceError,
        match=rf"at node '{kernel}' \(function {kernel}\): it returns no single tensor \(a number, or a tuple of",
    ):
        infer_spec(make(arch, (1, 8, 8)), torch.randn(2, 1, 8, 8))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        if h.sum() > 0:  # control flow on a tensor's value: no graph holds for every input
            h = -h
        return self.b(h)


def test_control_flow_on_tensor_values_is_refused_even_on_the_example():
    with pytest.raises(SpecInferenceError, match=r"its control flow depends on tensor values \(bool\(\) of node"):
        infer_spec(DataDependent(), torch.randn(2, 3))


def test_torchvision_resnet18(generator):
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    spec = infer_spec(model, x)
    convs = {name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    writers = {name: sorted(p[: -len(".weight")] for p, axis in pairs if axis == 0 and p[: -len(".weight")] in convs)
               for name, pairs in spec.axes.items()}  # fmt: skip
    streams = {  # the residual streams: every convolution that writes to one joins its permutation
        "conv1": ["conv1", "layer1.0.conv2", "layer1.1.conv2"],
        **{f"layer{k}.0.conv2": [f"layer{k}.0.{c}" for c in ("conv2", "downsample.0")] + [f"layer{k}.1.conv2"]
           for k in (2, 3, 4)},
    }  # fmt: skip
    inner = {f"layer{k}.{b}.conv1": [f"layer{k}.{b}.conv1"] for k in (1, 2, 3, 4) for b in (0, 1)}  # in the blocks
    assert writers == streams | inner
    assert len(spec.names) == 12
    assert ("fc.weight", 1) in spec.axes["layer4.0.conv2"] and ("fc.weight", 0) not in spec.acting_on("fc.weight")
    assert_input_to_output(spec)
    assert_function_kept(model, spec, x, generator)


def random_vgg11_bn(seed: int = 0) -> nn.Module:
    """VGG-11 with BatchNorm for 10 classes, random positive BatchNorm statistics (so that they matter), eval mode."""
    return seeded(lambda: vgg11_bn(weights=None, num_classes=10), seed)


@pytest.mark.slow
def test_torchvision_vgg11_bn_flattens_channels_into_blocks(generator):
    """VGG flattens 512 channels of 7 x 7 into its classifier: the last convolution's permutation acts on that
    Linear's input axis in blocks of 49."""
    model = random_vgg11_bn()
    spec = infer_spec(model, torch.randn(2, 3, 32, 32))
    convs = [f"features.{i}" for i in (0, 4, 8, 11, 15, 18, 22, 25)]
    assert spec.names == [*convs, "classifier.0", "classifier.3"]
    assert spec.blocks == {("classifier.0.weight", 1): 49}
    assert ("classifier.0.weight", 1) in spec.axes["features.25"]
    assert set(spec.axes["features.25"]) == {("features.25.weight", 0), ("features.25.bias", 0)} | {
        (f"features.26.{p}", 0) for p in ("weight", "bias", "running_mean", "running_var")
    } | {("classifier.0.weight", 1)}
    assert spec.sizes(model.state_dict())["features.25"] == 512
    assert_input_to_output(spec)
    assert_function_kept(model, spec, torch.randn(2, 3, 32, 32), generator)
    assert_function_kept(model, spec, torch.randn(2, 3, 64, 64), generator)  # a 2 x 2 map: the 7 x 7 blocks vary


class Merges(nn.Module):
    """Convolutions whose channels are flattened with their positions, as ``op`` says."""

    def __init__(self, op):
        super().__init__()
        self.op = op
        self.a, self.b, self.head = nn.Conv1d(3, 4, 1), nn.Conv1d(3, 6, 1), nn.Linear(24, 2)

    def forward(self, x):  # x: (batch, 3, 6)
        h = self.a(x).flatten(1)  # (batch, 4 * 6): blocks of 6
        if self.op == "conflict":  # (batch, 6 * 4): blocks of 4 of other units
            h = h + self.b(F.adaptive_avg_pool1d(x, 4)).flatten(1)
        if self.op == "batch":
            h = self.a(x).flatten(0, 1).view(x.size(0), -1)
        return self.head(h)


def test_a_merge_of_channels_with_positions_after_them_gives_blocks(generator):
    model = Merges("plain").eval()
    x = torch.randn(2, 3, 6)
    spec = infer_spec(model, x)
    assert spec.axes == {"a": (("a.weight", 0), ("a.bias", 0), ("head.weight", 1))}
    assert spec.blocks == {("head.weight", 1): 6}
    assert_function_kept(model, spec, x, generator)


@pytest.mark.parametrize(
    "op, message",
    [
        ("conflict", r"node 'add' \(function add\): it joins .* blocks of 6 and 4 entries"),
        ("batch", r"node 'flatten_1' \(method .flatten\(\)\): it mixes permuted axis 1 \(4 units\)"),
    ],
)
def test_blocks_of_different_sizes_or_a_merge_with_the_batch_are_refused(op, message):
    with pytest.raises(SpecInferenceError, match=message):
        infer_spec(Merges(op).eval(), torch.randn(2, 3, 6))


class Mixed(nn.Module):
    """Norms, activations, a scalar and a parameter in the stream, residuals in both parts, global pooling."""

    def __init__(self):
        super().__init__()
        self.conv, self.gn = nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(1, 8)
        self.conv2, self.gn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.GroupNorm(8, 8)
        self.shift = nn.Parameter(torch.randn(8, 1, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.ln, self.fc2, self.head = nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 16), nn.Linear(16, 5)
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        h = F.gelu(self.gn(self.conv(x)))
        h = h + self.gn2(self.conv2(h)) * 0.5 + self.shift
        h = torch.flatten(self.pool(h), 1)
        h = self.drop(F.silu(self.ln(self.fc1(h))))
        h = torch.cat([h.unsqueeze(0), (2 * h).unsqueeze(0)]).amax(0)
        h = h + torch.tanh(self.fc2(h))
        return self.head(h.view(h.size(0), -1))


def test_norms_pooling_parameters_and_residuals(generator):
    model = Mixed().eval()
    x = torch.randn(4, 3, 6, 6)
    spec = infer_spec(model, x)
    conv = {"conv.weight", "conv.bias", "gn.weight", "gn.bias", "conv2.weight", "gn2.weight", "gn2.bias", "shift"}
    fc = {"fc1.weight", "fc1.bias", "ln.weight", "ln.bias", "fc2.weight", "fc2.bias"}
    assert {name: set(pairs) for name, pairs in spec.axes.items()} == {
        "conv": {(p, 0) for p in conv} | {("conv2.weight", 1), ("fc1.weight", 1)},
        "fc1": {(p, 0) for p in fc} | {("fc2.weight", 1), ("head.weight", 1)},
    }
    assert_input_to_output(spec)
    assert_function_kept(model, spec, x, generator)


class InputResidual(nn.Module):
    """``x + conv(x)``: the input is never permuted, so neither is what is added to it."""

    def __init__(self):
        super().__init__()
        self.conv, self.conv2, self.head = nn.Conv1d(3, 3, 3, padding=1), nn.Conv1d(3, 4, 1), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv2(x + self.conv(x))).mean(2))


def test_what_joins_the_input_or_the_output_is_never_permuted(generator):
    model = InputResidual().eval()
    x = torch.randn(2, 3, 5)
    spec = infer_spec(model, x)
    assert spec.axes == {"conv2": (("conv2.weight", 0), ("conv2.bias", 0), ("head.weight", 1))}
    assert_function_kept(model, spec, x, generator)


def test_the_model_keeps_its_mode_and_statistics():
    model = build_model("resnet_bn", (1, 8, 8), 10, 4, 1).train()
    before = copy.deepcopy(model.state_dict())
    infer_spec(model, torch.randn(2, 1, 8, 8))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@torch.fx.wrap
def custom_scale(x):
    return x * 2


class Refused(nn.Module):
    """A convolution followed by one operation the inference must refuse."""

    def __init__(self, op):
        super().__init__()
        self.op = op
        self.conv, self.other, self.wide = nn.Conv2d(3, 8, 3), nn.Conv2d(3, 8, 3), nn.Conv2d(3, 16, 3)
        self.norm, self.grouped, self.up = nn.GroupNorm(2, 8), nn.Conv2d(8, 8, 1, groups=4), nn.ConvTranspose2d(8, 8, 2)

    def forward(self, x):
        h = self.conv(x)
        h = {
            "custom": lambda: custom_scale(h),
            "split channels": lambda: h.view(h.size(0), 2, 4, h.size(2), h.size(3)).sum(1),
            "indexing": lambda: h[:, :4],
            "groups of different sizes": lambda: self.grouped(self.norm(h)),
            "unknown module": lambda: self.up(h),
            "concatenation with a plain axis": lambda: torch.cat([h, self.other(x)], 1) + self.wide(x),
        }[self.op]()
        return h.mean((1, 2, 3))


@pytest.mark.parametrize(
    "op, message",
    [
        ("custom", r"node 'custom_scale' \(function custom_scale\): an operation the inference does not know"),
        ("split channels", r"node 'sum_1' \(method .sum\(\)\): it reduces over heads and keeps their dimensions"),
        ("indexing", r"node 'getitem' \(function getitem\): it indexes part of permuted axis 1"),
        ("groups of different sizes", r"node 'grouped' \(module 'grouped', Conv2d\): it joins units moved in runs"),
        ("unknown module", r"node 'up' \(module 'up', ConvTranspose2d\): a module the inference does not know"),
        (
            "concatenation with a plain axis",
            r"node 'add' \(function add\): it joins a concatenated axis with an axis not",
        ),
    ],
)
def test_what_it_cannot_reason_about_is_refused_naming_the_node(op, message):
    with pytest.raises(SpecInferenceError, match=message + r".*Write the model's permutation_spec\(\) by hand"):
        infer_spec(Refused(op), torch.randn(2, 3, 6, 6))
    assert issubclass(SpecInferenceError, UserError)
