"""lmcot: linear mode connectivity of neural networks through optimal transport."""

from lmcot.io import load_model, save_model

__all__ = ["load_model", "save_model"]
__version__ = "0.1.0"
