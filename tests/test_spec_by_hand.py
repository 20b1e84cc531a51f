"""Whole inferred specs checked against ones written by hand, on networks that spell operations in their less common
ways: keyword arguments (``F.scaled_dot_product_attention(query=...)``, ``F.layer_norm(weight=...)``), a permute by
a tuple or by varargs, a transpose by keywords, a movedim, an einsum of a list of operands or of separate ones, an
embedding (module and function), a linear map stored ``(in, out)`` and applied by ``torch.addmm``, a PReLU per
channel, a functional group norm, attention across units (keys with values) and a mask given positionally. Every
permutation, every pair it acts on, its runs and its blocks are compared (nothing more, nothing less); the
permutations keep the function and weight matching recovers a planted one."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lmcot.align.methods import align, permuted_copy
from lmcot.any_network import with_inferred_spec
from lmcot.permutation import invert_permutations, random_permutations
from lmcot.spec_inference import infer_spec


class Spelled(nn.Module):
    """Attention with keyword arguments, its heads split by a view and put back by a movedim and a reshape, then an
    einsum of a list of operands."""

    def __init__(self):
        super().__init__()
        self.a, self.q, self.k, self.v, self.o = nn.Linear(3, 8), *[nn.Linear(8, 8) for _ in range(4)]
        self.w, self.bias = nn.Parameter(torch.rand(4, 8) + 0.5), nn.Parameter(torch.randn(4, 8))  # (tokens, units)
        self.mix, self.head = nn.Parameter(torch.randn(8, 6) / 3), nn.Linear(6, 2)

    def forward(self, x):  # (batch, 4 tokens, 3)
        h = F.layer_norm(self.a(x), normalized_shape=(4, 8), weight=self.w, bias=self.bias)  # over two axes
        q = self.q(h).view(h.shape[0], 4, 2, 4).permute((0, 2, 1, 3))  # (batch, 2 heads, 4 tokens, 4)
        k = self.k(h).view(h.shape[0], 4, 2, 4).permute(0, 2, 1, 3)
        v = self.v(h).view(h.shape[0], 4, 2, 4).transpose(dim0=1, dim1=2)
        y = F.scaled_dot_product_attention(query=q, key=k, value=v)
        h = h + self.o(y.movedim(1, 2).reshape(h.shape))
        h = torch.einsum("btd,de->bte", [h, self.mix])  # mix is no layer: its outputs are no permutation's
        return self.head(h.sum(dim=1, keepdim=True).squeeze(1))


class Positional(nn.Module):
    """Positional spellings and the less common layers: an embedding (module and function), a transposed linear map
    by ``torch.addmm``, a PReLU per channel, a functional group norm, a movedim, an einsum of separate operands."""

    def __init__(self):
        super().__init__()
        self.embed, self.table = nn.Embedding(10, 6), nn.Parameter(torch.randn(10, 6))
        self.proj_w, self.proj_b = nn.Parameter(torch.randn(6, 4) / 2), nn.Parameter(torch.randn(4))
        self.conv, self.slope = nn.Conv1d(4, 6, 1), nn.PReLU(6)
        self.gn_w, self.gn_b = nn.Parameter(torch.rand(6) + 0.5), nn.Parameter(torch.randn(6))
        self.w, self.b = nn.Parameter(torch.rand(6) + 0.5), nn.Parameter(torch.randn(6))
        self.up, self.head = nn.Linear(6, 5), nn.Linear(5, 2)

    def forward(self, tokens):  # (batch, 3) indices
        h = self.embed(tokens) + F.embedding(tokens, weight=self.table)  # (batch, 3, 6): the tables' columns
        h = torch.addmm(self.proj_b, h.flatten(0, 1), self.proj_w).view(-1, 3, 4)  # (batch, 3, 4)
        h = self.slope(self.conv(h.movedim(2, 1)))  # (batch, 6, 3)
        h = F.group_norm(h, num_groups=3, weight=self.gn_w, bias=self.gn_b)  # 3 groups of 2 channels
        h = F.layer_norm(h.movedim(1, -1), (6,), self.w, self.b)  # (batch, 3, 6)
        u = torch.einsum("btc,oc->bto", h, self.up.weight) + self.up.bias  # up is not called: no permutation
        return self.head(torch.amax(torch.relu(u), dim=1))


class CrossCovariance(nn.Module):
    """Attention across units instead of tokens (XCiT's cross-covariance attention): ``(batch, units, tokens)``
    operands, so the keys' and the values' units are summed over together and the queries' units are the output's;
    a causal mask over those units, given positionally, that keeps nothing permuted; a product of two matrices."""

    def __init__(self):
        super().__init__()
        self.a, self.q, self.k, self.v, self.o = nn.Linear(3, 8), *[nn.Linear(8, 8) for _ in range(4)]
        self.register_buffer("causal", torch.tril(torch.ones(4, 4, dtype=torch.bool)))
        self.square, self.head = nn.Parameter(torch.randn(8, 8) / 3), nn.Linear(8, 2)

    def forward(self, x):  # (batch, 4 tokens, 3)
        h = self.a(x)
        q, k, v = (p(h).transpose(1, 2) for p in (self.q, self.k, self.v))  # (batch, 8 units, 4 tokens)
        h = h + self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2))
        t = h.transpose(1, 2)  # tokens last: a causal mask over the tokens, given positionally
        h = h + F.scaled_dot_product_attention(t.transpose(1, 2), t.transpose(1, 2), t.transpose(1, 2), self.causal)
        return self.head(h.mean(1) @ self.square)


class CrossAttention(nn.Module):
    """``nn.MultiheadAttention`` from one stream to another of another width (``kdim``, ``vdim``: separate query, key
    and value weights), without biases, called with keywords."""

    def __init__(self):
        super().__init__()
        self.a, self.c, self.head = nn.Linear(3, 8), nn.Linear(3, 6), nn.Linear(8, 2)
        self.attention = nn.MultiheadAttention(8, 2, bias=False, kdim=6, vdim=6, batch_first=True)

    def forward(self, x):  # (batch, 4 tokens, 3)
        h, context = self.a(x), torch.relu(self.c(x))
        y = self.attention(query=h, key=context, value=context, need_weights=False)[0]
        return self.head((h + y).mean(1))


class Kitchen(nn.Module):
    """The other layers and spellings: 3-D and 1-D convolutions, norms and pooling, a GroupNorm module, a LayerNorm
    over two axes (tokens and units), transposes by function, a reduction over a list of axes, a PReLU of one slope,
    Unflatten and Flatten modules, an expansion and a concatenation with a tensor of zeros."""

    def __init__(self):
        super().__init__()
        self.c3, self.bn3, self.pool3 = nn.Conv3d(2, 4, 1), nn.BatchNorm3d(4), nn.MaxPool3d(2)
        self.c1, self.bn1, self.pool1 = nn.Conv1d(4, 6, 1), nn.BatchNorm1d(6), nn.AvgPool1d(2)
        self.gn, self.ln, self.act = nn.GroupNorm(3, 6), nn.LayerNorm((4, 6)), nn.PReLU()
        self.unflatten, self.flatten = nn.Unflatten(1, (6, 1)), nn.Flatten()
        self.lin, self.head = nn.Linear(6, 5), nn.Linear(7, 2)

    def forward(self, x):  # (batch, 2, 4, 4, 4)
        h = self.pool3(self.bn3(self.c3(x))).flatten(2)  # (batch, 4 channels, 8 positions)
        h = self.gn(self.pool1(self.bn1(self.c1(h))))  # (batch, 6, 4)
        h = self.ln(torch.transpose(h, 1, 2)).unsqueeze(1).squeeze(1)  # (batch, 4, 6)
        h = self.act(torch.amax(torch.swapaxes(h, 1, 2), dim=[-1]))  # (batch, 6)
        h = self.lin(self.flatten(self.unflatten(h)))[..., None].expand(-1, -1, 3).sum(2)  # (batch, 5)
        return self.head(torch.concat([h, h.new_zeros(h.shape[0], 2)], dim=1))


class Indexing(nn.Module):
    """Indexing by slices (part of the tokens, or written out in full), ``...``, ``None``, integers and a tensor of
    indices (a gather from a table, and from the input); transposes, permutes and movedims by negative axes and by
    keywords; reductions with ``keepdim`` given either way, over a tuple of axes, over the units (then read by a
    layer of one input)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head, self.one = nn.Linear(3, 8), nn.Linear(8, 5), nn.Linear(8, 2), nn.Linear(1, 2)
        self.table = nn.Parameter(torch.randn(3, 7))
        self.register_buffer("index", torch.tensor([0, 2, 1, 2]))

    def forward(self, x):  # (batch, 4 tokens, 3)
        h = self.a(x)  # (batch, 4, 8)
        y = h[:, 1:3][..., None, :][:, 0]  # a part of the tokens, a new axis, one token: (batch, 1, 8)
        y = y[0:6, :, 0:8].squeeze(1) + h[:, None, 0].squeeze(1)  # slices written out in full keep their axes
        z = self.b(h).permute(0, -1, 1).transpose(-1, -2).movedim(source=-1, destination=1)  # (batch, 5, 4)
        z = torch.sum(z, 2, True).amin(-1) + torch.movedim(z, 1, 2).mean(dim=(1,))  # (batch, 5)
        z = torch.permute(z[:, None], (0, 2, 1))[:, :, -1]  # (batch, 5)
        gathered = (self.table[:, self.index] * 2).sum() + (self.table[self.index, 0] * 2).sum()
        gathered = gathered + (x[:, self.index] * 2).mean()  # tokens of the input, by position
        return self.head(y + h[..., -1, :]) + self.one(z.sum(1, keepdim=True)) + gathered


class AttentionWeights(nn.Module):
    """``nn.MultiheadAttention`` whose attention weights the model reads, per head (4 axes, where its query has 3):
    no residual, so its output units are a permutation of their own."""

    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Linear(3, 8), nn.Linear(8, 2)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):  # (batch, 4 tokens, 3)
        h = self.a(x)
        y, weights = self.attention(h, h, h, average_attn_weights=False)  # weights: (batch, 2 heads, 4, 4)
        return self.head(y.mean(1)) + weights.mean((1, 2, 3))[:, None]


