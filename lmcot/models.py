"""Architectures. Each one says how to build it, its permutation symmetry, and its hidden activations.

An architecture is an ``nn.Module`` with two extra methods that the alignment code relies on
(and may add ``stacked_forward``, a fast path for training several seeds at once):

- ``permutation_spec()``: a :class:`~lmcot.permutation.PermutationSpec` naming every permutation;
- ``hidden_activations(x)``: for every permutation name, the activations of the units it permutes, as a
  ``(samples, units)`` tensor (what activation matching correlates).
"""

from __future__ import annotations

import math
import warnings
from collections import deque

import torch
from torch import nn

from lmcot.permutation import PermutationSpec, chain_spec


class MLP(nn.Module):
    """Fully connected ReLU network: ``depth`` hidden layers of ``width`` units each.

    Input of any shape ``(batch, *input_shape)`` is flattened; output ``(batch, num_classes)`` logits.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int):
        super().__init__()
        sizes = [math.prod(input_shape)] + [width] * depth + [num_classes]
        self.layers = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)

    def stacked_forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits ``(models, batch, classes)`` of several MLPs at once.

        ``params`` holds this MLP's tensors stacked on a leading model axis; ``x`` is
        ``(models, batch, *input_shape)``. One batched matmul per layer, no per-model Python work.
        """
        x = x.flatten(2)
        last = len(self.layers) - 1
        for i in range(last + 1):
            weight, bias = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
            x = x.relu_() if i < last else x  # in place: baddbmm's backward does not need its output
        return x

    def hidden_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        acts = {}
        x = x.flatten(1)
        for i, layer in enumerate(self.layers[:-1]):
            x = torch.relu(layer(x))
            acts[f"P{i}"] = x
        return acts

    def layer_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """For every permutation, the ``(samples, fan_in)`` inputs of the layer whose units it permutes."""
        acts = self.hidden_activations(x)
        return {f"P{i}": x.flatten(1) if i == 0 else acts[f"P{i - 1}"] for i in range(len(acts))}

    def permutation_spec(self) -> PermutationSpec:
        return chain_spec([f"layers.{i}" for i in range(len(self.layers))])


class ConvNet(nn.Module):
    """VGG-style CNN: ``depth`` blocks of 3-wide convolution + ReLU (+ 2x max-pool while the map is at
    least 2 wide), global average pooling, one linear classifier. ``width`` channels in every block.

    Inputs ``(batch, channels, length)`` use 1-D convolutions (MNIST-1D), ``(batch, channels, H, W)`` 2-D.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int):
        super().__init__()
        channels, *spatial = _image_shape(input_shape)
        conv = nn.Conv1d if len(spatial) == 1 else nn.Conv2d
        self.pool = nn.functional.max_pool1d if len(spatial) == 1 else nn.functional.max_pool2d
        self.convs = nn.ModuleList(conv(channels if i == 0 else width, width, 3, padding=1) for i in range(depth))
        self.pools = []
        for _ in range(depth):
            self.pools.append(min(spatial) >= 2)
            spatial = [s // 2 for s in spatial] if self.pools[-1] else spatial
        self.classifier = nn.Linear(width, num_classes)

    def _blocks(self, x):
        """Yield each block's post-ReLU (pre-pool) output and the input it saw."""
        for conv, pool in zip(self.convs, self.pools, strict=True):
            out = torch.relu(conv(x))
            yield x, out
            x = self.pool(out, 2) if pool else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, out = _last(self._blocks(x))
        last = self.pool(out, 2) if self.pools[-1] else out
        return self.classifier(last.flatten(2).mean(2))

    def hidden_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {f"P{i}": _channels_last(out) for i, (_, out) in enumerate(self._blocks(x))}

    def layer_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            f"P{i}": _patches(inp, conv)
            for i, ((inp, _), conv) in enumerate(zip(self._blocks(x), self.convs, strict=True))
        }

    def permutation_spec(self) -> PermutationSpec:
        return chain_spec([f"convs.{i}" for i in range(len(self.convs))] + ["classifier"])


