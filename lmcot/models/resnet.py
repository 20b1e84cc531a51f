"""Small residual networks, with or without BatchNorm."""

from __future__ import annotations

import torch
from torch import nn

from lmcot.models.base import _channels_last, _image_shape, _last, _patches
from lmcot.permutation import PermutationSpec


class ResNet(nn.Module):
    """Small ResNet: a stem convolution, ``depth`` residual blocks (conv-ReLU-conv added to the stream,
    then ReLU; 2x average pooling after each block while the map is at least 4 wide), global average
    pooling and a linear classifier; ``width`` channels throughout. ``norm=True`` puts BatchNorm after
    every convolution (whose bias is then dropped).

    One permutation, ``residual``, acts on the stream that the skip connections carry (the stem's and
    every block's second convolution's outputs); ``block{b}`` on block ``b``'s inner channels.
    """

    def __init__(self, input_shape, num_classes: int, width: int, depth: int, norm: bool = False):
        super().__init__()
        channels, *spatial = _image_shape(input_shape)
        conv = nn.Conv1d if len(spatial) == 1 else nn.Conv2d
        bn = nn.BatchNorm1d if len(spatial) == 1 else nn.BatchNorm2d
        self.avg_pool = nn.functional.avg_pool1d if len(spatial) == 1 else nn.functional.avg_pool2d
        self.norm = norm

        def conv_bn(c_in):
            layers = {"conv": conv(c_in, width, 3, padding=1, bias=not norm)}
            if norm:
                layers["bn"] = bn(width)
            return nn.ModuleDict(layers)

        self.stem = conv_bn(channels)
        self.blocks = nn.ModuleList(nn.ModuleDict({"a": conv_bn(width), "b": conv_bn(width)}) for _ in range(depth))
        self.pools = []
        for _ in range(depth):
            self.pools.append(min(spatial) >= 4)
            spatial = [s // 2 for s in spatial] if self.pools[-1] else spatial
        self.classifier = nn.Linear(width, num_classes)

    @staticmethod
    def _conv_bn(layer, x):
        x = layer["conv"](x)
        return layer["bn"](x) if "bn" in layer else x

    def _walk(self, x):
        """Yield ``(name, layer input, post-ReLU output)`` for the stem and every block's two halves."""
        out = torch.relu(self._conv_bn(self.stem, x))
        yield "residual", x, out
        x = out
        for b, (block, pool) in enumerate(zip(self.blocks, self.pools, strict=True)):
            inner = torch.relu(self._conv_bn(block["a"], x))
            yield f"block{b}", x, inner
            x = torch.relu(x + self._conv_bn(block["b"], inner))
            yield "residual", inner, x
            x = self.avg_pool(x, 2) if pool else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *_, out = _last(self._walk(x))
        out = self.avg_pool(out, 2) if self.pools and self.pools[-1] else out
        return self.classifier(out.flatten(2).mean(2))

    def hidden_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Block outputs, and for ``residual`` the stream after every block, stacked as more samples."""
        acts = {}
        for name, _, out in self._walk(x):
            acts.setdefault(name, []).append(_channels_last(out))
        return {name: torch.cat(outs) for name, outs in acts.items()}

    def layer_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inputs of the first layer of each permutation (the stem's, for ``residual``): the layers whose
        inputs are aligned before the permutation is solved (see :func:`lmcot.permutation.incoming_weights`)."""
        inputs = {}
        for (name, inp, _), layer in zip(self._walk(x), self._layers(), strict=True):
            if name not in inputs:
                inputs[name] = _patches(inp, layer["conv"])
        return inputs

    def _layers(self):
        yield self.stem
        for block in self.blocks:
            yield block["a"]
            yield block["b"]

    def permutation_spec(self) -> PermutationSpec:
        def outputs(prefix):
            pairs = [(f"{prefix}.conv.weight", 0)]
            names = ["weight", "bias", "running_mean", "running_var"] if self.norm else []
            pairs += [(f"{prefix}.bn.{n}", 0) for n in names] if self.norm else [(f"{prefix}.conv.bias", 0)]
            return pairs

        residual = outputs("stem")
        axes = {}
        for b in range(len(self.blocks)):
            residual += [(f"blocks.{b}.a.conv.weight", 1), *outputs(f"blocks.{b}.b")]
            axes[f"block{b}"] = (*outputs(f"blocks.{b}.a"), (f"blocks.{b}.b.conv.weight", 1))
        residual.append(("classifier.weight", 1))
        return PermutationSpec({"residual": tuple(residual), **axes})


class ResNetBN(ResNet):
    """:class:`ResNet` with BatchNorm after every convolution."""

    def __init__(self, input_shape, num_classes: int, width: int, depth: int):
        super().__init__(input_shape, num_classes, width, depth, norm=True)