class Conv1DLike(nn.Module):
    """A linear map stored ``(in, out)`` (GPT-2's Conv1D), applied by the model's own ``torch.addmm``."""

    def __init__(self, i, o):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(i, o) / 2), nn.Parameter(torch.randn(o))


class Odd(nn.Module):
    """Rarer paths: a depthwise convolution without bias, channels merged with positions in two steps (blocks of
    blocks), a linear map of a submodule applied by ``torch.addmm``, a bias-free layer's outputs chunked in two, one
    unit copied along an axis (taken as fixed: the inference does not tell a copy from a constant), a position
    embedding expanded over the batch, an embedding split in two."""

    def __init__(self):
        super().__init__()
        self.conv, self.depthwise = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1, groups=4, bias=False)
        self.flat = nn.Linear(24, 6)  # reads 4 channels x 2 x 3 positions, merged in two steps
        self.block = nn.Module()
        self.block.proj = Conv1DLike(6, 6)
        self.packed = nn.Linear(6, 8, bias=False)  # its outputs chunked in two
        self.single, self.position = nn.Linear(6, 1), nn.Parameter(torch.randn(4, 8))
        self.wide, self.embedded, self.out = nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(8, 2)
        self.embed, self.head = nn.Embedding(5, 4), nn.Linear(4, 2)

    def forward(self, x):  # (batch, 3, 2, 3)
        h = self.depthwise(torch.relu(self.conv(x)))
        h = h.view(h.shape[0], 8, 3).flatten(1)  # (batch, 4 * 2 * 3): blocks of 2, then of 2 * 3
        h = torch.relu(self.flat(h))  # (batch, 6)
        h = torch.addmm(self.block.proj.bias, h, self.block.proj.weight)  # (batch, 6)
        first, second = self.packed(h).chunk(2, dim=-1)  # (batch, 4) each
        copied = self.single(h)[:, None].expand(-1, 4, 8) + self.wide(h)[:, None]  # (batch, 4, 8)
        tokens = self.embedded(h)[:, None] + self.position.expand(h.shape[0], -1, -1)  # (batch, 4, 8)
        looked_up = self.embed(torch.zeros_like(x[:, 0, :1, 0], dtype=torch.long)).split(2, dim=-1)  # (batch, 1, 2) x 2
        return (
            self.head(first * second)
            + self.out(tokens.mean(1))
            + copied.mean((1, 2))[:, None]
            + looked_up[0].sum((1, 2))[:, None]
        )


