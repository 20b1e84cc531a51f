"""The symmetries of today's networks, read by spec inference: depthwise and grouped convolutions, concatenation
along the permuted axis, ``nn.MultiheadAttention`` with a class token and a position embedding, functional
norms and squeeze-and-excitation gating. For each: the permutations keep the function, and weight matching puts
a planted permutation back exactly; the whole spec (every permutation and every axis it acts on) is the one the
rules give."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import SqueezeExcitation

from lmcot.align.methods import METHODS, align, output_change, permuted_copy
from lmcot.any_network import with_inferred_spec
from lmcot.errors import UserError
from lmcot.permutation import (
    apply_permutations,
    check_permutations,
    invert_permutations,
    part_name,
    random_permutations,
)
from lmcot.spec_inference import SpecInferenceError, infer_spec


class Depthwise(nn.Module):
    """MobileNet's inverted residual: expand, depthwise (one permutation in and out), project; then a depthwise
    convolution with a channel multiplier of 2 (groups of 1 input and 2 outputs)."""

    def __init__(self):
        super().__init__()
        self.expand, self.bn = nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6)
        self.depthwise, self.project = nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.Conv2d(6, 4, 1)
        self.multiplier, self.head = nn.Conv2d(4, 8, 3, groups=4), nn.Linear(8, 3)

    def forward(self, x):
        h = self.project(F.relu6(self.depthwise(F.relu(self.bn(self.expand(x))))))
        return self.head(F.relu(self.multiplier(h)).mean((2, 3)))


class Grouped(nn.Module):
    """ResNeXt's bottleneck: a grouped convolution of 4 groups (3 inputs and 3 outputs each) between 1 x 1 ones, a
    GroupNorm of the same 4 groups after it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 12, 1), nn.Conv2d(12, 12, 3, padding=1, groups=4)
        self.norm, self.c, self.head = nn.GroupNorm(4, 12), nn.Conv2d(12, 5, 1), nn.Linear(5, 2)

    def forward(self, x):
        h = F.relu(self.norm(self.b(F.relu(self.a(x)))))
        return self.head(self.c(h).mean((2, 3)))


