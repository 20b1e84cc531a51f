"""Fully connected networks."""

from __future__ import annotations

import math

import torch
from torch import nn

from lmcot.permutation import PermutationSpec, chain_spec


class MLP(nn.Module):
    """Fully connected ReLU network: ``depth`` hidden layers of ``width`` units each.

    Input of any shape ``(batch, *input_shape)`` is flattened; output ``(batch, num_classes)`` logits.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int):
        super().__init__()
        sizes = [math.prod(input_shape)] + [width] * depth + [num_classes]
        self.layers = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)

    def stacked_forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits ``(models, batch, classes)`` of several MLPs at once.

        ``params`` holds this MLP's tensors stacked on a leading model axis; ``x`` is
        ``(models, batch, *input_shape)``. One batched matmul per layer, no per-model Python work.
        """
        x = x.flatten(2)
        last = len(self.layers) - 1
        for i in range(last + 1):
            weight, bias = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
            x = x.relu_() if i < last else x  # in place: baddbmm's backward does not need its output
        return x

    def hidden_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        acts = {}
        x = x.flatten(1)
        for i, layer in enumerate(self.layers[:-1]):
            x = torch.relu(layer(x))
            acts[f"P{i}"] = x
        return acts

    def layer_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """For every permutation, the ``(samples, fan_in)`` inputs of the layer whose units it permutes."""
        acts = self.hidden_activations(x)
        return {f"P{i}": x.flatten(1) if i == 0 else acts[f"P{i - 1}"] for i in range(len(acts))}

    def permutation_spec(self) -> PermutationSpec:
        return chain_spec([f"layers.{i}" for i in range(len(self.layers))])