class ResNet(nn.Module):
    """Small ResNet: a stem convolution, ``depth`` residual blocks (conv-ReLU-conv added to the stream,
    then ReLU; 2x average pooling after each block while the map is at least 4 wide), global average
    pooling and a linear classifier; ``width`` channels throughout. ``norm=True`` puts BatchNorm after
    every convolution (whose bias is then dropped).

    One permutation, ``residual``, acts on the stream that the skip connections carry (the stem's and
    every block's second convolution's outputs); ``block{b}`` on block ``b``'s inner channels.
    """

    def __init__(self, input_shape, num_classes: int, width: int, depth: int, norm: bool = False):
        super().__init__()
        channels, *spatial = _image_shape(input_shape)
        conv = nn.Conv1d if len(spatial) == 1 else nn.Conv2d
        bn = nn.BatchNorm1d if len(spatial) == 1 else nn.BatchNorm2d
        self.avg_pool = nn.functional.avg_pool1d if len(spatial) == 1 else nn.functional.avg_pool2d
        self.norm = norm

        def conv_bn(c_in):
            layers = {"conv": conv(c_in, width, 3, padding=1, bias=not norm)}
            if norm:
                layers["bn"] = bn(width)
            return nn.ModuleDict(layers)

        self.stem = conv_bn(channels)
        self.blocks = nn.ModuleList(nn.ModuleDict({"a": conv_bn(width), "b": conv_bn(width)}) for _ in range(depth))
        self.pools = []
        for _ in range(depth):
            self.pools.append(min(spatial) >= 4)
            spatial = [s // 2 for s in spatial] if self.pools[-1] else spatial
        self.classifier = nn.Linear(width, num_classes)

    @staticmethod
    def _conv_bn(layer, x):
        x = layer["conv"](x)
        return layer["bn"](x) if "bn" in layer else x

    def _walk(self, x):
        """Yield ``(name, layer input, post-ReLU output)`` for the stem and every block's two halves."""
        out = torch.relu(self._conv_bn(self.stem, x))
        yield "residual", x, out
        x = out
        for b, (block, pool) in enumerate(zip(self.blocks, self.pools, strict=True)):
            inner = torch.relu(self._conv_bn(block["a"], x))
            yield f"block{b}", x, inner
            x = torch.relu(x + self._conv_bn(block["b"], inner))
            yield "residual", inner, x
            x = self.avg_pool(x, 2) if pool else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *_, out = _last(self._walk(x))
        out = self.avg_pool(out, 2) if self.pools and self.pools[-1] else out
        return self.classifier(out.flatten(2).mean(2))

    def hidden_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Block outputs, and for ``residual`` the stream after every block, stacked as more samples."""
        acts = {}
        for name, _, out in self._walk(x):
            acts.setdefault(name, []).append(_channels_last(out))
        return {name: torch.cat(outs) for name, outs in acts.items()}

    def layer_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inputs of the first layer of each permutation (the stem's, for ``residual``): the layers whose
        inputs are aligned before the permutation is solved (see :func:`lmcot.align.layerwise.incoming_weights`)."""
        inputs = {}
        for (name, inp, _), layer in zip(self._walk(x), self._layers(), strict=True):
            if name not in inputs:
                inputs[name] = _patches(inp, layer["conv"])
        return inputs

    def _layers(self):
        yield self.stem
        for block in self.blocks:
            yield block["a"]
            yield block["b"]

    def permutation_spec(self) -> PermutationSpec:
        def outputs(prefix):
            pairs = [(f"{prefix}.conv.weight", 0)]
            names = ["weight", "bias", "running_mean", "running_var"] if self.norm else []
            pairs += [(f"{prefix}.bn.{n}", 0) for n in names] if self.norm else [(f"{prefix}.conv.bias", 0)]
            return pairs

        residual = outputs("stem")
        axes = {}
        for b in range(len(self.blocks)):
            residual += [(f"blocks.{b}.a.conv.weight", 1), *outputs(f"blocks.{b}.b")]
            axes[f"block{b}"] = (*outputs(f"blocks.{b}.a"), (f"blocks.{b}.b.conv.weight", 1))
        residual.append(("classifier.weight", 1))
        return PermutationSpec({"residual": tuple(residual), **axes})


class ResNetBN(ResNet):
    """:class:`ResNet` with BatchNorm after every convolution."""

    def __init__(self, input_shape, num_classes: int, width: int, depth: int):
        super().__init__(input_shape, num_classes, width, depth, norm=True)


GATES = ("i", "f", "g", "o")


class Recurrent(nn.Module):
    """RNN (tanh) or LSTM that reads the input as a sequence and classifies from its last hidden state.

    MNIST-1D ``(channels, length)`` is read as ``length`` steps of ``channels`` values; an image
    ``(channels, H, W)`` as ``H`` rows of ``channels * W`` values. ``depth`` stacked layers of ``width``
    units. Each LSTM gate has its own tensors (``weight_ih_f`` ...), so one permutation of a layer's
    units acts on every gate alike, and the hidden-to-hidden matrices on both axes.
    """

    lstm = False

    def __init__(self, input_shape, num_classes: int, width: int, depth: int):
        super().__init__()
        shape = _image_shape(input_shape)
        features = shape[0] * math.prod(shape[2:])
        gates = GATES if self.lstm else ("",)
        self.layers = nn.ModuleList()
        bound = 1 / math.sqrt(width)
        for d in range(depth):
            layer = nn.ParameterDict()
            n_in = features if d == 0 else width
            for g in gates:
                suffix = f"_{g}" if g else ""
                layer[f"weight_ih{suffix}"] = nn.Parameter(torch.empty(width, n_in).uniform_(-bound, bound))
                layer[f"weight_hh{suffix}"] = nn.Parameter(torch.empty(width, width).uniform_(-bound, bound))
                layer[f"bias{suffix}"] = nn.Parameter(torch.full((width,), 1.0 if g == "f" else 0.0))
            self.layers.append(layer)
        self.classifier = nn.Linear(width, num_classes)

    @staticmethod
    def sequence(x: torch.Tensor) -> torch.Tensor:
        """``(batch, steps, features)`` view of a batch of 1-D signals or images."""
        if x.dim() == 2:  # (batch, length): one channel
            x = x.unsqueeze(1)
        return x.transpose(1, 2) if x.dim() == 3 else x.permute(0, 2, 1, 3).flatten(2)

    def _cat(self, layer, kind):
        if not self.lstm:
            return layer[kind]
        return torch.cat([layer[f"{kind}_{g}"] for g in GATES])

    def _run(self, x):
        """Yield every layer's input sequence and hidden states, both ``(batch, steps, units)``."""
        seq = self.sequence(x)
        for layer in self.layers:
            kinds = ("weight_ih", "weight_hh", "bias")
            hidden = recurrent_layer(seq, *(self._cat(layer, kind) for kind in kinds), self.lstm)
            yield seq, hidden
            seq = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, hidden = _last(self._run(x))
        return self.classifier(hidden[:, -1])

    def stacked_forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits ``(models, batch, classes)`` of several networks, ``params`` stacked on a leading model axis
        and ``x`` of shape ``(models, batch, *input_shape)``. Each model's recurrence runs in PyTorch's fused
        kernel, one model after another: that kernel is bound by its elementwise work, so batching the models'
        steps into matmuls and separate elementwise operations is slower (3.5 times, README "Performance")."""
        gates = [f"_{g}" for g in GATES] if self.lstm else [""]
        logits = []
        for m in range(len(x)):
            seq = self.sequence(x[m])
            for d in range(len(self.layers)):
                weights = (
                    torch.cat([params[f"layers.{d}.{kind}{g}"][m] for g in gates])
                    for kind in ("weight_ih", "weight_hh", "bias")
                )
                seq = recurrent_layer(seq, *weights, self.lstm)
            logits.append(torch.addmm(params["classifier.bias"][m], seq[:, -1], params["classifier.weight"][m].T))
        return torch.stack(logits)

    def hidden_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every layer's hidden state at every step, steps stacked as samples: ``(batch * steps, units)``."""
        return {f"P{d}": hidden.flatten(0, 1) for d, (_, hidden) in enumerate(self._run(x))}

    def layer_inputs(self, x: torch.Tensor, with_state: bool = False) -> dict[str, torch.Tensor]:
        """Every layer's input at every step, ``(batch * steps, fan_in)``. For an LSTM each gate's block of
        the incoming weights sees the input alone (zeros elsewhere), so ``E[h h^T]`` is block-diagonal, and
        the gates' rows are stacked as more samples, ``(4 * batch * steps, 4 * fan_in)``.

        ``with_state`` appends the layer's previous hidden state (0 at the first step), what its
        hidden-to-hidden weights multiply, in the column order of
        ``incoming_weights(..., recurrent=True)``: ``[x_t, h_{t-1}]``, for an LSTM gate ``k``'s row
        ``x_t`` in input block ``k`` and ``h_{t-1}`` in recurrent block ``k``, ``(4 * batch * steps,
        4 * (fan_in + units))``."""

        def gate_blocks(flat):  # (samples, n) -> (4 * samples, 4 * n): gate k's copy in column block k
            blocks = flat.new_zeros(len(GATES), len(flat), len(GATES) * flat.shape[1])
            for k in range(len(GATES)):
                blocks[k, :, k * flat.shape[1] : (k + 1) * flat.shape[1]] = flat
            return blocks.flatten(0, 1)

        inputs = {}
        for d, (seq, hidden) in enumerate(self._run(x)):
            parts = [seq.flatten(0, 1)]
            if with_state:
                previous = torch.cat([torch.zeros_like(hidden[:, :1]), hidden[:, :-1]], dim=1)
                parts.append(previous.flatten(0, 1))
            if self.lstm:
                parts = [gate_blocks(part) for part in parts]
            inputs[f"P{d}"] = torch.cat(parts, dim=1)
        return inputs

    def permutation_spec(self) -> PermutationSpec:
        suffixes = [f"_{g}" for g in GATES] if self.lstm else [""]
        axes = {}
        for d in range(len(self.layers)):
            pairs = []
            for s in suffixes:  # incoming weights first: the input-to-hidden blocks, then the recurrent ones
                pairs += [(f"layers.{d}.weight_ih{s}", 0), (f"layers.{d}.bias{s}", 0)]
            for s in suffixes:
                pairs += [(f"layers.{d}.weight_hh{s}", 0), (f"layers.{d}.weight_hh{s}", 1)]
            following = [f"layers.{d + 1}.weight_ih{s}" for s in suffixes] if d + 1 < len(self.layers) else []
            pairs += [(p, 1) for p in following] or [("classifier.weight", 1)]
            axes[f"P{d}"] = tuple(pairs)
        return PermutationSpec(axes)


class RNN(Recurrent):
    lstm = False


class LSTM(Recurrent):
    lstm = True


def recurrent_layer(seq, w_ih, w_hh, bias, lstm: bool) -> torch.Tensor:
    """Hidden states ``(batch, steps, units)`` of one tanh-RNN or LSTM layer over ``seq`` ``(batch, steps,
    features)``, from zero states, in the fused kernel that ``nn.RNN`` and ``nn.LSTM`` run (oneDNN on the CPU,
    cuDNN on CUDA). Weights ``(gates * units, fan_in)``, the gates in PyTorch's order i, f, g, o."""
    h0 = seq.new_zeros(1, seq.shape[0], w_hh.shape[1])
    params = [w_ih, w_hh, bias, torch.zeros_like(bias)]  # one bias: the kernel's second one is zero
    with warnings.catch_warnings():  # cuDNN would rather have the weights in one buffer; they are small
        warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
        if lstm:
            return torch.lstm(seq, (h0, h0), params, True, 1, 0.0, torch.is_grad_enabled(), False, True)[0]
        return torch.rnn_tanh(seq, h0, params, True, 1, 0.0, torch.is_grad_enabled(), False, True)[0]


def _last(items):
    """The last item of an iterator (each earlier one is dropped as soon as the next arrives)."""
    return deque(items, maxlen=1)[0]


def _image_shape(input_shape) -> tuple[int, ...]:
    """``(channels, *spatial)``; a flat ``(length,)`` input is one channel."""
    return (1, *input_shape) if len(input_shape) == 1 else tuple(input_shape)


def _channels_last(out: torch.Tensor) -> torch.Tensor:
    """``(batch, channels, *spatial)`` -> ``(batch * positions, channels)``: each position is a sample."""
    return out.flatten(2).transpose(1, 2).flatten(0, 1)


def _patches(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """The ``(batch * positions, in_channels * kernel)`` patches a convolution sees, in the order of
    ``conv.weight.flatten(1)``."""
    if x.dim() == 3:  # 1-D: treat as an image of height 1
        x, kernel, padding = x.unsqueeze(2), (1, *conv.kernel_size), (0, *conv.padding)
    else:
        kernel, padding = conv.kernel_size, conv.padding
    return nn.functional.unfold(x, kernel, padding=padding).transpose(1, 2).flatten(0, 1)


ARCHITECTURES = {"mlp": MLP, "cnn": ConvNet, "resnet": ResNet, "resnet_bn": ResNetBN, "rnn": RNN, "lstm": LSTM}


def build_model(arch: str, input_shape, num_classes: int, width: int, depth: int) -> nn.Module:
    """Build an untrained model; the caller seeds torch first for a reproducible initialisation."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](tuple(input_shape), num_classes, width, depth)
