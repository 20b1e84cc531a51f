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

from lmcot.choices import NORM_CORRECTIONS
from lmcot.errors import UserError
from lmcot.training import evaluate

METRICS = ("loss", "error")


class NonFinitePathError(UserError, FloatingPointError):
    """A loss or error that is not finite on an interpolation path: the models or the alignment are broken."""


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
    ``correction`` fixes the interpolated network's statistics on ``norm_inputs`` (training samples) first:
    ``"reset"`` recomputes the BatchNorm running statistics (:func:`reset_batchnorm`); ``"repair"`` rescales
    every channel of the layers of :func:`repair_layers` to the interpolated endpoint statistics (:func:`repair`).
    A correction that does not apply to ``model`` (see :func:`correction_refusal`) raises ``ValueError``.
    """
    if correction is not None and (why := correction_refusal(model, correction)):
        raise ValueError(why)
    if correction is not None and norm_inputs is None:
        raise ValueError(f"the {correction!r} correction needs norm_inputs (training samples)")
    if correction == "repair":
        layers = repair_layers(model)
        endpoints = []
        for state in (state_a, state_b):
            model.load_state_dict(state)
            endpoints.append(output_statistics(model, layers, norm_inputs, batch_size))
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

    ``alphas`` must include 0, 1/2 and 1 (see :func:`lmcot.design.evaluation_grid`).
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


def check_finite(curves, name: str) -> None:
    """Raise :class:`NonFinitePathError` naming the first row of ``curves`` (a table of
    :func:`interpolation_curve` rows with seed_a, seed_b and method) whose value is not finite."""
    bad = curves[~np.isfinite(curves["value"])]
    if len(bad):  # stop rather than let a NaN or inf turn into a barrier
        first = bad.iloc[0]
        raise NonFinitePathError(
            f"{name}: the {first['split']} {first['metric']} is not finite on the path from seed "
            f"{first['seed_a']} to seed {first['seed_b']} ({first['method']}) at alpha = {first['alpha']} "
            f"({len(bad)} such points); the models or the alignment are broken"
        )


def batchnorm_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def repair_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers REPAIR corrects, in forward order: the BatchNorm layers of a network that has any; else every
    Linear or Conv module whose output units a permutation of ``model.permutation_spec()`` acts on (axis 0 of
    its weight), so never the classifier. Empty for a recurrent network, whose gates are raw tensors."""
    if layers := batchnorm_layers(model):
        return layers
    spec = model.permutation_spec()
    linear = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
    # model.modules() is registration order, which is forward order in every lmcot architecture
    return [m for name, m in model.named_modules() if isinstance(m, linear) and 0 in spec.acting_on(f"{name}.weight")]


def correction_refusal(model: torch.nn.Module, correction: str) -> str | None:
    """Why ``correction`` cannot be applied to ``model``, or None when it can."""
    if correction not in NORM_CORRECTIONS:
        return f"unknown normalisation correction {correction!r}; valid: {', '.join(NORM_CORRECTIONS)}"
    if correction == "reset" and not batchnorm_layers(model):
        return f"BN reset recomputes BatchNorm statistics and {type(model).__name__} has no BatchNorm layer"
    if correction == "repair" and not repair_layers(model):
        return (
            f"REPAIR rescales the channels of BatchNorm layers or of Linear/Conv modules with permuted outputs, and "
            f"{type(model).__name__} has neither (a recurrent network's gates are raw tensors, not modules)"
        )
    return None


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


class _Stop(Exception):
    """Ends a forward pass once the last layer it measures has produced its output."""


