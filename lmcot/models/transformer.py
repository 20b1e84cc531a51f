"""A small vision transformer (``vit-d<depth>-w<width>-h<heads>``) and its multi-head self-attention.

The input is cut into patches (MNIST-1D: 10 patches of 4 steps; an 8x8 digit: 16 patches of 2x2 pixels), each
embedded by one Linear, plus a learned position embedding. ``depth`` pre-LayerNorm blocks follow (attention, then
an MLP of ``2 * width`` GELU units, each added to the residual stream), then a LayerNorm, the mean over tokens and
a Linear classifier.

Its permutation symmetries, all in :meth:`ViT.permutation_spec`:

- the residual stream's ``width`` channels, one permutation shared by every block: the embedding's outputs and
  the position embedding, every LayerNorm, the columns of q, k, v and of the first MLP layer, the rows of the
  attention's output projection and of the second MLP layer, the classifier's columns;
- each block's MLP hidden units;
- each attention's query/key dimensions (``<block>.attn.qk``: q's and k's rows together, since the scores are
  ``q . k``) and value/output dimensions (``<block>.attn.vo``: v's rows with o's columns), both only within a
  head, and the permutation of whole heads, which moves q, k, v and o's runs alike: the head group
  ``<block>.attn.heads`` (:attr:`lmcot.permutation.PermutationSpec.groups`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from lmcot.models.base import _image_shape
from lmcot.permutation import PermutationSpec

MAX_TOKENS = 16  # patches are the smallest that cut the input into at most this many


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate query, key, value and output projections:
    ``(batch, tokens, width)`` -> ``(batch, tokens, width)``.

    It states its own permutation symmetry (:meth:`symmetry`), so that :func:`lmcot.spec_inference.infer_spec`
    treats it as one node whose inside it need not trace."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if heads < 1 or width % heads:
            raise ValueError(f"{heads} heads do not divide the width {width}: give a number of heads that does")
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o(self.parts(x)["mixed"])

    def parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``q``, ``k`` and ``mixed`` (the heads' outputs, concatenated, before ``o``), each
        ``(batch, tokens, width)``."""
        batch, tokens, width = x.shape
        q, k, v = (layer(x) for layer in (self.q, self.k, self.v))

        def split(t):  # (batch, tokens, width) -> (batch, heads, tokens, width / heads)
            return t.view(batch, tokens, self.heads, -1).transpose(1, 2)

        weights = F.softmax(split(q) @ split(k).transpose(-2, -1) / math.sqrt(width // self.heads), dim=-1)
        mixed = (weights @ split(v)).transpose(1, 2).reshape(batch, tokens, width)
        return {"q": q, "k": k, "mixed": mixed}

    def hidden_activations(self, x: torch.Tensor, prefix: str = "") -> dict[str, torch.Tensor]:
        """Per inner permutation of :meth:`symmetry` (named under ``prefix``), ``(samples, units)`` on the module's
        input ``x`` ``(batch, tokens, width)`` (:meth:`unit_activations`)."""
        return self.unit_activations(self.parts(x), prefix)

    @staticmethod
    def unit_activations(parts: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
        """Per inner permutation, ``(samples, units)`` from :meth:`parts`, every token a sample: ``qk`` the queries
        and the keys stacked (``(2 * batch * tokens, width)``), ``vo`` the heads' outputs before ``o``."""
        p = f"{prefix}." if prefix else ""
        return {f"{p}qk": _tokens(torch.cat([parts["q"], parts["k"]], 1)), f"{p}vo": _tokens(parts["mixed"])}

    def layer_inputs(self, x: torch.Tensor, prefix: str = "") -> dict[str, torch.Tensor]:
        """Per inner permutation, the ``(samples, fan_in)`` inputs of its units' incoming weights, in the column
        order of :func:`lmcot.permutation.incoming_weights`, from the module's input ``x`` ``(batch, tokens,
        width)``. ``qk``'s rows are q's and k's weights side by side, each reading ``x``: its inputs are ``[h, 0]``
        and ``[0, h]`` stacked (``(2 * batch * tokens, 2 * width)``), so that their second moment is
        block-diagonal and a score sums q's and k's; ``vo``: ``h`` (``(batch * tokens, width)``)."""
        p, h = f"{prefix}." if prefix else "", _tokens(x)
        zeros = torch.zeros_like(h)
        return {f"{p}qk": torch.cat([torch.cat([h, zeros], 1), torch.cat([zeros, h], 1)]), f"{p}vo": h}

    def symmetry(self, prefix: str) -> tuple[PermutationSpec, list[tuple[str, int]], list[tuple[str, int]]]:
        """The permutations inside the module (names and parameters under ``prefix``), the ``(parameter, axis)``
        pairs that read its input's channels, and those that write its output's channels."""
        p = f"{prefix}." if prefix else ""
        size = self.q.out_features // self.heads
        heads = f"{p}heads"
        inner = PermutationSpec(
            {
                f"{p}qk": tuple((f"{p}{m}.{t}", 0) for m in "qk" for t in ("weight", "bias")),
                f"{p}vo": ((f"{p}v.weight", 0), (f"{p}v.bias", 0), (f"{p}o.weight", 1)),
            },
            groups={f"{p}qk": (heads, size), f"{p}vo": (heads, size)},
        )
        return inner, [(f"{p}{m}.weight", 1) for m in "qkv"], [(f"{p}o.weight", 0), (f"{p}o.bias", 0)]


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(norm1(x))``, then ``+ fc2(gelu(fc1(norm2(x))))``."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(width), SelfAttention(width, heads)
        self.norm2, self.fc1, self.fc2 = nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """Vision transformer on patches: ``(batch, *input_shape)`` -> ``(batch, num_classes)`` logits."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int, heads: int):
        super().__init__()
        channels, *spatial = _image_shape(input_shape)
        self.shape = (channels, *spatial)
        self.patch = _patch_size(spatial)
        tokens = math.prod(n // self.patch for n in spatial)
        self.embed = nn.Linear(channels * self.patch ** len(spatial), width)
        self.position = nn.Parameter(torch.randn(tokens, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, *input_shape)`` -> ``(batch, tokens, channels * patch ** d)``."""
        p, (channels, *spatial), batch = self.patch, self.shape, x.shape[0]  # not len(x): torch.fx traces this
        x = x.reshape(batch, channels, *spatial)
        if len(spatial) == 1:
            return x.reshape(batch, channels, -1, p).permute(0, 2, 1, 3).flatten(2)
        rows, cols = spatial[0] // p, spatial[1] // p
        x = x.reshape(batch, channels, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(batch, rows * cols, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(self.patches(x)) + self.position
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(1))

    def _trace(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate the alignment methods read, keyed by what it is."""
        seen = {"patches": self.patches(x)}
        stream = self.embed(seen["patches"]) + self.position
        for i, block in enumerate(self.blocks):
            seen[f"{i}.stream"] = stream
            seen[f"{i}.norm1"] = block.norm1(stream)
            parts = block.attn.parts(seen[f"{i}.norm1"])
            seen.update({f"{i}.{key}": value for key, value in parts.items()})
            stream = stream + block.attn.o(parts["mixed"])
            seen[f"{i}.norm2"] = block.norm2(stream)
            seen[f"{i}.hidden"] = F.gelu(block.fc1(seen[f"{i}.norm2"]))
            stream = stream + block.fc2(seen[f"{i}.hidden"])
        seen["stream"] = stream
        return seen

    def hidden_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per permutation, ``(samples, units)``; every token is a sample. The residual stream: its value before
        each block and after the last, stacked; ``qk``: the queries and the keys, stacked; ``vo``: the heads'
        outputs before ``o``; the MLP: its GELU units."""
        seen, depth = self._trace(x), len(self.blocks)
        acts = {"embed": _tokens(torch.cat([seen[f"{i}.stream"] for i in range(depth)] + [seen["stream"]], 1))}
        for i in range(depth):
            parts = {key: seen[f"{i}.{key}"] for key in ("q", "k", "mixed")}
            acts.update(SelfAttention.unit_activations(parts, f"blocks.{i}.attn"))
            acts[f"blocks.{i}.fc1"] = _tokens(seen[f"{i}.hidden"])
        return acts

    def layer_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per permutation, the ``(samples, fan_in)`` inputs of its units' incoming weights, in the column order
        of :func:`lmcot.permutation.incoming_weights`; an attention's ``qk`` and ``vo`` read its normalised stream
        (:meth:`SelfAttention.layer_inputs`)."""
        seen = self._trace(x)
        inputs = {"embed": _tokens(seen["patches"])}
        for i, block in enumerate(self.blocks):
            inputs.update(block.attn.layer_inputs(seen[f"{i}.norm1"], f"blocks.{i}.attn"))
            inputs[f"blocks.{i}.fc1"] = _tokens(seen[f"{i}.norm2"])
        return inputs

    def permutation_spec(self) -> PermutationSpec:
        stream = [("embed.weight", 0), ("embed.bias", 0), ("position", 1)]
        axes, groups = {"embed": ()}, {}
        for i, block in enumerate(self.blocks):
            b = f"blocks.{i}"
            inner, reads, writes = block.attn.symmetry(f"{b}.attn")
            axes.update(inner.axes)
            groups.update(inner.groups)
            axes[f"{b}.fc1"] = ((f"{b}.fc1.weight", 0), (f"{b}.fc1.bias", 0), (f"{b}.fc2.weight", 1))
            stream += [(f"{b}.norm1.weight", 0), (f"{b}.norm1.bias", 0), *reads, *writes]
            stream += [(f"{b}.norm2.weight", 0), (f"{b}.norm2.bias", 0), (f"{b}.fc1.weight", 1)]
            stream += [(f"{b}.fc2.weight", 0), (f"{b}.fc2.bias", 0)]
        axes["embed"] = (*stream, ("norm.weight", 0), ("norm.bias", 0), ("head.weight", 1))
        return PermutationSpec(axes, groups=groups)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """``(batch, tokens, n)`` -> ``(batch * tokens, n)``."""
    return x.reshape(-1, x.shape[-1])


def _patch_size(spatial: list[int]) -> int:
    """The smallest patch side dividing every spatial side that leaves at most :data:`MAX_TOKENS` patches."""
    if len(spatial) not in (1, 2):
        raise ValueError(f"vit reads sequences or images, not inputs of {len(spatial)} spatial axes")
    for p in range(1, min(spatial) + 1):
        if all(n % p == 0 for n in spatial) and math.prod(n // p for n in spatial) <= MAX_TOKENS:
            return p
    raise ValueError(f"no patch size divides the input's sides {spatial} into at most {MAX_TOKENS} patches")
