"""Where tensors live: the ``device`` setting (``auto``, ``cpu`` or ``cuda``)."""

import torch

from lmcot.choices import DEVICES


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when PyTorch sees a GPU, else the CPU; ``cuda`` without a GPU is an error."""
    if name not in DEVICES:
        raise ValueError(f"device = {name!r} is not valid (valid: {', '.join(DEVICES)})")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device = 'cuda' but PyTorch sees no CUDA GPU here (valid: auto, cpu, cuda)")
    return torch.device(name)