def _moments(out: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Count, mean and sum of squared deviations per channel (dim 1) of one batch's ``out``, over samples and
    positions. ``var_mean`` in the output's dtype is accurate (no E[x^2] - E[x]^2) and far faster than float64."""
    var, mean = torch.var_mean(out, dim=[0, *range(2, out.dim())], correction=0)
    count = out.numel() // out.shape[1]
    return count, mean.double(), var.double() * count


def _mean_std(batches) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool the :func:`_moments` of several batches: ``(channels,)`` mean and population std, float64."""
    total = sum(count for count, _, _ in batches)
    mean = sum(count * m for count, m, _ in batches) / total
    squares = sum(m2 + count * (m - mean) ** 2 for count, m, m2 in batches)
    return mean, (squares / total).sqrt()


@torch.no_grad()
def output_statistics(
    model, layers, inputs, batch_size: int = 4096, stop: bool = False
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per module of ``layers``, the mean and (population) standard deviation of each channel of its output,
    ``(channels,)`` float64 each, over ``inputs`` and positions, in eval mode. ``stop``: end each forward pass
    after the last of ``layers`` (which must then be the last to run), skipping the rest of the network."""
    batches = {layer: [] for layer in layers}

    def record(module, _inputs, out):
        batches[module].append(_moments(out))
        if stop and module is layers[-1]:
            raise _Stop

    handles = [layer.register_forward_hook(record) for layer in layers]
    try:
        model.eval()
        for start in range(0, len(inputs), batch_size):
            try:
                model(inputs[start : start + batch_size])
            except _Stop:
                pass
    finally:
        for handle in handles:
            handle.remove()
    return [_mean_std(batches[layer]) for layer in layers]


def batchnorm_statistics(model, inputs, batch_size: int = 4096) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm layer, the mean and standard deviation of each channel of its output over ``inputs`` (and
    positions), in eval mode."""
    return output_statistics(model, batchnorm_layers(model), inputs, batch_size)


def _fold(layer, mean, std, goal_mean, goal_std) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold the per-channel map ``out -> (out - mean) * scale + goal_mean``, ``scale = goal_std / std``, into
    ``layer``'s weight (rows / output channels) and bias; return ``(scale, shift)`` of ``out * scale + shift``."""
    if layer.weight is None or layer.bias is None:
        # adding a bias would add a tensor to the state dict, which the interpolated path does not have
        raise ValueError(f"REPAIR needs a weight and a bias to fold into; {layer} lacks one")
    scale = goal_std / std.clamp_min(1e-8)
    shift = goal_mean - mean * scale
    layer.weight.copy_(layer.weight.double() * scale.view(-1, *[1] * (layer.weight.dim() - 1)))
    layer.bias.copy_(layer.bias.double() * scale + shift)
    return scale, shift


@torch.no_grad()
def repair(model, goal, inputs, batch_size: int = 4096) -> None:
    """REPAIR (Jordan et al. 2023): rescale and shift each channel of every layer of :func:`repair_layers`
    (BatchNorm outputs, or permuted Linear/Conv pre-activations) so that its mean and standard deviation on
    ``inputs`` become ``goal[k] = (mean, std)`` of layer ``k`` (the interpolation of the endpoints'
    statistics), the map folded into the layer's weight and bias. Layers are corrected from input to output,
    each measured after the layers before it were corrected."""
    layers = repair_layers(model)
    if len(goal) != len(layers):
        raise ValueError(f"REPAIR: {len(goal)} goal statistics for {len(layers)} layers")
    model.eval()
    if len(inputs) > batch_size:  # one pass over the batches per layer, ended right after that layer
        for layer, (goal_mean, goal_std) in zip(layers, goal, strict=True):
            ((mean, std),) = output_statistics(model, [layer], inputs, batch_size, stop=True)
            _fold(layer, mean, std, goal_mean, goal_std)
        return
    # one batch: a layer's statistics are complete as soon as its output is, so it is corrected on the spot and
    # the layers after it see the corrected output; one forward pass in all
    goals = dict(zip(layers, goal, strict=True))

    def correct(module, _inputs, out):
        scale, shift = _fold(module, *_mean_std([_moments(out)]), *goals[module])
        view = (-1, *[1] * (out.dim() - 2))
        return out * scale.to(out).view(view) + shift.to(out).view(view)

    handles = [layer.register_forward_hook(correct) for layer in layers]
    try:
        model(inputs)
    finally:
        for handle in handles:
            handle.remove()