class Dense(nn.Module):
    """DenseNet's block: each layer reads the concatenation of all before it (a BatchNorm and a convolution read
    the concatenated axis part by part), and an Inception-like concatenation of two branches."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.norm1, self.layer1 = nn.BatchNorm2d(4), nn.Conv2d(4, 3, 3, padding=1)
        self.norm2, self.layer2 = nn.BatchNorm2d(7), nn.Conv2d(7, 3, 3, padding=1)
        self.left, self.right, self.head = nn.Conv2d(10, 2, 1), nn.Conv2d(10, 5, 1), nn.Linear(7, 3)

    def forward(self, x):
        features = [self.stem(x)]
        features.append(self.layer1(F.relu(self.norm1(torch.cat(features, 1)))))
        features.append(self.layer2(F.relu(self.norm2(torch.cat(features, 1)))))
        h = torch.cat(features, 1)
        branches = torch.cat([F.relu(self.left(h)), F.relu(self.right(h))], 1)
        return self.head(branches.mean((2, 3)))


class ChannelsLast(nn.Module):
    """ConvNeXt's block: a depthwise convolution, a functional layer_norm over channels moved last, an MLP, a
    per-channel layer scale and a residual; squeeze-and-excitation gating after it."""

    def __init__(self):
        super().__init__()
        self.stem, self.depthwise = nn.Conv2d(3, 8, 2, stride=2), nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm_weight, self.norm_bias = nn.Parameter(torch.rand(8) + 0.5), nn.Parameter(torch.randn(8))
        self.up, self.down = nn.Linear(8, 16), nn.Linear(16, 8)
        self.scale = nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.gate, self.head = SqueezeExcitation(8, 4), nn.Linear(8, 3)

    def forward(self, x):
        h = self.stem(x)
        y = self.depthwise(h).permute(0, 2, 3, 1)
        y = F.layer_norm(y, (8,), self.norm_weight, self.norm_bias)
        y = self.down(F.gelu(self.up(y))).permute(0, 3, 1, 2)
        h = self.gate(h + self.scale * y)
        return self.head(F.group_norm(h, 1).mean((2, 3)))


class Attention(nn.Module):
    """A small ViT on nn.MultiheadAttention: patches, a class token expanded over the batch and concatenated
    along the tokens, a position embedding, pre-norm attention and MLP on the residual stream, the class token's
    output read by indexing."""

    def __init__(self, batch_first=True):
        super().__init__()
        self.batch_first = batch_first
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.token, self.position = nn.Parameter(torch.randn(1, 1, 8)), nn.Parameter(torch.randn(1, 5, 8))
        self.norm1, self.attention = nn.LayerNorm(8), nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.norm2, self.mlp = nn.LayerNorm(8), nn.Sequential(nn.Linear(8, 12), nn.GELU(), nn.Linear(12, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.patch(x).flatten(2).transpose(1, 2)  # (batch, 4 patches, 8)
        h = torch.cat([self.token.expand(x.shape[0], -1, -1), h], dim=1) + self.position
        y = self.norm1(h) if self.batch_first else self.norm1(h).transpose(0, 1)
        y = self.attention(y, y, y, need_weights=False)[0]
        h = h + (y if self.batch_first else y.transpose(0, 1))
        h = h + self.mlp(self.norm2(h))
        return self.head(h[:, 0])


class HandWrittenAttention(nn.Module):
    """Attention as PyTorch users write it: separate projections, a view into heads, ``F.scaled_dot_product_attention``
    (or its matmul-softmax-matmul form), the heads merged back, a residual stream and a functional linear map
    ``x @ W`` on it."""

    def __init__(self, fused=True):
        super().__init__()
        self.fused, self.heads = fused, 2
        self.embed, self.q, self.k, self.v, self.o = (nn.Linear(5, 8), *[nn.Linear(8, 8) for _ in range(4)])
        self.mix, self.head = nn.Parameter(torch.randn(8, 8) / 3), nn.Linear(8, 3)

    def forward(self, x):  # (batch, tokens, 5)
        h = self.embed(x)
        b, t, e = h.shape
        q, k, v = (p(h).view(b, t, self.heads, e // self.heads).transpose(1, 2) for p in (self.q, self.k, self.v))
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            y = torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1) @ v
        h = h + self.o(y.transpose(1, 2).reshape(b, t, e))
        h = h + torch.relu(h @ self.mix)
        return self.head(h.mean(1))


class EinsumAttention(nn.Module):
    """MaxViT's attention: one Linear packs queries, keys and values (``chunk`` cuts its units in three), heads by a
    reshape, ``torch.einsum`` for the products, a relative-position bias per head gathered from a table by a
    buffer of indices (so heads may not move; the units within them may not leave them: both stay in place)."""

    def __init__(self):
        super().__init__()
        self.embed, self.to_qkv, self.merge = nn.Linear(5, 8), nn.Linear(8, 24), nn.Linear(8, 8)
        self.table, self.head = nn.Parameter(torch.randn(7, 2)), nn.Linear(8, 3)
        self.register_buffer("index", torch.randint(0, 7, (16,)))

    def forward(self, x):  # (batch, 4 tokens, 5)
        h = self.embed(x)
        b, p, d = h.shape
        q, k, v = (t.reshape(b, p, 2, 4).permute(0, 2, 1, 3) for t in torch.chunk(self.to_qkv(h), 3, dim=-1))
        bias = self.table[self.index].view(p, p, 2).permute(2, 0, 1).unsqueeze(0)
        scores = torch.softmax(torch.einsum("b h i d, b h j d -> b h i j", q, k) + bias, dim=-1)
        out = torch.einsum("b h i j, b h j d -> b h i d", scores, v).permute(0, 2, 1, 3).reshape(b, p, d)
        return self.head((h + self.merge(out)).mean(1))


def tiny_swin(version: int) -> nn.Module:
    """torchvision's Swin Transformer (v1 or v2) at a small size: window attention, patch merging."""
    from torchvision.models import swin_transformer as swin

    blocks = {} if version == 1 else {"block": swin.SwinTransformerBlockV2, "downsample_layer": swin.PatchMergingV2}
    return swin.SwinTransformer([2, 2], 8, [1, 1], [2, 2], [2, 2], num_classes=3, **blocks)


