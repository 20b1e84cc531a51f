"""Recurrent networks (tanh RNN, LSTM) that read an input as a sequence."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from lmcot.models.base import _image_shape, _last
from lmcot.permutation import PermutationSpec

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