class Joined(nn.Module):
    """Concatenations nested, by keyword and by default (of the batch); a product with a buffer that broadcasts over
    the channels; a layer's units split in two and read whole as well; the batch split in halves."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 3, 1), nn.Conv2d(3, 4, 1)
        self.register_buffer("mix", torch.randn(1, 1, 3, 3) / 2)  # a buffer: its axes are fixed
        self.reader, self.split_me = nn.Conv2d(9, 2, 1), nn.Conv2d(3, 6, 1)
        self.left, self.right, self.whole = nn.Conv2d(2, 2, 1), nn.Conv2d(4, 2, 1), nn.Conv2d(6, 2, 1)
        self.head = nn.Linear(2, 2)

    def forward(self, x):  # (batch, 3, 3, 3)
        h = torch.cat([torch.cat(tensors=(self.a(x), self.b(x)), dim=1), self.c(x)], 1)  # (batch, 2 + 3 + 4, 3, 3)
        y = self.reader(torch.relu(h @ self.mix))  # the product mixes positions only
        cut = self.split_me(x)
        left, right = cut.split([2, 4], dim=1)  # its units cut in two sections...
        y = y + self.left(left) + self.right(right) + self.whole(cut)  # ...and read whole too
        y = torch.cat([y, y]).mean((0, 2, 3))[None]  # (1, 2): the batch concatenated, then averaged
        first, second = cut.split(3)  # halves of the batch
        return self.head(y) + (first - second).mean() + x[:, None, 0].mean()


class Unaffine(nn.Module):
    """Two group norms without affine parameters, each of 2 groups of 2 channels: each layer's channels move in runs
    of their own heads."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1), nn.Linear(4, 2)
        self.norm_a, self.norm_b = nn.GroupNorm(2, 4, affine=False), nn.GroupNorm(2, 4, affine=False)

    def forward(self, x):  # (batch, 3, 2, 2)
        return self.head(self.norm_b(self.b(self.norm_a(self.a(x)))).mean((2, 3)))


class FlattenedFirst(nn.Module):
    """A Linear's 8 units added to 4 channels x 2 positions flattened: the channels are the units, and the
    Linear's moves blocks of 2 of them, whichever of the two the model computes first."""

    def __init__(self, linear_first: bool = False):
        super().__init__()
        self.conv, self.linear, self.head = nn.Conv1d(1, 4, 1), nn.Linear(3, 8), nn.Linear(8, 2)
        self.linear_first = linear_first

    def forward(self, x):  # (batch, 3)
        if self.linear_first:
            h = self.linear(x) + self.conv(x[:, None, :2]).flatten(1)
        else:
            h = self.conv(x[:, None, :2]).flatten(1) + self.linear(x)
        return self.head(h)


class PooledFlatten(nn.Module):
    """Channels pooled to 2 x 3 positions and flattened: each channel a block of 6 inputs of the Linear."""

    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d((2, 3)), nn.Linear(24, 2)

    def forward(self, x):  # (batch, 3, 4, 4)
        return self.fc(self.pool(self.conv(x)).flatten(1))


class HeadsBehindOne(nn.Module):
    """Units split into 2 heads of 4 behind an axis of size 1, and merged back."""

    def __init__(self):
        super().__init__()
        self.lin, self.head = nn.Linear(3, 8), nn.Linear(8, 2)

    def forward(self, x):  # (batch, 3)
        h = self.lin(x)[:, None].view(-1, 1, 2, 4).relu()
        return self.head(h.reshape(-1, 1, 8)[:, 0])


