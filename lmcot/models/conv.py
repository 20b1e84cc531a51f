"""VGG-style convolutional networks, 1-D or 2-D by the input's shape."""

from __future__ import annotations

import torch
from torch import nn

from lmcot.models.base import _channels_last, _image_shape, _last, _patches
from lmcot.permutation import PermutationSpec, chain_spec


class ConvNet(nn.Module):
    """VGG-style CNN: ``depth`` blocks of 3-wide convolution + ReLU (+ 2x max-pool while the map is at
    least 2 wide), global average pooling, one linear classifier. ``width`` channels in every block.

    Inputs ``(batch, channels, length)`` use 1-D convolutions (MNIST-1D), ``(batch, channels, H, W)`` 2-D.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int):
        super().__init__()
        channels, *spatial = _image_shape(input_shape)
        conv = nn.Conv1d if len(spatial) == 1 else nn.Conv2d
        self.pool = nn.functional.max_pool1d if len(spatial) == 1 else nn.functional.max_pool2d
        self.convs = nn.ModuleList(conv(channels if i == 0 else width, width, 3, padding=1) for i in range(depth))
        self.pools = []
        for _ in range(depth):
            self.pools.append(min(spatial) >= 2)
            spatial = [s // 2 for s in spatial] if self.pools[-1] else spatial
        self.classifier = nn.Linear(width, num_classes)

    def _blocks(self, x):
        """Yield each block's post-ReLU (pre-pool) output and the input it saw."""
        for conv, pool in zip(self.convs, self.pools, strict=True):
            out = torch.relu(conv(x))
            yield x, out
            x = self.pool(out, 2) if pool else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, out = _last(self._blocks(x))
        last = self.pool(out, 2) if self.pools[-1] else out
        return self.classifier(last.flatten(2).mean(2))

    def hidden_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {f"P{i}": _channels_last(out) for i, (_, out) in enumerate(self._blocks(x))}

    def layer_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            f"P{i}": _patches(inp, conv)
            for i, ((inp, _), conv) in enumerate(zip(self._blocks(x), self.convs, strict=True))
        }

    def permutation_spec(self) -> PermutationSpec:
        return chain_spec([f"convs.{i}" for i in range(len(self.convs))] + ["classifier"])
