"""Loss and error along the linear path between two models, and the barriers computed from them.

For ``theta(a) = (1 - a) theta_A + a theta_B`` on a grid of ``a`` in [0, 1]:

- ``barrier``: ``max_a [L(theta(a)) - ((1 - a) L(theta_A) + a L(theta_B))]`` (Frankle et al. 2020);
- ``midpoint``: ``L(theta(1/2))``;
- ``max_minus_endpoint_mean``: ``max_a L(theta(a)) - (L(theta_A) + L(theta_B)) / 2``.

``L`` is the mean cross-entropy (``loss``, nats) or the error rate (``error``, 1 - accuracy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from lmcot.training import evaluate

METRICS = ("loss", "error")
NORM_CORRECTIONS = ("reset", "repair")


def evaluation_grid(alphas: Sequence[float]) -> list[float]:
    """The grid actually evaluated: ``alphas`` plus the endpoints 0 and 1 and the midpoint 1/2, sorted."""
    return sorted({float(a) for a in alphas} | {0.0, 0.5, 1.0})


@torch.no_grad()
def interpolation_curve(
    model: torch.nn.Module,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    alphas: Sequence[float],
    splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    batch_size: int = 4096,
    correction: str | None = None,
    norm_inputs: torch.Tensor | None = None,
) -> list[dict]:
    """Evaluate ``model`` at every point of the path from ``state_a`` to ``state_b``.

    ``model`` is only a container of the right architecture: its tensors are overwritten in place at
    each ``alpha`` (no model is rebuilt). Returns rows ``{alpha, split, metric, value}``.
    For a network with BatchNorm, ``correction`` fixes the interpolated network's statistics on
    ``norm_inputs`` (training samples) first: ``"reset"`` recomputes the running statistics
    (:func:`reset_batchnorm`), ``"repair"`` rescales every channel (:func:`repair`).
    """
    if correction is not None and correction not in NORM_CORRECTIONS:
        raise ValueError(f"unknown normalisation correction {correction!r}; valid: {', '.join(NORM_CORRECTIONS)}")
    if correction is not None and norm_inputs is None:
        raise ValueError(f"the {correction!r} correction needs norm_inputs (training samples)")
    if correction == "repair":
        endpoints = []
        for state in (state_a, state_b):
            model.load_state_dict(state)
            endpoints.append(batchnorm_statistics(model, norm_inputs, batch_size))
    targets = model.state_dict()
    if set(targets) != set(state_a) or set(targets) != set(state_b):
        raise ValueError("interpolation_curve: the two states and the model have different tensors")
    rows = []
    for alpha in alphas:
        for name, target in targets.items():
            a, b = state_a[name], state_b[name]
            if target.is_floating_point():
                torch.lerp(a.to(target), b.to(target), float(alpha), out=target)
            else:  # integer buffers such as BatchNorm's step counter are not interpolated
                target.copy_(a)
        if correction == "reset":
            reset_batchnorm(model, norm_inputs, batch_size)
        elif correction == "repair":
            goal = [
                ((1 - alpha) * mean_a + alpha * mean_b, (1 - alpha) * std_a + alpha * std_b)
                for (mean_a, std_a), (mean_b, std_b) in zip(*endpoints, strict=True)
            ]
            repair(model, goal, norm_inputs, batch_size)
        for split, (x, y) in splits.items():
            result = evaluate(model, x, y, batch_size)
            rows.append({"alpha": float(alpha), "split": split, "metric": "loss", "value": result["loss"]})
            rows.append({"alpha": float(alpha), "split": split, "metric": "error", "value": 1 - result["accuracy"]})
    return rows


def barrier_summary(alphas: Sequence[float], values: Sequence[float]) -> dict:
    """Barrier, midpoint value and max-minus-endpoint-mean of one curve ``values`` over ``alphas``.

    ``alphas`` must include 0, 1/2 and 1 (see :func:`evaluation_grid`).
    """
    alphas, values = np.asarray(alphas, dtype=float), np.asarray(values, dtype=float)
    order = np.argsort(alphas)
    alphas, values = alphas[order], values[order]
    if alphas.min() < 0 or alphas.max() > 1 or not all(np.isclose(alphas, a).any() for a in (0, 0.5, 1)):
        raise ValueError(f"the alpha grid must lie in [0, 1] and include 0, 0.5 and 1; got {alphas.tolist()}")
    value_a, value_b = values[0], values[-1]
    chord = (1 - alphas) * value_a + alphas * value_b
    return {
        "barrier": float(np.max(values - chord)),
        "midpoint": float(values[np.isclose(alphas, 0.5)][0]),
        "max_minus_endpoint_mean": float(values.max() - (value_a + value_b) / 2),
        "value_a": float(value_a),
        "value_b": float(value_b),
    }


def batchnorm_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reset_batchnorm(model: torch.nn.Module, inputs: torch.Tensor, batch_size: int = 4096) -> None:
    """Recompute every BatchNorm layer's running statistics on ``inputs`` ("BN reset"): an interpolated
    network's interpolated statistics describe neither endpoint's activations."""
    layers = batchnorm_layers(model)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative mean over the batches, not an exponential one
    model.train()
    for start in range(0, len(inputs), batch_size):
        model(inputs[start : start + batch_size])
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    model.eval()


@torch.no_grad()
def batchnorm_statistics(model, inputs, batch_size: int = 4096, only=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm layer (or only layer index ``only``), the mean and standard deviation of each
    channel of its output over ``inputs`` (and positions), in eval mode."""
    layers = batchnorm_layers(model)
    chosen = range(len(layers)) if only is None else [only]
    sums = {k: [0, 0.0, 0.0] for k in chosen}

    def hook(k):
        def record(_module, _inputs, out):
            flat = out.transpose(0, 1).flatten(1).double()  # (channels, samples * positions)
            sums[k][0] += flat.shape[1]
            sums[k][1] += flat.sum(1)
            sums[k][2] += (flat * flat).sum(1)

        return record

    handles = [layers[k].register_forward_hook(hook(k)) for k in chosen]
    try:
        model.eval()
        for start in range(0, len(inputs), batch_size):
            model(inputs[start : start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    stats = []
    for count, total, squares in sums.values():
        mean = total / count
        stats.append((mean, (squares / count - mean**2).clamp_min(0).sqrt()))
    return stats


@torch.no_grad()
def repair(model, goal, inputs, batch_size: int = 4096) -> None:
    """REPAIR (Jordan et al. 2023) at the BatchNorm outputs: rescale and shift each channel so that its
    mean and standard deviation on ``inputs`` become ``goal[k] = (mean, std)`` of layer ``k`` (the
    interpolation of the endpoints' statistics). Layers are corrected in order, each measured after the
    layers before it were corrected."""
    for k, layer in enumerate(batchnorm_layers(model)):
        (mean, std), (goal_mean, goal_std) = batchnorm_statistics(model, inputs, batch_size, only=k)[0], goal[k]
        scale = goal_std / std.clamp_min(1e-8)
        layer.weight.copy_(layer.weight.double() * scale)
        layer.bias.copy_((layer.bias.double() - mean) * scale + goal_mean)