NETWORKS = {
    "depthwise": Depthwise,
    "grouped": Grouped,
    "dense": Dense,
    "channels last": ChannelsLast,
    "attention": Attention,
    "attention, sequence first": lambda: Attention(batch_first=False),
    "scaled_dot_product_attention": HandWrittenAttention,
    "matmul attention": lambda: HandWrittenAttention(fused=False),
    "einsum attention": EinsumAttention,
    "swin": lambda: tiny_swin(1),
    "swin v2": lambda: tiny_swin(2),
}
INPUTS = {"scaled_dot_product_attention": (6, 4, 5), "matmul attention": (6, 4, 5), "einsum attention": (6, 4, 5)}


def random_network(build, x, seed: int = 0) -> nn.Module:
    """``build()`` with random weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        model.train()(x)
    return model.eval()


@pytest.mark.parametrize("name", NETWORKS)
def test_permutations_keep_the_function_and_weight_matching_recovers_a_planted_one(name):
    network, x = NETWORKS[name], torch.randn(*INPUTS.get(name, (6, 3, 8, 8)))
    model = with_inferred_spec(random_network(network, x), x)
    spec, state = model.permutation_spec(), model.state_dict()
    planted = random_permutations(spec, state, torch.Generator().manual_seed(3))
    check_permutations(spec, planted, state)
    moved = permuted_copy(model, planted)
    assert any(not torch.equal(v, moved.state_dict()[k]) for k, v in state.items())
    with torch.no_grad():
        torch.testing.assert_close(moved(x), model(x), atol=1e-5, rtol=1e-5)
    found = align("weight_matching", model, moved)
    expected = invert_permutations(planted)
    assert {n: found[n].tolist() for n in spec.names} == {n: expected[n].tolist() for n in spec.names}


def test_a_depthwise_convolution_carries_one_permutation_and_a_multiplier_groups_its_outputs():
    x = torch.randn(2, 3, 8, 8)
    spec = infer_spec(random_network(Depthwise, x), x)
    assert spec.names == ["expand", "project", "multiplier", "head"][:3]
    assert {("depthwise.weight", 0), ("depthwise.bias", 0), ("bn.weight", 0), ("project.weight", 1)} <= set(
        spec.axes["expand"]
    )
    # the multiplier's 4 groups each read 1 channel of project's and write 2: project's units move as whole runs
    # of 1 (any permutation), the multiplier's in runs of 2 that move alike
    assert spec.groups == {"project": ("<multiplier groups>", 1), "multiplier": ("<multiplier groups>", 2)}
    assert spec.whole == {"project"}


def test_a_grouped_convolution_moves_whole_groups_and_reorders_only_its_outputs_within_them():
    x = torch.randn(2, 3, 8, 8)
    model = random_network(Grouped, x)
    spec = infer_spec(model, x)
    assert spec.groups == {"a": ("<b groups>", 3), "b": ("<b groups>", 3)}  # the GroupNorm's groups are b's
    assert spec.whole == {"a"}
    state = model.state_dict()
    perms = random_permutations(spec, state, torch.Generator().manual_seed(0))
    runs = perms["a"].reshape(4, 3)
    assert torch.equal(runs, runs[:, :1] + torch.arange(3))  # a's channels keep their order within a group
    assert torch.equal(perms["b"].reshape(4, 3).div(3, rounding_mode="floor")[:, 0], runs[:, 0] // 3)
    reordered = {**perms, "a": perms["a"].reshape(4, 3).flip(1).flatten()}
    with pytest.raises(ValueError, match="'a' reorders units within its runs of 3"):
        check_permutations(spec, reordered, state)


def test_a_concatenation_gives_each_part_its_section_of_the_axes_that_read_it():
    x = torch.randn(2, 3, 8, 8)
    spec = infer_spec(random_network(Dense, x), x)
    assert spec.sections["norm2.weight"] == (0, (0, 4, 7))
    assert spec.sections["left.weight"] == (1, (0, 4, 7, 10))
    assert spec.sections["head.weight"] == (1, (0, 2, 7))
    assert (part_name("norm2.running_mean", 4, 7), 0) in spec.axes["layer1"]
    assert (part_name("left.weight", 7, 10), 1) in spec.axes["layer2"]
    assert {(part_name("left.weight", a, b), 0) for a, b in ((0, 4), (4, 7), (7, 10))} <= set(spec.axes["left"])


def test_multihead_attention_permutes_heads_as_blocks_and_its_packed_projection_by_sections():
    x = torch.randn(2, 3, 8, 8)
    model = random_network(Attention, x)
    spec = infer_spec(model, x)
    weight = "attention.in_proj_weight"
    assert spec.sections[weight] == (0, (0, 8, 16, 24))
    assert spec.groups["attention.qk"] == spec.groups["attention.vo"] == ("<attention heads>", 4)
    assert set(spec.axes["attention.qk"]) == {
        (part_name(weight, 0, 8), 0), (part_name(weight, 8, 16), 0),
        (part_name("attention.in_proj_bias", 0, 8), 0), (part_name("attention.in_proj_bias", 8, 16), 0),
    }  # fmt: skip
    assert ("attention.out_proj.weight", 1) in spec.axes["attention.vo"]
    stream = next(n for n in spec.names if ("token", 2) in spec.axes[n])
    assert {("position", 2), ("patch.weight", 0), ("attention.out_proj.weight", 0), ("mlp.2.weight", 0)} | {
        (part_name(weight, a, a + 8), 1) for a in (0, 8, 16)
    } <= set(spec.axes[stream])
    # the state keeps the model's own keys after permuting
    permuted = apply_permutations(
        spec, random_permutations(spec, model.state_dict(), torch.Generator()), model.state_dict()
    )
    assert list(permuted) == list(model.state_dict())


@pytest.mark.parametrize("fused", [True, False], ids=["scaled_dot_product_attention", "matmul"])
def test_heads_split_by_a_view_group_the_projections_queries_with_keys_values_with_the_output(fused):
    x = torch.randn(2, 4, 5)
    spec = infer_spec(random_network(lambda: HandWrittenAttention(fused), x), x)
    assert spec.names == ["embed", "q", "v"]
    assert {("q.weight", 0), ("k.weight", 0), ("k.bias", 0)} < set(spec.axes["q"])
    assert {("v.weight", 0), ("o.weight", 1)} < set(spec.axes["v"])
    assert spec.groups["q"][1] == spec.groups["v"][1] == 4 and spec.groups["q"][0] == spec.groups["v"][0]
    assert {("o.weight", 0), ("mix", 0), ("mix", 1), ("head.weight", 1)} < set(spec.axes["embed"])


def test_a_packed_projection_chunked_into_heads_with_a_bias_per_head_keeps_its_heads_in_place():
    x = torch.randn(2, 4, 5)
    spec = infer_spec(random_network(EinsumAttention, x), x)
    assert spec.sections["to_qkv.weight"] == (0, (0, 8, 16, 24)) and not spec.groups
    assert spec.names == ["embed"]  # queries, keys, values: fixed by the table's heads; the stream: permuted
    assert {("merge.weight", 0), ("to_qkv.weight[0:8]", 1), ("to_qkv.weight[16:24]", 1)} < set(spec.axes["embed"])


class Refused(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.attention = nn.MultiheadAttention(4, 2, add_bias_kv=True, batch_first=True)

    def forward(self, x):
        h = torch.cat([self.a(x), self.b(x)], 1)  # (batch, 8, h, w)
        if self.op == "shuffle":  # ShuffleNet's channel shuffle interleaves the two parts
            h = h.view(h.size(0), 2, 4, h.size(2), h.size(3)).transpose(1, 2).reshape(h.shape)
        if self.op == "part":
            h = h[:, 2:6]
        if self.op == "bias_kv":
            t = self.a(x).flatten(2).transpose(1, 2)
            return self.attention(t, t, t)[0].mean((1, 2))
        return h.mean((1, 2, 3))


@pytest.mark.parametrize(
    "op, message",
    [
        ("shuffle", r"node 'view' \(method .view\(\)\): it merges a concatenated axis 1 with other axes"),
        ("part", r"node 'getitem' \(function getitem\): it indexes part of permuted axis 1"),
        ("bias_kv", r"node 'attention' \(module 'attention', MultiheadAttention\): add_bias_kv"),
    ],
)
def test_what_has_no_permutation_symmetry_is_refused_naming_the_node(op, message):
    with pytest.raises(SpecInferenceError, match=message):
        infer_spec(Refused(op), torch.randn(2, 3, 6, 6))


@pytest.mark.parametrize(
    "method", [pytest.param(m, marks=pytest.mark.slow) if m == "ot_sinkhorn" else m for m in METHODS]
)
@pytest.mark.parametrize("name", ["depthwise", "grouped", "dense", "attention", "scaled_dot_product_attention"])
def test_every_method_keeps_the_function_or_refuses_in_one_line(name, method):
    x = torch.randn(*INPUTS.get(name, (16, 3, 8, 8)))
    model_a = with_inferred_spec(random_network(NETWORKS[name], x), x)
    model_b = with_inferred_spec(random_network(NETWORKS[name], x, seed=5), x)
    try:
        perms = align(method, model_a, model_b, x)
    except UserError as refusal:
        assert "\n" not in str(refusal) and len(str(refusal)) < 400
        return
    assert output_change(model_b, perms, x) < 1e-4


class Operations(nn.Module):
    """One operation of attention code after a Linear of 8 units (tokens ``(batch, 4, 8)``), as ``op`` says."""

    def __init__(self, op):
        super().__init__()
        self.op, self.a, self.b = op, nn.Linear(3, 8), nn.Linear(8, 2)
        self.register_buffer("causal", torch.tril(torch.ones(4, 4, dtype=torch.bool)))

    def forward(self, x):  # (batch, 4, 3)
        h = self.a(x)
        q = h.view(h.shape[0], 4, 2, 4).transpose(1, 2)  # (batch, 2 heads, 4 tokens, 4)
        if self.op == "causal mask":
            y = F.scaled_dot_product_attention(q, q, q, attn_mask=self.causal)
        elif self.op == "mask along units":
            y = F.scaled_dot_product_attention(q, q, q, attn_mask=q > 0)  # (batch, heads, tokens, 4 dimensions)
        elif self.op == "vector product":
            return (h @ h[0, 0]).mean(1, keepdim=True)
        elif self.op == "einsum with ellipsis":
            y = torch.einsum("...d,...d->...", q, q)[..., None].expand(-1, -1, -1, 4)
        elif self.op == "split of tokens":
            first, second = h.split(2, dim=1)
            return self.b(first + second).mean(1)
        elif self.op == "two index tensors":
            return self.b(h[torch.tensor([0, 1]), torch.tensor([1, 2])])
        return self.b(y.transpose(1, 2).reshape(h.shape).mean(1))


@pytest.mark.parametrize("op", ["causal mask", "split of tokens"])
def test_masks_over_tokens_and_splits_of_tokens_keep_the_units_permuted(op):
    x = torch.randn(5, 4, 3)
    model = with_inferred_spec(random_network(lambda: Operations(op), x), x)
    spec, state = model.permutation_spec(), model.state_dict()
    assert ("a.weight", 0) in spec.axes[spec.names[0]]
    moved = permuted_copy(model, random_permutations(spec, state, torch.Generator().manual_seed(2)))
    with torch.no_grad():
        torch.testing.assert_close(moved(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "op, message",
    [
        ("mask along units", r"node 'scaled_dot_product_attention' .*: its attention mask varies along a permuted"),
        ("vector product", r"node 'matmul' .*: a product with a vector"),
        ("einsum with ellipsis", r"node 'einsum' .*: an einsum '...d,...d->...' without an explicit result or with"),
        ("two index tensors", r"node 'getitem\w*' .*: an index by several tensors"),
    ],
)
def test_attention_code_it_cannot_read_is_refused_naming_the_node(op, message):
    with pytest.raises(SpecInferenceError, match=message):
        infer_spec(Operations(op), torch.randn(2, 4, 3))


def _bn(name: str, part: str = "") -> set:
    """A BatchNorm's four per-channel tensors (``part``: the section they are read in)."""
    return {(f"{name}.{t}{part}", 0) for t in ("weight", "bias", "running_mean", "running_var")}


