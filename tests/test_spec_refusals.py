"""The exact messages of spec inference's refusals, one tiny network per refusal site of
:mod:`lmcot.spec_inference`, and beside them the nearest networks it must accept (the other side of each
condition). The whole message is compared, so that a changed reason, a lost node name or a flipped condition
fails here and not only in a user's traceback."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrizations
from torchvision.models import swin_transformer

from lmcot.models.transformer import SelfAttention
from lmcot.permutation import PermutationSpec
from lmcot.spec_inference import FIXED, BlockConflict, SpecInferenceError, UnionFind, infer_spec


class Net(nn.Module):
    """``body(self, x)`` over the layers, parameters and buffers given by name: one network per table row."""

    def __init__(self, body, **members):
        super().__init__()
        self.body = body
        for name, member in members.items():
            if isinstance(member, torch.Tensor) and not isinstance(member, nn.Parameter):
                self.register_buffer(name, member)
            else:
                setattr(self, name, member)

    def forward(self, x):
        return self.body(self, x)


class Stated(nn.Module):
    """A Linear that states its own symmetry (as :class:`SelfAttention` does); ``typo`` misnames its weight."""

    def __init__(self, typo=False):
        super().__init__()
        self.lin, self.typo = nn.Linear(4, 4), typo

    def symmetry(self, prefix):
        weight = "wieght" if self.typo else "weight"
        return (
            PermutationSpec({}),
            [(f"{prefix}.lin.weight", 1)],
            [(f"{prefix}.lin.{weight}", 0), (f"{prefix}.lin.bias", 0)],
        )

    def forward(self, x):
        return self.lin(x)


class Constant(nn.Module):
    """A module holding ``scale``, a buffer of ``n`` ones that is not saved in the state dict."""

    def __init__(self, n):
        super().__init__()
        self.register_buffer("scale", torch.ones(n), persistent=False)


def linear(i, o):
    return nn.Linear(i, o)


def conv(i, o, **kwargs):
    return nn.Conv1d(i, o, 1, **kwargs)


def refused(node, reason):
    return f"cannot infer the permutation spec at {node}: {reason}. Write the model's permutation_spec() by hand."


# --- bodies too long for a lambda ------------------------------------------------------------------------------


def blocks_that_do_not_divide(m, x):  # x (batch, 3, 3): 2 channels of 3 positions + 3 channels of 2 positions
    return (m.a(x).flatten(1) + m.b(F.adaptive_avg_pool1d(x, 2)).flatten(1)).sum(1)


def runs_joined_in_blocks(m, x):  # b's 4 units split into heads first, then joined in blocks of 2 of a's 2 units
    b = m.b(x.flatten(1))
    return b.view(-1, 2, 2).sum((1, 2)) + (m.a(x).flatten(1) + b).sum(1)


def runs_of_two_sizes(m, x):  # heads of 4 and of 2 dimensions, then a residual joins the two classes
    a, b = m.a(x), m.b(x)
    return a.view(-1, 2, 4).sum((1, 2)) + b.view(-1, 4, 2).sum((1, 2)) + (a + b).sum(1)


def sections_of_two_sizes(m, x):  # one Linear reads (2 | 2) and then (1 | 3) concatenated units
    return (m.l(torch.cat([m.a(x), m.b(x)], 1)) + m.l(torch.cat([m.c(x), m.d(x)], 1))).sum(1)


def attention_masked_along_units(m, x):  # x (batch, 4 tokens, 3): 2 heads of 4 dimensions, mask of their sign
    q = m.a(x).view(-1, 4, 2, 4).transpose(1, 2)
    return F.scaled_dot_product_attention(q, q, q, attn_mask=q > 0).mean((1, 2, 3))


def attention_masked_positionally(m, x):  # the same mask, given as the fourth argument
    q = m.a(x).view(-1, 4, 2, 4).transpose(1, 2)
    return F.scaled_dot_product_attention(q, q, q, q > 0).mean((1, 2, 3))


def branch_on_a_layer(m, x):  # a branch on a module's own output: the node named is the module's
    return m.a(x) if m.b(x) else -m.a(x)


def heads_of_another_class(m, x):  # (batch, c's 2 units, a's head dimensions) merged as if c were a's heads
    return torch.einsum("bhd,bc->bcd", m.a(x).view(-1, 2, 4), m.c(x)).reshape(-1, 8).mean(1)


def checked_input(m, x):  # the check fails on torch.fx's proxies, symbolic and concrete alike
    if not isinstance(x, torch.Tensor):
        raise TypeError("expects a tensor")
    return m.a(x)


def sign_branch(m, x):
    h = m.a(x)
    if h.sum() > 0:
        h = -h
    return h


REFUSALS = [
    # UnionFind, reached through the graph: blocks, runs
    pytest.param(
        lambda: Net(blocks_that_do_not_divide, a=conv(3, 2), b=conv(3, 3)),
        (2, 3, 3),
        refused(
            "node 'add' (function add)",
            "it joins ('<flatten>', 1) and ('<flatten_1>', 1), blocks of 3 and 2 entries of units",
        ),
        id="blocks of 3 and 2",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x).flatten(1).view(-1, 3, 2).sum((1, 2)), a=conv(3, 2)),
        (2, 3, 3),
        refused("node 'view' (method .view())", "runs of 2 entries split the blocks of 3 entries of ('<flatten>', 1)"),
        id="heads split blocks",
    ),
    pytest.param(
        lambda: Net(runs_joined_in_blocks, a=conv(3, 2), b=linear(6, 4)),
        (2, 3, 2),
        refused("node 'add' (function add)", "it joins runs of ('b.weight', 0) to ('a.weight', 0) in blocks of 2"),
        id="runs joined in blocks",
    ),
    pytest.param(
        lambda: Net(runs_of_two_sizes, a=linear(3, 8), b=linear(3, 8)),
        (2, 3),
        refused("node 'add_1' (function add)", "it joins units moved in runs of 4 and of 2"),
        id="runs of two sizes",
    ),
    # what the graph holds
    pytest.param(
        lambda: Net(lambda m, x: m.a(x) * m.a(x).sum().item(), a=linear(3, 4)),
        (2, 3),
        refused("node 'item' (method .item())", "it returns no single tensor (a number, or a tuple of tensors)"),
        id="a number",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.up(m.a(x)).mean((1, 2)), a=conv(3, 4), up=nn.Upsample(scale_factor=2)),
        (2, 3, 2),
        refused("node 'up' (module 'up', Upsample)", "a module the inference does not know"),
        id="unknown module",
    ),
    pytest.param(
        lambda: Net(lambda m, x: torch.cumsum(m.a(x), 1).sum(1), a=linear(3, 4)),
        (2, 3),
        refused("node 'cumsum' (function cumsum)", "an operation the inference does not know"),
        id="unknown operation",
    ),
    # convolutions, pooling, norms
    pytest.param(
        lambda: Net(lambda m, x: m.c(m.a(x)).mean((1, 2)), a=linear(3, 4), c=nn.Conv1d(2, 2, 3)),
        (2, 2, 3),
        refused("node 'c' (module 'c', Conv1d)", "a convolution mixes its spatial axes, and axis 2 is permuted"),
        id="convolution over units",
    ),
    pytest.param(
        lambda: Net(lambda m, x: F.max_pool1d(m.a(x), 2).mean((1, 2)), a=linear(3, 4)),
        (2, 2, 3),
        refused(
            "node 'max_pool1d' (function max_pool1d)", "pooling mixes the positions it pools, and axis 2 is permuted"
        ),
        id="pooling over units",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: m.g(torch.cat([m.a(x), m.b(x)], 1)).mean((1, 2)),
            a=conv(3, 2),
            b=conv(3, 2),
            g=conv(4, 4, groups=2),
        ),
        (2, 3, 2),
        refused("node 'g' (module 'g', Conv1d)", "a grouped convolution reading a concatenation"),
        id="grouped convolution of a concatenation",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: m.n(torch.cat([m.a(x), m.b(x)], 1)).mean((1, 2)),
            a=conv(3, 2),
            b=conv(3, 2),
            n=nn.GroupNorm(2, 4),
        ),
        (2, 3, 2),
        refused("node 'n' (module 'n', GroupNorm)", "a GroupNorm of several channels per group reads a concatenation"),
        id="group norm of a concatenation",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: F.layer_norm(m.a(x), (4,), m.w * 2).sum(1), a=linear(3, 4), w=nn.Parameter(torch.ones(4))
        ),
        (2, 3),
        refused(
            "node 'layer_norm' (function layer_norm)", "its weight is computed, not a tensor of the model's state dict"
        ),
        id="computed norm weight",
    ),
    pytest.param(  # a buffer that the state dict leaves out: no permutation could carry it
        lambda: Net(lambda m, x: F.layer_norm(m.a(x), (4,), m.c.scale).sum(1), a=linear(3, 4), c=Constant(4)),
        (2, 3),
        refused(
            "node 'layer_norm' (function layer_norm)", "its weight is computed, not a tensor of the model's state dict"
        ),
        id="norm weight not in the state dict",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: F.group_norm(m.a(x), 2, None, m.w + 1).mean((1, 2)),
            a=conv(3, 4),
            w=nn.Parameter(torch.ones(4)),
        ),
        (2, 3, 2),
        refused(
            "node 'group_norm' (function group_norm)", "its bias is computed, not a tensor of the model's state dict"
        ),
        id="computed norm bias",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.l(m.a(x)).sum(1), a=linear(3, 4), l=parametrizations.weight_norm(linear(4, 2))),
        (2, 3),
        refused(
            "node 'l' (module 'l', ParametrizedLinear)", "its weight is not in the state dict (a parametrised module?)"
        ),
        id="parametrised weight",
    ),
    # modules that state their symmetry
    pytest.param(
        lambda: Net(lambda m, x: m.s(m.a(x)).sum(1), a=linear(3, 4), s=Stated(typo=True)),
        (2, 3),
        refused("node 's' (module 's', Stated)", "its symmetry names 's.lin.wieght', which is not in the state dict"),
        id="symmetry naming no parameter",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: m.s(torch.cat([m.a(x), m.b(x)], -1)).mean((1, 2)),
            a=linear(3, 2),
            b=linear(3, 2),
            s=SelfAttention(4, 2),
        ),
        (2, 2, 3),
        refused("node 's' (module 's', SelfAttention)", "a module that states its symmetry reads a concatenation"),
        id="stated symmetry of a concatenation",
    ),
    # axes moved, merged, reduced, indexed
    pytest.param(
        lambda: Net(lambda m, x: torch.movedim(m.a(x), (1, 2), (2, 1)).mean((1, 2)), a=conv(3, 4)),
        (2, 3, 2),
        refused("node 'movedim' (function movedim)", "a movedim of several axes"),
        id="movedim of two axes",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: torch.cat([m.a(x), m.b(x)], 1).view(-1, 2, 2).mean((1, 2)), a=linear(3, 2), b=linear(3, 2)
        ),
        (2, 3),
        refused("node 'view' (method .view())", "it merges a concatenated axis 1 with other axes"),
        id="view of a concatenation",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x).view(-1, 2, 4).view(-1, 4, 2).mean((1, 2)), a=linear(3, 8)),
        (2, 3),
        refused("node 'view_1' (method .view())", "it merges axes 1 and 2, which are not one class's heads"),
        id="heads regrouped",
    ),
    pytest.param(
        lambda: Net(heads_of_another_class, a=linear(3, 8), c=linear(3, 2)),
        (2, 3),
        refused("node 'reshape' (method .reshape())", "it merges axes 1 and 2, which are not one class's heads"),
        id="heads of another class merged",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x).view(-1).mean(), a=linear(3, 4)),
        (2, 3),
        refused(
            "node 'view' (method .view())",
            "it mixes permuted axis 1 (4 units) with other axes of size > 1 ([2, 4] -> [8]) other than by merging it "
            "with the unpermuted axes after it: a permutation of those units would act on parts of the result, which "
            "a PermutationSpec cannot express",
        ),
        id="units merged with the batch",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: (m.a(x)[:, :, None] * m.b(x)[:, None, :]).flatten(1).mean(1), a=linear(3, 4), b=linear(3, 2)
        ),
        (2, 3),
        refused(
            "node 'flatten' (method .flatten())",
            "it mixes permuted axis 1 (4 units) with other axes of size > 1 ([2, 4, 2] -> [2, 8]) other than by "
            "merging it with the unpermuted axes after it: a permutation of those units would act on parts of the "
            "result, which a PermutationSpec cannot express",
        ),
        id="units merged with another class's units",
    ),
    pytest.param(
        lambda: Net(lambda m, x: torch.cat(m.a(x).split(2, dim=1), dim=1).sum(1), a=linear(3, 4)),
        (2, 3),
        refused("node 'cat' (function cat)", "it reads a tuple of tensors whole; index its items first"),
        id="a tuple read whole",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x).view(-1, 2, 4).sum(1).mean(1), a=linear(3, 8)),
        (2, 3),
        refused("node 'sum_1' (method .sum())", "it reduces over heads and keeps their dimensions"),
        id="sum over heads",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x)[m.i, m.i].sum(), a=linear(3, 4), i=torch.tensor([0, 1])),
        (2, 3),
        refused("node 'getitem' (function getitem)", "an index by several tensors"),
        id="index by two tensors",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x)[:, m.i].sum(1), a=linear(3, 4), i=torch.tensor([0, 1])),
        (2, 3),
        refused("node 'getitem' (function getitem)", "it gathers entries of permuted axis 1 by a tensor of indices"),
        id="gather of units",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x)[:, (0, 1)].sum(1), a=linear(3, 4)),
        (2, 3),
        refused("node 'getitem' (function getitem)", "an index by tuple"),
        id="index by a tuple",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x)[:, [0, 1]].sum(1), a=linear(3, 4)),
        (2, 3),
        refused("node 'getitem' (function getitem)", "an index by list"),  # not torch.fx's immutable_list
        id="index by a list",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x)[:, :2].sum(1), a=linear(3, 4)),
        (2, 3),
        refused("node 'getitem' (function getitem)", "it indexes part of permuted axis 1"),
        id="part of the units",
    ),
    # products, attention
    pytest.param(
        lambda: Net(lambda m, x: m.a(x) @ m.v, a=linear(3, 4), v=nn.Parameter(torch.ones(4))),
        (2, 3),
        refused("node 'matmul' (function matmul)", "a product with a vector"),
        id="product with a vector",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: torch.addmm(m.bias * 2, x, m.weight).sum(1),
            weight=nn.Parameter(torch.ones(3, 4)),
            bias=nn.Parameter(torch.ones(4)),
        ),
        (2, 3),
        refused("node 'addmm' (function addmm)", "an addmm of computed tensors, not a layer's weight and bias"),
        id="addmm of a computed bias",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: torch.einsum("bi,ji", m.a(x), m.w).sum(1), a=linear(3, 4), w=nn.Parameter(torch.ones(2, 4))
        ),
        (2, 3),
        refused("node 'einsum' (function einsum)", "an einsum 'bi,ji' without an explicit result or with '...'"),
        id="einsum of implicit result",
    ),
    pytest.param(
        lambda: Net(attention_masked_along_units, a=linear(3, 8)),
        (2, 4, 3),
        refused(
            "node 'scaled_dot_product_attention' (function scaled_dot_product_attention)",
            "its attention mask varies along a permuted axis",
        ),
        id="attention mask along units",
    ),
    pytest.param(
        lambda: Net(attention_masked_positionally, a=linear(3, 8)),
        (2, 4, 3),
        refused(
            "node 'scaled_dot_product_attention' (function scaled_dot_product_attention)",
            "its attention mask varies along a permuted axis",
        ),
        id="attention mask along units, given positionally",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: m.att(m.a(x), m.a(x), m.a(x))[0].mean((1, 2)),
            a=linear(3, 4),
            att=nn.MultiheadAttention(4, 2, add_bias_kv=True, batch_first=True),
        ),
        (2, 2, 3),
        refused(
            "node 'att' (module 'att', MultiheadAttention)",
            "add_bias_kv appends learnt key and value rows, which are not implemented",
        ),
        id="attention with bias_kv",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: swin_transformer._patch_merging_pad(m.a(x).transpose(1, 3)).mean((1, 2, 3)), a=linear(2, 2)
        ),
        (2, 2, 2, 2),
        refused(
            "node '_patch_merging_pad' (function _patch_merging_pad)",
            "patch merging mixes positions, and axis 1 is permuted",
        ),
        id="patch merging of units",
    ),
    # splits and sections
    pytest.param(
        lambda: Net(lambda m, x: torch.cat([m.a(x), m.b(x)], 1).split(2, 1)[0].sum(1), a=linear(3, 2), b=linear(3, 2)),
        (2, 3),
        refused("node 'split' (method .split())", "a split of a concatenated or head axis"),
        id="split of a concatenation",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x).view(-1, 2, 2).sum((1, 2)) + m.a(x).split(2, 1)[0].sum(1), a=linear(3, 4)),
        (2, 3),
        refused("node 'split' (method .split())", "a split of units that move in runs or blocks"),
        id="split of units in heads",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x).flatten(1).split(2, 1)[0].sum(1), a=conv(3, 2)),
        (2, 3, 2),
        refused("node 'split' (method .split())", "a split of units that move in runs or blocks"),
        id="split of units in blocks",
    ),
    pytest.param(
        lambda: Net(lambda m, x: (m.a(x) + m.l(m.a(x))).split(2, 1)[0].sum(1), a=linear(3, 4), l=linear(4, 4)),
        (2, 3),
        refused("node 'split' (method .split())", "l.weight would be cut along two axes"),
        id="split of a residual's square weight",
    ),
    pytest.param(  # b reads a concatenation in sections along its inputs; its outputs are split as well
        lambda: Net(
            lambda m, x: m.b(torch.cat([m.a(x), m.c(x)], 1)).split(2, 1)[0].sum(1),
            a=linear(3, 2),
            c=linear(3, 3),
            b=linear(5, 4),
        ),
        (2, 3),
        refused("node 'split' (method .split())", "b.weight would be cut along two axes"),
        id="split of a layer that reads a concatenation",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x).sum(dim=(x.dim() - 1, x.dim() - 2)), a=linear(3, 4)),
        (2, 3),
        refused("node 'sum_1' (method .sum())", "a reduction over axes the model computes (sub, sub_1)"),
        id="reduction over computed axes",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.l(m.a(x).view(-1, 2, 4)).mean((1, 2)), a=linear(3, 8), l=linear(4, 2)),
        (2, 3),
        refused(
            "node 'l' (module 'l', Linear)",
            "l.weight reads one head's dimensions, which the heads' permutations reorder",
        ),
        id="linear over head dimensions",
    ),
    pytest.param(
        lambda: Net(
            sections_of_two_sizes, a=linear(3, 2), b=linear(3, 2), c=linear(3, 1), d=linear(3, 3), l=linear(4, 2)
        ),
        (2, 3),
        refused(
            "node 'l_1' (module 'l', Linear)",
            "it reads l.weight in sections (0, 1, 4) along axis 1, and elsewhere otherwise",
        ),
        id="sections of two sizes",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: (m.l(torch.cat([m.a(x), m.b(x)], 1)) + m.l(m.c(x))).sum(1),
            a=linear(3, 2),
            b=linear(3, 2),
            c=linear(3, 4),
            l=linear(4, 2),
        ),
        (2, 3),
        refused("node 'l_1' (module 'l', Linear)", "it uses l.weight's sectioned axis 1 whole"),
        id="sectioned weight read whole",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: (m.a(x).view(-1, 2, 4) + m.c(x).unsqueeze(1)).mean((1, 2)), a=linear(3, 8), c=linear(3, 4)
        ),
        (2, 3),
        refused("node 'add' (function add)", "it joins one head's dimensions with an axis of other units"),
        id="head dimensions plus units",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: (torch.cat([m.a(x), m.b(x)], 1) + m.c(x)).sum(1),
            a=linear(3, 2),
            b=linear(3, 2),
            c=linear(3, 4),
        ),
        (2, 3),
        refused("node 'add' (function add)", "it joins a concatenated axis with an axis not concatenated the same way"),
        id="concatenation plus units",
    ),
    # tracing
    pytest.param(
        lambda: Net(checked_input, a=linear(3, 4)),
        (2, 3),
        "torch.fx cannot trace the model past node 'x' (placeholder 'x'): expects a tensor; traced on the example "
        "input, it fails too (TypeError: expects a tensor). Write the model's permutation_spec() by hand.",
        id="untraceable",
    ),
    pytest.param(
        lambda: Net(sign_branch, a=linear(3, 4)),
        (2, 3),
        "torch.fx cannot trace the model past node 'gt' (function gt): symbolically traced variables cannot be used as "
        "inputs to control flow; traced on the example input, its control flow depends on tensor values (bool() of "
        "node 'gt' (function gt)), so the graph would hold for this input only. Write the model's permutation_spec() "
        "by hand.",
        id="branch on a value",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x) * int(m.a(x).sum() > 0), a=linear(3, 4)),
        (2, 3),
        "torch.fx cannot trace the model past node 'gt' (function gt): int() argument must be a string, a bytes-like "
        "object or a real number, not 'Proxy'; traced on the example input, its control flow depends on tensor values "
        "(int() of node 'gt' (function gt)), so the graph would hold for this input only. Write the model's "
        "permutation_spec() by hand.",
        id="int of a value",
    ),
    pytest.param(
        lambda: Net(branch_on_a_layer, a=linear(3, 4), b=linear(3, 1)),
        (1, 3),
        "torch.fx cannot trace the model past node 'b' (module 'b', Linear): symbolically traced variables cannot be "
        "used as inputs to control flow; traced on the example input, its control flow depends on tensor values "
        "(bool() of node 'b' (module 'b', Linear)), so the graph would hold for this input only. Write the model's "
        "permutation_spec() by hand.",
        id="branch on a layer's output",
    ),
    pytest.param(
        lambda: Net(lambda m, x: [m.a(x), -m.a(x)][m.a(x).sum() > 0], a=linear(3, 4)),
        (2, 3),
        "torch.fx cannot trace the model past node 'gt' (function gt): list indices must be integers or slices, not "
        "Proxy; traced on the example input, its control flow depends on tensor values (int() of node 'gt' (function "
        "gt)), so the graph would hold for this input only. Write the model's permutation_spec() by hand.",
        id="index by a value",
    ),
]


@pytest.mark.parametrize("build, shape, message", REFUSALS)
def test_each_refusal_says_exactly_where_and_why(build, shape, message):
    torch.manual_seed(0)
    with pytest.raises(SpecInferenceError) as error:
        infer_spec(build(), torch.randn(*shape))
    assert str(error.value) == message


# The other side of each refusal's condition: the nearest network it must accept.
ACCEPTED = [
    pytest.param(  # a buffer in the state dict: permuted with the units it scales
        lambda: Net(lambda m, x: F.layer_norm(m.a(x), (4,), m.scale).sum(1), a=linear(3, 4), scale=torch.ones(4)),
        (2, 3),
        id="norm weight a buffer",
    ),
    pytest.param(
        lambda: Net(lambda m, x: (m.a(x).flatten(1) + m.b(x.flatten(1))).sum(1), a=conv(3, 2), b=linear(9, 6)),
        (2, 3, 3),
        id="blocks of 3 and 1",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x).flatten(1).view(-1, 2, 3).sum((1, 2)), a=conv(3, 2)),
        (2, 3, 3),
        id="heads of whole blocks",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: m.b(x).view(-1, 2, 2).sum((1, 2)) + (m.c(x) + m.b(x)).sum(1), b=linear(3, 4), c=linear(3, 4)
        ),
        (2, 3),
        id="runs joined in blocks of 1",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: (
                m.a(x).view(-1, 2, 4).sum((1, 2)) + m.b(x).view(-1, 2, 4).sum((1, 2)) + (m.a(x) + m.b(x)).sum(1)
            ),
            a=linear(3, 8),
            b=linear(3, 8),
        ),
        (2, 3),
        id="runs of one size",
    ),
    pytest.param(lambda: Net(lambda m, x: m.a(x) * m.a(x).size(1), a=linear(3, 4)), (2, 3), id="a size"),
    pytest.param(
        lambda: Net(lambda m, x: m.c(m.a(x).transpose(1, 2)).mean((1, 2)), a=linear(3, 4), c=nn.Conv1d(4, 2, 2)),
        (2, 2, 3),
        id="convolution over positions",
    ),
    pytest.param(
        lambda: Net(lambda m, x: F.max_pool1d(m.a(x), 2).mean((1, 2)), a=conv(3, 4)),
        (2, 3, 2),
        id="pooling over positions",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.g(m.a(x)).mean((1, 2)), a=conv(3, 4), g=conv(4, 4, groups=2)),
        (2, 3, 2),
        id="grouped convolution of units",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: (m.n(h := torch.cat([m.a(x), m.b(x)], 1)) + m.d(h)).mean((1, 2)),
            a=conv(3, 2),
            b=conv(3, 2),
            n=nn.GroupNorm(1, 4),
            d=nn.GroupNorm(4, 4),
        ),
        (2, 3, 2),
        id="group norms of one or every channel of a concatenation",
    ),
    pytest.param(
        lambda: Net(lambda m, x: F.layer_norm(m.a(x), (4,), m.w).sum(1), a=linear(3, 4), w=nn.Parameter(torch.ones(4))),
        (2, 3),
        id="norm weight a parameter",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.s(m.a(x)).sum(1), a=linear(3, 4), s=Stated()), (2, 3), id="stated symmetry"
    ),
    pytest.param(
        lambda: Net(lambda m, x: torch.movedim(m.a(x), 1, 2).mean((1, 2)), a=conv(3, 4)),
        (2, 3, 2),
        id="movedim of one axis",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x).view(-1, 2, 4).view(-1, 8).mean(1), a=linear(3, 8)),
        (2, 3),
        id="heads merged back",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x).view(-1, 2, 4).sum((1, 2)), a=linear(3, 8)),
        (2, 3),
        id="sum over heads and their dimensions",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: (m.a(x) + m.table[m.i]).sum((1, 2)),
            a=linear(3, 4),
            table=nn.Parameter(torch.ones(3, 4)),
            i=torch.tensor([0, 1]),
        ),
        (2, 2, 3),
        id="gather of a table's rows",
    ),
    pytest.param(
        lambda: Net(lambda m, x: m.a(x)[:1, 0:4].sum(1), a=linear(3, 4)), (2, 3), id="part of the batch, all the units"
    ),
    pytest.param(
        lambda: Net(lambda m, x: (m.a(x) @ m.w).sum(1), a=linear(3, 4), w=nn.Parameter(torch.ones(4, 2))),
        (2, 3),
        id="product with a matrix",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: torch.addmm(m.bias, x, m.weight).sum(1),
            weight=nn.Parameter(torch.ones(3, 4)),
            bias=nn.Parameter(torch.ones(4)),
        ),
        (2, 3),
        id="addmm of a weight and bias",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: torch.einsum("bi,ji->bj", m.a(x), m.w).sum(1), a=linear(3, 4), w=nn.Parameter(torch.ones(2, 4))
        ),
        (2, 3),
        id="einsum of explicit result",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: F.scaled_dot_product_attention(
                q := m.a(x).view(-1, 4, 2, 4).transpose(1, 2), q, q, attn_mask=m.causal
            ).mean((1, 2, 3)),
            a=linear(3, 8),
            causal=torch.tril(torch.ones(4, 4, dtype=torch.bool)),
        ),
        (2, 4, 3),
        id="causal attention mask",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: m.att(m.a(x), m.a(x), m.a(x))[0].mean((1, 2)),
            a=linear(3, 4),
            att=nn.MultiheadAttention(4, 2, batch_first=True),
        ),
        (2, 2, 3),
        id="attention without bias_kv",
    ),
    pytest.param(
        lambda: Net(lambda m, x: swin_transformer._patch_merging_pad(m.a(x)).mean((1, 2, 3)), a=linear(2, 2)),
        (2, 2, 2, 2),
        id="patch merging of positions",
    ),
    pytest.param(lambda: Net(lambda m, x: m.a(x).split(2, 1)[0].sum(1), a=linear(3, 4)), (2, 3), id="split of units"),
    pytest.param(
        lambda: Net(lambda m, x: m.l(m.a(x)).split(2, 1)[0].sum(1), a=linear(3, 4), l=linear(4, 4)),
        (2, 3),
        id="split of a square weight's units",
    ),
    pytest.param(
        lambda: Net(
            sections_of_two_sizes, a=linear(3, 2), b=linear(3, 2), c=linear(3, 2), d=linear(3, 2), l=linear(4, 2)
        ),
        (2, 3),
        id="sections of one size",
    ),
    pytest.param(
        lambda: Net(lambda m, x: (m.a(x).view(-1, 2, 4) + m.shift).mean((1, 2)), a=linear(3, 8), shift=torch.ones(4)),
        (2, 3),
        id="head dimensions plus a constant",
    ),
    pytest.param(
        lambda: Net(
            lambda m, x: (torch.cat([m.a(x), m.b(x)], 1) + torch.cat([m.c(x), m.d(x)], 1)).sum(1),
            a=linear(3, 2),
            b=linear(3, 2),
            c=linear(3, 2),
            d=linear(3, 2),
        ),
        (2, 3),
        id="concatenations of one size",
    ),
    pytest.param(  # units merged with a constant's axis; another class's units on the next axis stay apart
        lambda: Net(
            lambda m, x: (m.a(x)[:, :, None, None] * torch.ones(2, 1) * m.b(x)[:, None, None, :]).reshape(-1, 8, 2),
            a=linear(3, 4),
            b=linear(3, 2),
        ),
        (2, 3),
        id="merge beside another class",
    ),
    pytest.param(  # the units fixed after their split into heads: a part of a head's dimensions may be indexed
        lambda: Net(
            lambda m, x: (lambda heads: (m.a(x) + torch.ones(8)).sum(1) + heads[:, :, 0].sum(1))(m.a(x).view(-1, 2, 4)),
            a=linear(3, 8),
        ),
        (2, 3),
        id="heads fixed later, then indexed",
    ),
    pytest.param(  # both parts of a concatenation fixed after it: the concatenated axis may be split
        lambda: Net(
            lambda m, x: (
                lambda joined: (
                    (m.a(x) + torch.ones(4)).sum(1)
                    + (m.b(x) + torch.ones(4)).sum(1)
                    + joined.view(-1, 2, 4).sum((1, 2))
                )
            )(torch.cat([m.a(x), m.b(x)], 1)),
            a=linear(3, 4),
            b=linear(3, 4),
        ),
        (2, 3),
        id="parts fixed later, then split",
    ),
]


@pytest.mark.parametrize("build, shape", ACCEPTED)
def test_the_nearest_network_on_the_other_side_is_accepted(build, shape):
    torch.manual_seed(0)
    assert isinstance(infer_spec(build(), torch.randn(*shape)), PermutationSpec)


def test_a_class_joined_to_itself_in_two_block_sizes_is_a_conflict():
    """Joined axes have one size, and a class's size fixes the block: a network reaches this only after the
    inference joined classes of two sizes (an einsum comparing 2 query heads with 4 key heads), so it is checked on
    the union-find itself."""
    classes = UnionFind()
    classes.attach(("merged", 1), ("a.weight", 0), 2)
    with pytest.raises(BlockConflict) as error:
        classes.union(("merged", 1), ("a.weight", 0))
    assert str(error.value) == "it joins ('merged', 1) and ('a.weight', 0), blocks of 2 and 1 entries of the same units"


def test_a_fixed_class_ignores_block_sizes_and_equal_blocks_join():
    classes = UnionFind()
    classes.attach(("merged", 1), FIXED, 2)
    classes.union(("merged", 1), FIXED)  # fixed: the block sizes do not matter
    classes.attach(("other", 1), ("a.weight", 0), 2)
    classes.attach(("again", 1), ("a.weight", 0), 2)
    classes.union(("other", 1), ("again", 1))
    assert classes.block(("again", 1)) == classes.block(("other", 1)) == 2
    assert not classes.permuted(("merged", 1)) and classes.permuted(("again", 1))


class HeadsOfTwoSizes(nn.Module):
    """An einsum comparing 2 query heads of 4 dimensions with 4 key heads of 4: it joins 8 query units with 16 key
    units, which no permutation can act on together."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.head = nn.Linear(3, 8), nn.Linear(3, 16), nn.Linear(1, 2)

    def forward(self, x):  # (batch, 3)
        q, k = self.q(x).view(-1, 2, 4), self.k(x).view(-1, 4, 4)
        return self.head(torch.einsum("bhd,bgd->bhg", q, k).sum((1, 2))[:, None])


