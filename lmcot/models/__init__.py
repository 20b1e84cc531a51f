"""The architectures, by the name params.yaml gives them (``<arch>-d<depth>-w<width>``), and :func:`build_model`.

What each architecture provides is :class:`lmcot.models.base.Architecture`. To add one:

1. a module here with its class, built as ``cls(input_shape, num_classes, width, depth)`` and meeting the protocol
   (tests/test_extend_architecture.py shows a minimal one);
2. a line in :data:`ARCHITECTURES`;
3. its name in ``lmcot.choices.ARCHITECTURES``, which params.yaml is validated against without importing torch
   (tests/test_config.py checks the two agree), and in ``BIAS_AWARE_UNSUPPORTED`` there if a unit has no single
   (incoming weights, bias) pair. Then ``train.sweep.models`` may name it.
"""

from __future__ import annotations

from torch import nn

from lmcot.models.conv import ConvNet
from lmcot.models.mlp import MLP
from lmcot.models.recurrent import LSTM, RNN
from lmcot.models.resnet import ResNet, ResNetBN

ARCHITECTURES = {"mlp": MLP, "cnn": ConvNet, "resnet": ResNet, "resnet_bn": ResNetBN, "rnn": RNN, "lstm": LSTM}


def build_model(arch: str, input_shape, num_classes: int, width: int, depth: int) -> nn.Module:
    """Build an untrained model; the caller seeds torch first for a reproducible initialisation."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](tuple(input_shape), num_classes, width, depth)