class OuterHeads(nn.Module):
    """Two layers' units on two axes of one tensor (an outer product); the first's split into heads and merged
    back: the second's axis, after them, keeps its class through both reshapes."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(3, 4), nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x):  # (batch, 3)
        h = (self.a(x)[:, :, None] * self.b(x)[:, None, :]).view(-1, 2, 2, 3).relu()  # (batch, heads, size, 3)
        return self.head(h.reshape(-1, 4, 3).mean(1))


class TwoSplits(nn.Module):
    """One view splits two classes' units into heads (2 of 2, 3 of 2): two groups, named by their axes."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(3, 4), nn.Linear(3, 6), nn.Linear(6, 2)

    def forward(self, x):  # (batch, 3)
        h = (self.a(x)[:, :, None] * self.b(x)[:, None, :]).view(-1, 2, 2, 3, 2).relu()
        return self.head(h.reshape(-1, 4, 6).mean(1))


class ScalarFirst(nn.Module):
    """A layer's outputs scaled by a size the model reads from them, the number written first."""

    def __init__(self):
        super().__init__()
        self.lin, self.head = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):  # (batch, 3)
        h = self.lin(x)
        return self.head(h.shape[1] * h)


class ConcatPlusConstant(nn.Module):
    """A concatenation of two layers' units plus a constant that differs along them: both parts fixed."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head, self.out = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(8, 3), nn.Linear(3, 2)

    def forward(self, x):  # (batch, 3)
        return self.out(torch.relu(self.head(torch.cat([self.a(x), self.b(x)], 1) + torch.arange(8.0))))


class TwoConcatenations(nn.Module):
    """Two concatenations of two layers each, added: their parts join one by one."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = nn.Linear(3, 2), nn.Linear(3, 3), nn.Linear(3, 2), nn.Linear(3, 3)
        self.head = nn.Linear(5, 2)

    def forward(self, x):  # (batch, 3)
        return self.head(torch.cat([self.a(x), self.b(x)], 1) + torch.cat([self.c(x), self.d(x)], 1))


class TwoSlopes(nn.Module):
    """A PReLU of two channels: its slopes move with the units (one slope for all would not)."""

    def __init__(self):
        super().__init__()
        self.lin, self.act, self.head, self.out = nn.Linear(3, 2), nn.PReLU(2), nn.Linear(2, 4), nn.Linear(4, 2)
        nn.init.uniform_(self.act.weight, -1.0, 1.0)

    def forward(self, x):  # (batch, 3)
        return self.out(torch.relu(self.head(self.act(self.lin(x)))))


class ReturnsSplit(nn.Module):
    """A model that returns a split's pieces as they are: the returned units are fixed."""

    def __init__(self):
        super().__init__()
        self.lin, self.mid = nn.Linear(3, 4), nn.Linear(4, 4)

    def forward(self, x):  # (batch, 3) -> two (batch, 2)
        return self.mid(torch.relu(self.lin(x))).split(2, dim=1)


class ReturnsAttention(nn.Module):
    """A model that returns ``nn.MultiheadAttention``'s tuple as it is: the output projection's units are fixed."""

    def __init__(self):
        super().__init__()
        self.lin, self.mha = nn.Linear(3, 4), nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x):  # (batch, tokens, 3) -> ((batch, tokens, 4), attention weights)
        h = self.lin(x)
        return self.mha(h, h, h)


