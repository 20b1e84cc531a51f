"""Second moments of a model's features over a data set, accumulated batch by batch (memory stays
``O(batch_size * width + width^2)``)."""

from __future__ import annotations

import torch


def second_moments(features, inputs: torch.Tensor, batch_size: int = 4096) -> dict[str, torch.Tensor]:
    """``E[f f^T]`` (uncentred, float64) of every ``(samples, n)`` tensor that ``features(x)`` returns by name,
    accumulated over batches of ``inputs``."""
    with torch.no_grad():
        moments = {}
        for start in range(0, len(inputs), batch_size):
            for name, f in features(inputs[start : start + batch_size]).items():
                moments[name] = moments.get(name, 0) + (f.T.float() @ f.float()).double()
        return {name: m / len(inputs) for name, m in moments.items()}


def input_second_moments(model, inputs: torch.Tensor, batch_size: int = 4096, features=None) -> dict[str, torch.Tensor]:
    """Per permutation name, ``E[h h^T]`` (uncentred, ``(fan_in, fan_in)``) of the inputs its layer sees
    (``features(x)``, by default ``model.layer_inputs``)."""
    with torch.no_grad():
        if features is None and not hasattr(model, "layer_inputs"):
            raise ValueError(f"{type(model).__name__} has no layer_inputs(), which covariance-aware matching needs")
        features = features or model.eval().layer_inputs
        return {name: m.float() for name, m in second_moments(features, inputs, batch_size).items()}
