"""lmcot: linear mode connectivity of neural networks through optimal transport."""

__all__ = ["load_model", "save_model"]
__version__ = "0.1.0"


def __getattr__(name):
    # Imported on first use, so that modules that need no torch (lmcot.sources) start fast.
    if name in __all__:
        from lmcot import io

        return getattr(io, name)
    raise AttributeError(f"module 'lmcot' has no attribute {name!r}")