class BatchMean(nn.Module):
    """An output averaged over the batch: no fixed axis comes before the output units that the output fixes."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):  # (batch, 3) -> (2,)
        return self.b(torch.relu(self.a(x))).mean(0)


CASES = {
    "keywords": (
        Spelled,
        lambda: torch.randn(6, 4, 3),
        {
            "a": {("a.weight", 0), ("a.bias", 0), ("w", 1), ("bias", 1), ("q.weight", 1), ("k.weight", 1),
                  ("v.weight", 1), ("o.weight", 0), ("o.bias", 0), ("mix", 0)},
            "q": {("q.weight", 0), ("q.bias", 0), ("k.weight", 0), ("k.bias", 0)},
            "v": {("v.weight", 0), ("v.bias", 0), ("o.weight", 1)},
        },
        {"q": ("<view>", 4), "v": ("<view>", 4)},  # the heads of the first view: queries, keys and values share them
    ),
    "positional": (
        Positional,
        lambda: torch.randint(0, 10, (6, 3), generator=torch.Generator().manual_seed(0)),
        {
            "embed": {("embed.weight", 1), ("table", 1), ("proj_w", 0)},  # named after the first embedding
            "proj_w": {("proj_w", 1), ("proj_b", 0), ("conv.weight", 1)},  # named after the weight the model holds
            "conv": {("conv.weight", 0), ("conv.bias", 0), ("slope.weight", 0), ("gn_w", 0), ("gn_b", 0), ("w", 0),
                     ("b", 0), ("up.weight", 1)},
        },
        {"conv": ("<gn_w groups>", 2)},  # the group norm's 3 groups of 2 channels move whole
    ),
    "kitchen": (
        Kitchen,
        lambda: torch.randn(6, 2, 4, 4, 4),
        {
            "c3": {("c3.weight", 0), ("c3.bias", 0), ("c1.weight", 1)}
            | {(f"bn3.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")},
            "c1": {("c1.weight", 0), ("c1.bias", 0), ("gn.weight", 0), ("gn.bias", 0), ("lin.weight", 1)}
            | {(f"bn1.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")}
            | {("ln.weight", 1), ("ln.bias", 1)},  # the LayerNorm's axis 0 is the tokens': fixed
            "lin": {("lin.weight", 0), ("lin.bias", 0), ("head.weight[0:5]", 1)},  # the zeros' columns: fixed
        },
        {"c1": ("<gn.weight groups>", 2)},
        {"head.weight": (1, (0, 5, 7))},
    ),
    "indexing": (
        Indexing,
        lambda: torch.randn(6, 4, 3),
        {
            "a": {("a.weight", 0), ("a.bias", 0), ("b.weight", 1), ("head.weight", 1)},
            "b": {("b.weight", 0), ("b.bias", 0)},  # summed over at the end: no other tensor holds them
        },
        {},
    ),
    "attention weights": (
        AttentionWeights,
        lambda: torch.randn(6, 4, 3),
        {
            "a": {("a.weight", 0), ("a.bias", 0)} | {(f"attention.in_proj_weight[{i}:{i + 8}]", 1) for i in (0, 8, 16)},
            "attention.qk": {(f"attention.in_proj_{t}[{i}:{i + 8}]", 0) for t in ("weight", "bias") for i in (0, 8)},
            "attention.vo": {("attention.in_proj_weight[16:24]", 0), ("attention.in_proj_bias[16:24]", 0)}
            | {("attention.out_proj.weight", 1)},
            "attention.out_proj": {("attention.out_proj.weight", 0), ("attention.out_proj.bias", 0)}
            | {("head.weight", 1)},
        },
        {"attention.qk": ("<attention heads>", 4), "attention.vo": ("<attention heads>", 4)},
        {f"attention.in_proj_{t}": (0, (0, 8, 16, 24)) for t in ("weight", "bias")},
    ),
    "odd": (
        Odd,
        lambda: torch.randn(6, 3, 2, 3),
        {
            "conv": {("conv.weight", 0), ("conv.bias", 0), ("depthwise.weight", 0), ("flat.weight", 1)},
            "flat": {("flat.weight", 0), ("flat.bias", 0), ("block.proj.weight", 0)},
            "block.proj": {("block.proj.weight", 1), ("block.proj.bias", 0), ("packed.weight[0:4]", 1)}
            | {("packed.weight[4:8]", 1), ("single.weight", 1), ("wide.weight", 1), ("embedded.weight", 1)},
            "packed[0:4]": {("packed.weight[0:4]", 0), ("packed.weight[4:8]", 0), ("head.weight", 1)},  # multiplied
            "single": {("single.weight", 0), ("single.bias", 0)},
            "embedded": {("embedded.weight", 0), ("embedded.bias", 0), ("position", 1), ("out.weight", 1)},
            "embed[0:2]": {("embed.weight[0:2]", 1)},  # summed over: free
            "embed[2:4]": {("embed.weight[2:4]", 1)},  # never read: free
        },  # wide's units meet a copy of single's one unit: fixed
        {},
        {"packed.weight": (0, (0, 4, 8)), "embed.weight": (1, (0, 2, 4))},
        {("flat.weight", 1): 6},  # 2 x 3 positions per channel
    ),
    "flattened_first": (
        FlattenedFirst,
        lambda: torch.randn(6, 3),
        {"conv": {("conv.weight", 0), ("conv.bias", 0), ("linear.weight", 0), ("linear.bias", 0), ("head.weight", 1)}},
        {},
        {},
        {("linear.weight", 0): 2, ("linear.bias", 0): 2, ("head.weight", 1): 2},
    ),
    "linear_first": (  # the same classes, named after the first producer
        lambda: FlattenedFirst(linear_first=True),
        lambda: torch.randn(6, 3),
        {"linear": {("conv.weight", 0), ("conv.bias", 0), ("linear.weight", 0), ("linear.bias", 0)}
         | {("head.weight", 1)}},
        {},
        {},
        {("linear.weight", 0): 2, ("linear.bias", 0): 2, ("head.weight", 1): 2},
    ),
    "pooled_flatten": (
        PooledFlatten,
        lambda: torch.randn(6, 3, 4, 4),
        {"conv": {("conv.weight", 0), ("conv.bias", 0), ("fc.weight", 1)}},
        {},
        {},
        {("fc.weight", 1): 6},
    ),
    "heads_behind_one": (
        HeadsBehindOne,
        lambda: torch.randn(6, 3),
        {"lin": {("lin.weight", 0), ("lin.bias", 0), ("head.weight", 1)}},
        {"lin": ("<view>", 4)},
    ),
    "outer_heads": (
        OuterHeads,
        lambda: torch.randn(6, 3),
        {"a": {("a.weight", 0), ("a.bias", 0)}, "b": {("b.weight", 0), ("b.bias", 0), ("head.weight", 1)}},
        {"a": ("<view>", 2)},  # a's units are summed over: its heads move, nothing reads them
    ),
    "two_splits": (
        TwoSplits,
        lambda: torch.randn(6, 3),
        {"a": {("a.weight", 0), ("a.bias", 0)}, "b": {("b.weight", 0), ("b.bias", 0), ("head.weight", 1)}},
        {"a": ("<view> axis 1", 2), "b": ("<view> axis 3", 2)},  # one heads tensor each, not one group
    ),
    "scalar_first": (
        ScalarFirst,
        lambda: torch.randn(6, 3),
        {"lin": {("lin.weight", 0), ("lin.bias", 0), ("head.weight", 1)}},
        {},
    ),
    "concat_plus_constant": (
        ConcatPlusConstant,
        lambda: torch.randn(6, 3),
        {"head": {("head.weight[0:4]", 0), ("head.weight[4:8]", 0), ("head.bias", 0), ("out.weight", 1)}},
        {},
        {"head.weight": (1, (0, 4, 8))},  # cut where the parts meet, though both are fixed
    ),
    "two_concatenations": (
        TwoConcatenations,
        lambda: torch.randn(6, 3),
        {
            "a": {("a.weight", 0), ("a.bias", 0), ("c.weight", 0), ("c.bias", 0), ("head.weight[0:2]", 1)},
            "b": {("b.weight", 0), ("b.bias", 0), ("d.weight", 0), ("d.bias", 0), ("head.weight[2:5]", 1)},
        },
        {},
        {"head.weight": (1, (0, 2, 5))},
    ),
    "two_slopes": (
        TwoSlopes,
        lambda: torch.randn(6, 3),
        {
            "lin": {("lin.weight", 0), ("lin.bias", 0), ("act.weight", 0), ("head.weight", 1)},
            "head": {("head.weight", 0), ("head.bias", 0), ("out.weight", 1)},
        },
        {},
    ),
    "returns_split": (
        ReturnsSplit,
        lambda: torch.randn(6, 3),
        {"lin": {("lin.weight", 0), ("lin.bias", 0), ("mid.weight[0:2]", 1), ("mid.weight[2:4]", 1)}},
        {},
        {"mid.weight": (0, (0, 2, 4))},  # the cut of its bias is in no permutation
    ),
    "returns_attention": (
        ReturnsAttention,
        lambda: torch.randn(6, 5, 3),
        {
            "lin": {("lin.weight", 0), ("lin.bias", 0)}
            | {(f"mha.in_proj_weight[{a}:{a + 4}]", 1) for a in (0, 4, 8)},
            "mha.qk": {(f"mha.in_proj_{k}[{a}:{a + 4}]", 0) for k in ("weight", "bias") for a in (0, 4)},
            "mha.vo": {("mha.in_proj_weight[8:12]", 0), ("mha.in_proj_bias[8:12]", 0), ("mha.out_proj.weight", 1)},
        },
        {"mha.qk": ("<mha heads>", 2), "mha.vo": ("<mha heads>", 2)},
        {"mha.in_proj_weight": (0, (0, 4, 8, 12)), "mha.in_proj_bias": (0, (0, 4, 8, 12))},
    ),
    "batch_mean": (BatchMean, lambda: torch.randn(6, 3), {"a": {("a.weight", 0), ("a.bias", 0), ("b.weight", 1)}}, {}),
    "joined": (
        Joined,
        lambda: torch.randn(6, 3, 3, 3),
        {
            "a": {("a.weight", 0), ("a.bias", 0), ("reader.weight[0:2]", 1)},  # the nested parts, side by side
            "b": {("b.weight", 0), ("b.bias", 0), ("reader.weight[2:5]", 1)},
            "c": {("c.weight", 0), ("c.bias", 0), ("reader.weight[5:9]", 1)},
            "reader": {(f"{n}.bias", 0) for n in ("reader", "left", "right", "whole")}
            | {("reader.weight[0:2]", 0), ("reader.weight[2:5]", 0), ("reader.weight[5:9]", 0), ("head.weight", 1)}
            | {("left.weight", 0), ("right.weight", 0), ("whole.weight[0:2]", 0), ("whole.weight[2:6]", 0)},
            "split_me[0:2]": {("split_me.weight[0:2]", 0), ("split_me.bias[0:2]", 0), ("left.weight", 1)}
            | {("whole.weight[0:2]", 1)},
            "split_me[2:6]": {("split_me.weight[2:6]", 0), ("split_me.bias[2:6]", 0), ("right.weight", 1)}
            | {("whole.weight[2:6]", 1)},
        },
        {},
        {"reader.weight": (1, (0, 2, 5, 9)), "whole.weight": (1, (0, 2, 6))}
        | {"split_me.weight": (0, (0, 2, 6)), "split_me.bias": (0, (0, 2, 6))},
    ),
    "group norms without weights": (
        Unaffine,
        lambda: torch.randn(6, 3, 2, 2),
        {
            "a": {("a.weight", 0), ("a.bias", 0), ("b.weight", 1)},
            "b": {("b.weight", 0), ("b.bias", 0), ("head.weight", 1)},
        },
        {"a": ("<a.weight groups>", 2), "b": ("<b.weight groups>", 2)},  # each norm's groups: heads of their own
    ),
    "cross-attention": (
        CrossAttention,
        lambda: torch.randn(6, 4, 3),
        {
            "a": {("a.weight", 0), ("a.bias", 0), ("attention.q_proj_weight", 1), ("attention.out_proj.weight", 0),
                  ("head.weight", 1)},
            "c": {("c.weight", 0), ("c.bias", 0), ("attention.k_proj_weight", 1), ("attention.v_proj_weight", 1)},
            "attention.qk": {("attention.q_proj_weight", 0), ("attention.k_proj_weight", 0)},
            "attention.vo": {("attention.v_proj_weight", 0), ("attention.out_proj.weight", 1)},
        },
        {"attention.qk": ("<attention heads>", 4), "attention.vo": ("<attention heads>", 4)},
    ),
    "cross-covariance": (
        CrossCovariance,
        lambda: torch.randn(6, 4, 3),
        {
            "a": {("a.weight", 0), ("a.bias", 0), ("q.weight", 1), ("k.weight", 1), ("v.weight", 1), ("o.weight", 0),
                  ("o.bias", 0), ("square", 0)},  # square's columns: no layer's outputs
            "q": {("q.weight", 0), ("q.bias", 0), ("o.weight", 1)},  # the queries' units are the output's
            "k": {("k.weight", 0), ("k.bias", 0), ("v.weight", 0), ("v.bias", 0)},  # summed over together
        },
        {},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_the_whole_spec_is_the_one_written_by_hand(name):
    build, inputs, axes, groups, *extra = CASES[name]
    sections, blocks = (*extra, {}, {})[:2]
    torch.manual_seed(0)
    spec = infer_spec(build(), inputs())
    assert spec.names == list(axes)  # the order the layers run
    assert {n: set(pairs) for n, pairs in spec.axes.items()} == axes
    assert all(len(pairs) == len(set(pairs)) for pairs in spec.axes.values())  # each pair once
    assert (spec.groups, spec.blocks, spec.sections, spec.whole) == (groups, blocks, sections, frozenset())


@pytest.mark.parametrize("name", CASES)
def test_the_permutations_keep_the_function_and_a_planted_one_is_recovered(name):
    build, inputs, *_ = CASES[name]
    torch.manual_seed(1)
    x = inputs()
    model = with_inferred_spec(build().eval(), x)
    spec, state = model.permutation_spec(), model.state_dict()
    planted = random_permutations(spec, state, torch.Generator().manual_seed(3))
    moved = permuted_copy(model, planted)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in planted.values())  # the weights moved
    with torch.no_grad():
        torch.testing.assert_close(moved(x), model(x), atol=1e-5, rtol=1e-5)
    found, expected = align("weight_matching", model, moved), invert_permutations(planted)
    assert {n: found[n].tolist() for n in spec.names} == {n: expected[n].tolist() for n in spec.names}


def swin_block(p: str) -> set:
    """The residual stream's pairs in a Swin block: the norms, the attention's inputs and output units (its heads,
    each with a relative-position bias, stay in place with all their dimensions), the MLP's."""
    pairs = {(f"{p}.{n}.{w}", 0) for n in ("norm1", "norm2", "attn.proj", "mlp.3") for w in ("weight", "bias")}
    return pairs | {(f"{p}.attn.qkv.weight", 1), (f"{p}.mlp.0.weight", 1)}


