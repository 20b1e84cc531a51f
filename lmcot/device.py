"""Where tensors live: the ``device`` setting (``auto``, ``cpu`` or ``cuda``)."""

import torch

from lmcot.choices import DEVICES
from lmcot.errors import UserError


class DeviceError(UserError, ValueError):
    """A ``device`` setting that cannot be used here."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when PyTorch sees a GPU, else the CPU; ``cuda`` without a GPU is an error."""
    if name not in DEVICES:
        raise DeviceError(f"params.yaml: device = {name!r} is not valid (valid: {', '.join(DEVICES)})")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("params.yaml: device = 'cuda' but PyTorch sees no CUDA GPU here (valid: auto, cpu, cuda)")
    return torch.device(name)
