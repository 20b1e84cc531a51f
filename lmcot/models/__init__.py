"""The architectures, by the name params.yaml gives them (``<arch>-d<depth>-w<width>``), and :func:`build_model`.

What each architecture provides is :class:`lmcot.models.base.Architecture`. To add one:

1. a module here with its class, built as ``cls(input_shape, num_classes, width, depth)`` and meeting the protocol
   (tests/test_extend_architecture.py shows a minimal one);
2. a line in :data:`ARCHITECTURES`;
3. its name in ``lmcot.choices.ARCHITECTURES``, which params.yaml is validated against without importing torch
   (tests/test_config.py checks the two agree), and in ``BIAS_AWARE_UNSUPPORTED`` there if a unit has no single
   (incoming weights, bias) pair, and in ``HEADED`` if it takes a number of attention heads (built as
   ``cls(input_shape, num_classes, width, depth, heads)``, named ``<arch>-d<depth>-w<width>-h<heads>``). Then
   ``train.sweep.models`` may name it.
"""

from __future__ import annotations

from torch import nn

from lmcot.choices import HEADED
from lmcot.models.conv import ConvNet
from lmcot.models.mlp import MLP
from lmcot.models.recurrent import LSTM, RNN
from lmcot.models.resnet import ResNet, ResNetBN
from lmcot.models.transformer import ViT

ARCHITECTURES = {
    "mlp": MLP,
    "cnn": ConvNet,
    "resnet": ResNet,
    "resnet_bn": ResNetBN,
    "rnn": RNN,
    "lstm": LSTM,
    "vit": ViT,
}


def build_model(
    arch: str, input_shape, num_classes: int, width: int, depth: int, heads: int | None = None
) -> nn.Module:
    """Build an untrained model; the caller seeds torch first for a reproducible initialisation. ``heads``: the
    attention heads of the architectures of ``lmcot.choices.HEADED`` (which need it), None for the others."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    if (heads is not None) != (arch in HEADED):
        need = "needs a number of heads" if arch in HEADED else "has no attention heads"
        raise ValueError(f"architecture {arch!r} {need} (heads={heads!r})")
    extra = (heads,) if arch in HEADED else ()
    return ARCHITECTURES[arch](tuple(input_shape), num_classes, width, depth, *extra)