def hidden(p: str, last: int = 3) -> set:
    """A two-layer MLP's hidden units: its first layer's outputs, the second's inputs."""
    return {(f"{p}.0.weight", 0), (f"{p}.0.bias", 0), (f"{p}.{last}.weight", 1)}


def sections(param: str, axis: int) -> set:
    """The four sections of a patch merging's concatenation of four neighbouring positions' channels."""
    return {(f"{param}[{a}:{a + 8}]", axis) for a in (0, 8, 16, 24)}


NORM_AND_REDUCTION = ("norm.weight", "norm.bias", "reduction.weight")


@pytest.mark.parametrize("version", [1, 2])
def test_swin_streams_are_permuted_through_window_attention_and_patch_merging(version):
    from torchvision.models import swin_transformer as swin

    blocks = {} if version == 1 else {"block": swin.SwinTransformerBlockV2, "downsample_layer": swin.PatchMergingV2}
    torch.manual_seed(0)
    model = swin.SwinTransformer([2, 2], 8, [1, 1], [2, 2], [2, 2], num_classes=3, **blocks).eval()
    spec = infer_spec(model, torch.randn(2, 3, 8, 8))
    embed = {(f"features.0.{i}.{w}", 0) for i in (0, 2) for w in ("weight", "bias")}  # patches, then a LayerNorm
    merge_norm = {("features.2.norm.weight", 0), ("features.2.norm.bias", 0)}
    first = embed | swin_block("features.1.0") | sections("features.2.reduction.weight", 1)
    second = sections("features.2.reduction.weight", 0) | swin_block("features.3.0")
    second |= {("norm.weight", 0), ("norm.bias", 0), ("head.weight", 1)}
    if version == 1:  # the merging normalises the four copies, then reduces them
        first |= sections("features.2.norm.weight", 0) | sections("features.2.norm.bias", 0)
        expected = {"features.0.0": first, "features.1.0.mlp.0": hidden("features.1.0.mlp")}
        expected |= {"features.2.reduction": second, "features.3.0.mlp.0": hidden("features.3.0.mlp")}
        cut = {f"features.2.{p}": (0 if "norm" in p else 1, (0, 8, 16, 24, 32)) for p in NORM_AND_REDUCTION}
    else:  # it reduces, then normalises; each block's continuous position bias is an MLP of its own
        second |= merge_norm
        expected = {"features.0.0": first, "features.1.0.attn.cpb_mlp.0": hidden("features.1.0.attn.cpb_mlp", 2)}
        expected |= {"features.1.0.mlp.0": hidden("features.1.0.mlp"), "features.2.reduction": second}
        expected |= {"features.3.0.attn.cpb_mlp.0": hidden("features.3.0.attn.cpb_mlp", 2)}
        expected |= {"features.3.0.mlp.0": hidden("features.3.0.mlp")}
        cut = {"features.2.reduction.weight": (1, (0, 8, 16, 24, 32))}
    assert spec.names == list(expected)
    assert {n: set(pairs) for n, pairs in spec.axes.items()} == expected
    assert (spec.sections, spec.groups, spec.blocks, spec.whole) == (cut, {}, {}, frozenset())


