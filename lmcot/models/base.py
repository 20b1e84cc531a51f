"""What every architecture provides, and the helpers the families share.

An architecture is an ``nn.Module`` built as ``cls(input_shape, num_classes, width, depth)``. Besides
``nn.Module``'s own interface (``state_dict``/``load_state_dict``, ``named_parameters``, ``named_modules``,
``train``/``eval``), the rest of the project uses the members of :class:`Architecture`.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from lmcot.permutation import PermutationSpec


@runtime_checkable
class Architecture(Protocol):
    """What alignment, fusion, dimensions, barriers and training use from a model.

    Conventions the generic code relies on, beyond the methods:

    - every parameter a permutation touches is named in :meth:`permutation_spec`; bias names start with
      ``bias`` (``lmcot.align.weight_matching.is_bias``);
    - ``named_modules()`` lists the Linear/Conv/BatchNorm layers in forward order (REPAIR,
      ``lmcot.evaluation.repair_layers``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` of ``x`` ``(batch, *input_shape)``.

        Training (``lmcot.training``), evaluation (``lmcot.evaluation``), interpolation curves
        (``lmcot.barrier``), the output ensemble, ``lmcot.align.methods.output_change``."""
        ...

    def permutation_spec(self) -> PermutationSpec:
        """Every permutation symmetry: for each name, the ``(parameter, axis)`` pairs it acts on.

        Every alignment method and ``permuted_copy`` (``lmcot.align``), fusion's couplings
        (``lmcot.fusion``), per-layer dimensions (``lmcot.dimension``), REPAIR's layers (``lmcot.evaluation``)."""
        ...

    def hidden_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per permutation name, the ``(samples, units)`` activations of the units it permutes on ``x``
        (spatial positions or time steps count as samples).

        Activation matching and activation covariance (``lmcot.align.activations.activation_statistics``),
        ``lmcot.dimension.activation_second_moments``."""
        ...

    def layer_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per permutation name, the ``(samples, fan_in)`` inputs of the layer whose units it permutes, columns
        in the order of ``lmcot.permutation.incoming_weights``. A recurrent model also takes ``with_state=True``
        (appends the previous hidden state).

        Covariance-aware matching (``lmcot.moments.input_second_moments``),
        ``lmcot.dimension.model_dimensions``."""
        ...


@runtime_checkable
class Stackable(Protocol):
    """Optional fast path: several models of one architecture in one forward pass (``lmcot.training.StackedModels``
    uses it when the model has no buffers; otherwise ``torch.func.vmap`` of ``forward``)."""

    def stacked_forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits ``(models, batch, classes)`` from ``params`` (the state_dict's tensors stacked on a leading
        model axis) and ``x`` ``(models, batch, *input_shape)``."""
        ...


def _last(items):
    """The last item of an iterator (each earlier one is dropped as soon as the next arrives)."""
    return deque(items, maxlen=1)[0]


def _image_shape(input_shape) -> tuple[int, ...]:
    """``(channels, *spatial)``; a flat ``(length,)`` input is one channel."""
    return (1, *input_shape) if len(input_shape) == 1 else tuple(input_shape)


def _channels_last(out: torch.Tensor) -> torch.Tensor:
    """``(batch, channels, *spatial)`` -> ``(batch * positions, channels)``: each position is a sample."""
    return out.flatten(2).transpose(1, 2).flatten(0, 1)


def _patches(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """The ``(batch * positions, in_channels * kernel)`` patches a convolution sees, in the order of
    ``conv.weight.flatten(1)``."""
    if x.dim() == 3:  # 1-D: treat as an image of height 1
        x, kernel, padding = x.unsqueeze(2), (1, *conv.kernel_size), (0, *conv.padding)
    else:
        kernel, padding = conv.kernel_size, conv.padding
    return nn.functional.unfold(x, kernel, padding=padding).transpose(1, 2).flatten(0, 1)
