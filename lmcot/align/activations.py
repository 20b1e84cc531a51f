"""Matching units by their activations on data: correlation (Git Re-Basin) and centred cross-covariance
(Ferbach et al. 2024), one LAP per layer."""

from __future__ import annotations

import torch

from lmcot.align.assignment import assign
from lmcot.permutation import Permutations


def activation_statistics(model_a, model_b, inputs: torch.Tensor, batch_size: int = 4096) -> dict:
    """Per permutation name, the moments of both models' hidden activations on ``inputs``.

    Returns ``{name: (cross_covariance, std_a, std_b)}``, the covariance ``(n_a, n_b)`` centred,
    float64. Accumulated over batches, so memory stays ``O(batch_size * width + width^2)``.
    """
    with torch.no_grad():
        model_a.eval(), model_b.eval()
        sums = {}
        for start in range(0, len(inputs), batch_size):
            x = inputs[start : start + batch_size]
            acts_a, acts_b = model_a.hidden_activations(x), model_b.hidden_activations(x)
            for name in acts_a:
                a, b = acts_a[name].float(), acts_b[name].float()
                s = sums.setdefault(name, [0, 0.0, 0.0, 0.0, 0.0, 0.0])
                s[0] += len(a)  # each batch's sums in float32 (fast), their running totals in float64
                s[1] += a.sum(0).double()
                s[2] += b.sum(0).double()
                s[3] += (a * a).sum(0).double()
                s[4] += (b * b).sum(0).double()
                s[5] += (a.T @ b).double()
        stats = {}
        for name, (count, sa, sb, saa, sbb, sab) in sums.items():
            mean_a, mean_b = sa / count, sb / count
            cov = sab / count - torch.outer(mean_a, mean_b)
            std_a = (saa / count - mean_a**2).clamp_min(0).sqrt()
            std_b = (sbb / count - mean_b**2).clamp_min(0).sqrt()
            stats[name] = (cov, std_a, std_b)
        return stats


def activation_matching(model_a, model_b, inputs: torch.Tensor, batch_size: int = 4096) -> Permutations:
    """Match units by the correlation of their activations on ``inputs`` (one LAP per layer).

    ``inputs``: ``(samples, *input_shape)``, typically training data. Units that never vary (dead
    ReLUs) correlate 0 with everything.
    """
    stats = activation_statistics(model_a, model_b, inputs, batch_size)
    correlations = {name: cov / torch.outer(sa, sb).clamp_min(1e-12) for name, (cov, sa, sb) in stats.items()}
    return assign(model_a.permutation_spec(), correlations)


def activation_covariance(model_a, model_b, inputs: torch.Tensor, batch_size: int = 4096) -> Permutations:
    """Ferbach et al.'s activation matching: one LAP per layer on the centred cross-covariance
    ``E[(a - E a)(b - E b)^T]`` of the two models' post-activation outputs on ``inputs``."""
    stats = activation_statistics(model_a, model_b, inputs, batch_size)
    return assign(model_a.permutation_spec(), {name: cov for name, (cov, _, _) in stats.items()})