def test_a_module_stating_its_symmetry_first_names_its_output_units():
    """lmcot's SelfAttention reads the input (fixed) and writes units no layer before it produced: they are a
    permutation named after it, beside its own query/key and value/output ones."""
    from lmcot.models.transformer import SelfAttention

    spec = infer_spec(nn.Sequential(SelfAttention(4, 2), nn.Linear(4, 2)), torch.randn(2, 3, 4))
    assert spec.names == ["0.qk", "0.vo", "0"]
    assert {n: set(pairs) for n, pairs in spec.axes.items()} == {
        "0.qk": {("0.q.weight", 0), ("0.q.bias", 0), ("0.k.weight", 0), ("0.k.bias", 0)},
        "0.vo": {("0.v.weight", 0), ("0.v.bias", 0), ("0.o.weight", 1)},
        "0": {("0.o.weight", 0), ("0.o.bias", 0), ("1.weight", 1)},
    }
    assert spec.groups == {"0.qk": ("0.heads", 2), "0.vo": ("0.heads", 2)}


class MergedInput(nn.Module):
    """Swin's patch merging applied to the input: four copies of fixed channels, read whole by a Linear."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(12, 5), nn.Linear(5, 2)

    def forward(self, x):  # (batch, 4, 4, 3 channels)
        from torchvision.models.swin_transformer import _patch_merging_pad

        return self.b(torch.relu(self.a(_patch_merging_pad(x)))).mean((1, 2))


def test_a_patch_merging_of_fixed_channels_is_fixed_and_cut_into_no_sections():
    spec = infer_spec(MergedInput(), torch.randn(2, 4, 4, 3))
    assert spec.axes == {"a": (("a.weight", 0), ("a.bias", 0), ("b.weight", 1))} and spec.sections == {}


class ShapeBranch(nn.Module):
    """Python code that branches on a shape: torch.fx cannot trace it symbolically, the example input can."""

    def __init__(self):
        super().__init__()
        self.a, self.drop, self.head = nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        if h.shape[-1] > 2:  # taken on every input of this model
            h = self.drop(torch.relu(h))
        return self.head(h)


def test_a_model_traced_on_its_example_keeps_its_training_mode():
    model = ShapeBranch().train()
    spec = infer_spec(model, torch.randn(2, 3))
    assert spec.axes == {"a": (("a.weight", 0), ("a.bias", 0), ("head.weight", 1))}
    assert model.training and model.drop.training and model.a.training


class BranchOnKeywords(nn.Module):
    """A branch on the shape of what a layer returns for its keyword arguments (attention weights per head: 4 axes),
    so traced on the example input, with those keywords."""

    def __init__(self):
        super().__init__()
        self.a, self.head, self.other = nn.Linear(3, 8), nn.Linear(8, 2), nn.Linear(8, 2)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):  # (batch, 4 tokens, 3)
        h = self.a(x)
        y, weights = self.attention(h, h, h, average_attn_weights=False)
        return self.head((h + y).mean(1)) if weights.dim() == 4 else self.other(h.mean(1))


def test_layers_called_with_keywords_run_with_them_when_traced_on_the_example():
    spec = infer_spec(BranchOnKeywords(), torch.randn(2, 4, 3))
    assert ("head.weight", 1) in spec.axes["a"] and not any(p.startswith("other.") for p, _ in spec.axes["a"])


class EmbeddedStream(nn.Module):
    """An embedding's output on a residual stream that a layer writes to: the stream's units are the table's columns."""

    def __init__(self):
        super().__init__()
        self.table, self.lin, self.head = nn.Parameter(torch.randn(5, 4)), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, tokens):  # (batch, 3) indices
        h = F.embedding(tokens, self.table)  # (batch, 3, 4)
        return self.head((h + self.lin(h)).mean(1))