def _layer(name: str, part: str = "") -> set:
    return {(f"{name}.weight{part}", 0), (f"{name}.bias", 0)}


QKV = "attention.in_proj_weight"
PARTS = ("[0:4]", "[4:7]", "[7:10]")  # the dense block's concatenation: stem, layer1, layer2
WHOLE_SPECS = {  # name -> (axes, groups, sections, whole), each checked against the rules by hand
    "depthwise": (
        {
            "expand": _layer("expand") | _bn("bn") | _layer("depthwise") | {("project.weight", 1)},
            "project": _layer("project"),
            "multiplier": _layer("multiplier") | {("head.weight", 1)},
        },
        {"project": ("<multiplier groups>", 1), "multiplier": ("<multiplier groups>", 2)},
        {},
        {"project"},
    ),
    "grouped": (
        {
            "a": _layer("a"),
            "b": _layer("b") | {("norm.weight", 0), ("norm.bias", 0), ("c.weight", 1)},
            "c": _layer("c") | {("head.weight", 1)},
        },
        {"a": ("<b groups>", 3), "b": ("<b groups>", 3)},
        {},
        {"a"},
    ),
    "dense": (
        {
            "stem": _layer("stem") | _bn("norm1") | _bn("norm2", "[0:4]") | {("layer1.weight", 1)}
            | {(f"{n}.weight[0:4]", 1) for n in ("layer2", "left", "right")},
            "layer1": _layer("layer1") | _bn("norm2", "[4:7]")
            | {(f"{n}.weight[4:7]", 1) for n in ("layer2", "left", "right")},
            "layer2": _layer("layer2", "[0:4]") | {("layer2.weight[4:7]", 0)}
            | {(f"{n}.weight[7:10]", 1) for n in ("left", "right")},
            "left": {("left.bias", 0), ("head.weight[0:2]", 1)} | {(f"left.weight{p}", 0) for p in PARTS},
            "right": {("right.bias", 0), ("head.weight[2:7]", 1)} | {(f"right.weight{p}", 0) for p in PARTS},
        },
        {},
        {f"norm2.{t}": (0, (0, 4, 7)) for t in ("weight", "bias", "running_mean", "running_var")}
        | {"layer2.weight": (1, (0, 4, 7)), "left.weight": (1, (0, 4, 7, 10)), "right.weight": (1, (0, 4, 7, 10))}
        | {"head.weight": (1, (0, 2, 7))},
        set(),
    ),
    "channels last": (
        {
            "stem": _layer("stem") | _layer("depthwise") | _layer("down") | _layer("gate.fc2")
            | {("norm_weight", 0), ("norm_bias", 0), ("scale", 0), ("up.weight", 1), ("gate.fc1.weight", 1)}
            | {("head.weight", 1)},
            "up": _layer("up") | {("down.weight", 1)},
            "gate.fc1": _layer("gate.fc1") | {("gate.fc2.weight", 1)},
        },
        {},
        {},
        set(),
    ),
    "attention": (
        {
            "patch": _layer("patch") | _layer("attention.out_proj") | _layer("mlp.2") | {("token", 2), ("position", 2)}
            | {(f"{n}.{t}", 0) for n in ("norm1", "norm2") for t in ("weight", "bias")}
            | {(f"{QKV}[{a}:{a + 8}]", 1) for a in (0, 8, 16)} | {("mlp.0.weight", 1), ("head.weight", 1)},
            "attention.qk": {(f"attention.in_proj_{t}[{a}:{a + 8}]", 0) for t in ("weight", "bias") for a in (0, 8)},
            "attention.vo": {(f"{QKV}[16:24]", 0), ("attention.in_proj_bias[16:24]", 0)}
            | {("attention.out_proj.weight", 1)},
            "mlp.0": _layer("mlp.0") | {("mlp.2.weight", 1)},
        },
        {"attention.qk": ("<attention heads>", 4), "attention.vo": ("<attention heads>", 4)},
        {QKV: (0, (0, 8, 16, 24)), "attention.in_proj_bias": (0, (0, 8, 16, 24))},
        set(),
    ),
    "einsum attention": (  # queries, keys and values stay: the table holds a bias per head
        {
            "embed": _layer("embed") | _layer("merge") | {("head.weight", 1)}
            | {(f"to_qkv.weight[{a}:{a + 8}]", 1) for a in (0, 8, 16)},
        },
        {},
        {"to_qkv.weight": (0, (0, 8, 16, 24))},
        set(),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", WHOLE_SPECS)
def test_the_whole_spec_is_what_the_rules_give_nothing_more_nothing_less(name):
    """Not only are the permutations function-preserving (above): none is missing, each acts on every axis it
    must and no other, in the order the layers run."""
    x = torch.randn(*INPUTS.get(name, (6, 3, 8, 8)))
    spec = infer_spec(random_network(NETWORKS[name], x), x)
    axes, groups, sections, whole = WHOLE_SPECS[name]
    assert spec.names == list(axes)
    assert {n: set(pairs) for n, pairs in spec.axes.items()} == axes
    assert all(len(pairs) == len(set(pairs)) for pairs in spec.axes.values())
    assert (spec.groups, spec.sections, set(spec.whole), spec.blocks) == (groups, sections, whole, {})