def test_a_spec_whose_axes_differ_in_length_is_refused_not_returned():
    with pytest.raises(SpecInferenceError) as error:
        infer_spec(HeadsOfTwoSizes(), torch.randn(2, 3))
    assert str(error.value) == (
        "cannot infer the permutation spec: permutation 'q' acts on axes of different sizes (8 and 16 at "
        "'k.weight'). Write the model's permutation_spec() by hand."
    )


def test_a_buffer_given_as_a_norm_weight_is_permuted_with_its_units():
    model = Net(lambda m, x: F.layer_norm(m.a(x), (4,), m.scale).sum(1), a=linear(3, 4), scale=torch.rand(4))
    assert infer_spec(model, torch.randn(2, 3)).axes == {"a": (("a.weight", 0), ("a.bias", 0), ("scale", 0))}


def test_a_model_that_fails_on_the_example_input_is_refused_naming_the_node_and_the_error():
    with pytest.raises(SpecInferenceError) as error:
        infer_spec(nn.Sequential(nn.Linear(3, 2)), torch.randn(2, 5))
    assert str(error.value).splitlines()[0] == (
        "the model fails on the example input at node '_0' (module '0', Linear): mat1 and mat2 shapes cannot be "
        "multiplied (2x5 and 3x2)"
    )