def test_a_stream_started_by_an_embedding_carries_the_table_columns():
    spec = infer_spec(EmbeddedStream(), torch.randint(0, 5, (2, 3)))
    pairs = {("table", 1), ("lin.weight", 1), ("lin.weight", 0), ("lin.bias", 0), ("head.weight", 1)}
    assert {n: set(p) for n, p in spec.axes.items()} == {"table": pairs}


class TokenLogits(nn.Module):
    """Logits per token: the indices' token axis reaches the output, and the table's columns are still free."""

    def __init__(self):
        super().__init__()
        self.table, self.head = nn.Embedding(5, 4), nn.Linear(4, 2)

    def forward(self, tokens):  # (batch, 3) indices -> (batch, 3, 2)
        return self.head(self.table(tokens))


def test_an_embedding_whose_token_axis_reaches_the_output_keeps_the_table_columns_free():
    spec = infer_spec(TokenLogits(), torch.randint(0, 5, (2, 3)))
    assert {n: set(p) for n, p in spec.axes.items()} == {"table": {("table.weight", 1), ("head.weight", 1)}}


class SplitStream(nn.Module):
    """A stream two layers write to, split in sections: both layers' units are cut, and no permutation is left of
    the whole stream."""

    def __init__(self):
        super().__init__()
        self.p, self.q, self.left, self.right = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(1, 2), nn.Linear(3, 2)

    def forward(self, x):
        first, rest = (self.p(x) + self.q(x)).split([1, 3], dim=-1)
        return self.left(first) + self.right(rest)


def test_a_split_stream_written_by_two_layers_is_cut_for_both():
    spec = infer_spec(SplitStream(), torch.randn(2, 3))
    cut = {f"{n}.{t}[{a}:{b}]" for n in "pq" for t in ("weight", "bias") for a, b in ((0, 1), (1, 4))}
    assert {p for pairs in spec.axes.values() for p, _ in pairs} == cut | {"left.weight", "right.weight"}
    assert spec.names == ["p[0:1]", "p[1:4]"]
