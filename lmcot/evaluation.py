"""Evaluating models: loss and accuracy, output ensembles, and the normalisation corrections of
interpolated networks (BN reset and REPAIR, Jordan et al. 2023).

An interpolated network's hidden units have smaller variance than either endpoint's (averaging
uncorrelated units cancels part of their variance). BN reset recomputes the BatchNorm statistics on
training inputs; REPAIR rescales every corrected layer's channels to the mean and standard deviation
that interpolating the endpoints' statistics gives.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lmcot.choices import NORM_CORRECTIONS


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> dict:
    """Mean cross-entropy (nats) and accuracy of ``model`` on ``(x, y)``."""
    with torch.no_grad():
        model.eval()
        loss, correct = 0.0, 0
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            loss += F.cross_entropy(logits, target, reduction="sum").item()
            correct += (logits.argmax(1) == target).sum().item()
        return {"loss": loss / len(x), "accuracy": correct / len(x)}


def ensemble_evaluate(models, x: torch.Tensor, y: torch.Tensor, weights=None, batch_size: int = 4096) -> dict:
    """Mean cross-entropy (nats) and accuracy of the output ensemble: the weighted mean of the models'
    predicted class probabilities."""
    with torch.no_grad():
        weights = np.full(len(models), 1 / len(models)) if weights is None else np.asarray(weights) / np.sum(weights)
        loss, correct = 0.0, 0
        for model in models:
            model.eval()
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            probs = sum(w * F.softmax(m(xb).double(), 1) for w, m in zip(weights, models, strict=True))
            loss += F.nll_loss(probs.clamp_min(1e-300).log(), yb, reduction="sum").item()
            correct += (probs.argmax(1) == yb).sum().item()
        return {"loss": loss / len(x), "accuracy": correct / len(x)}


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
    if correction == "repair" and model.permutation_spec().groups:
        return (
            f"REPAIR measures each channel's statistics on axis 1, and {type(model).__name__}'s Linear layers act on "
            "(batch, tokens, channels): a transformer is not corrected"
        )
    if correction == "repair" and not repair_layers(model):
        return (
            f"REPAIR rescales the channels of BatchNorm layers or of Linear/Conv modules with permuted outputs, and "
            f"{type(model).__name__} has neither (a recurrent network's gates are raw tensors, not modules)"
        )
    return None


def reset_batchnorm(model: torch.nn.Module, inputs: torch.Tensor, batch_size: int = 4096) -> None:
    """Recompute every BatchNorm layer's running statistics on ``inputs`` ("BN reset"): an interpolated
    network's interpolated statistics describe neither endpoint's activations."""
    with torch.no_grad():
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


def output_statistics(
    model, layers, inputs, batch_size: int = 4096, stop: bool = False
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per module of ``layers``, the mean and (population) standard deviation of each channel of its output,
    ``(channels,)`` float64 each, over ``inputs`` and positions, in eval mode. ``stop``: end each forward pass
    after the last of ``layers`` (which must then be the last to run), skipping the rest of the network."""
    with torch.no_grad():
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


def repair(model, goal, inputs, batch_size: int = 4096) -> None:
    """REPAIR (Jordan et al. 2023): rescale and shift each channel of every layer of :func:`repair_layers`
    (BatchNorm outputs, or permuted Linear/Conv pre-activations) so that its mean and standard deviation on
    ``inputs`` become ``goal[k] = (mean, std)`` of layer ``k`` (the interpolation of the endpoints'
    statistics), the map folded into the layer's weight and bias. Layers are corrected from input to output,
    each measured after the layers before it were corrected."""
    with torch.no_grad():
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
