"""Covariance-aware weight matching (Ferbach et al. 2024): weights compared through the second moment of
the inputs their layer sees."""

from __future__ import annotations

from functools import partial

import torch

from lmcot.align.layerwise import layerwise
from lmcot.errors import UnsupportedModelError
from lmcot.moments import input_second_moments
from lmcot.permutation import Permutations, PermutationSpec, has_recurrent_weights, incoming_matrices


def cov_weight_matching(
    model_a,
    model_b,
    inputs: torch.Tensor,
    batch_size: int = 4096,
    biases: bool = False,
    recurrent_iterations: int = 20,
) -> Permutations:
    """Ferbach et al.'s covariance-aware weight matching: layer by layer, LAP on ``W_A Sigma W_B^T``.

    ``Sigma = E[h h^T]`` is the uncentred second moment of model A's inputs to that layer (its previous
    layer's post-activation outputs; the data for the first layer) over ``inputs``. Neurons are matched
    by how alike they act on the data: this minimises ``sum_i E[(w_A,i . h - w_B,pi(i) . h)^2]``.

    A recurrent layer's input is ``z = [x_t, h_{t-1}]`` (``h_{t-1}``: A's previous hidden state of that
    layer, 0 at the first step), laid out like its rows (see :func:`layerwise`); the model's
    ``layer_inputs(x, with_state=True)`` gives it, and the input-only first step uses the leading block
    of ``Sigma``.

    With ``biases`` (a variant in Ferbach et al.'s released code, not the paper's method) the score of
    A's unit i and B's unit j is ``E[(w_A,i . h + b_A,i)(w_B,j . h + b_B,j)]``, the same expectation over
    model A's inputs, written as ``[W_A b_A] E[h' h'^T] [W_B b_B]^T`` with ``h' = (h, 1)``. Defined for
    units with one incoming weight matrix and one bias (not :data:`BIAS_AWARE_UNSUPPORTED`); it ignores
    recurrent weights (input-to-hidden rows only).
    """
    spec = model_a.permutation_spec()
    features = model_a.eval().layer_inputs if hasattr(model_a, "layer_inputs") else None
    if biases and features is not None:
        features = _with_constant(features)
    elif features is not None and recurrent_iterations > 0 and has_recurrent_weights(spec):
        features = partial(model_a.layer_inputs, with_state=True)
    sigma = input_second_moments(model_a, inputs, batch_size, features)
    if not biases:

        def cov_score(name, w_a, w_b):
            fan_in = w_a.shape[1]  # input-only rows: Sigma's leading block (the rows' column prefix)
            return w_a @ sigma[name][:fan_in, :fan_in].to(w_a) @ w_b.T

        return layerwise(model_a, model_b, cov_score, recurrent_iterations=recurrent_iterations)
    state_a, state_b = spec.split(model_a.state_dict()), spec.split(model_b.state_dict())

    def score(name, w_a, w_b):
        bias_a, bias_b = (_unit_bias(spec, name, state) for state in (state_a, state_b))
        # B's bias is indexed by B's own units, like the rows of w_b
        a = torch.cat([w_a, bias_a.to(w_a)[:, None]], 1)
        b = torch.cat([w_b, bias_b.to(w_b)[:, None]], 1)
        return a @ sigma[name].to(a) @ b.T

    return layerwise(model_a, model_b, score, recurrent_iterations=0)


def _with_constant(features):
    """``features`` with a column of ones appended to every ``(samples, n)`` tensor it returns."""

    def augmented(x):
        return {name: torch.cat([f, f.new_ones(len(f), 1)], 1) for name, f in features(x).items()}

    return augmented


def _unit_bias(spec: PermutationSpec, name: str, state) -> torch.Tensor:
    """The bias beside the one incoming weight matrix of permutation ``name`` (as :func:`layerwise` compares
    it); :class:`UnsupportedModelError` if the units have several incoming matrices or no bias of their own."""
    solved = spec.names[: spec.names.index(name)]
    matrices = incoming_matrices(spec, name, state, solved)
    bias = f"{matrices[0].rsplit('.', 1)[0]}.bias"
    if len(matrices) > 1 or (bias, 0) not in spec.axes[name]:
        raise UnsupportedModelError(
            f"bias-aware covariance matching needs each unit of permutation {name!r} to have one incoming weight "
            f"matrix and one bias; it has {', '.join(matrices)} and {'a' if (bias, 0) in spec.axes[name] else 'no'} "
            f"{bias!r}; use cov_weight_matching (without biases) instead"
        )
    return state[bias].flatten()
