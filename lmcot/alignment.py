"""Alignment methods: each returns one permutation per hidden layer that maps model B onto model A.

All methods share one signature, ``method(model_a, model_b, inputs, **options) -> Permutations``, and
work on any architecture through its :class:`~lmcot.permutation.PermutationSpec`. Apply the result
with :func:`~lmcot.permutation.apply_permutations` to B's state dict. The layer-by-layer methods match
a recurrent layer's units on their hidden-to-hidden weights too, by a fixed-point iteration that
approximates the quadratic assignment problem this poses (see :func:`layerwise`).
"""

from __future__ import annotations

import logging
from copy import deepcopy
from functools import partial

import numpy as np
import torch

from lmcot.choices import BIAS_AWARE_UNSUPPORTED, PAIRINGS  # noqa: F401 - part of this module's interface
from lmcot.design import seed_pairs  # noqa: F401 - part of this module's interface
from lmcot.ot import entropic_log_plan, exact_permutation, solve_lap, squared_distances
from lmcot.permutation import Permutations, PermutationSpec, apply_permutations, identity_permutations, permute_tensor

log = logging.getLogger(__name__)


def identity(model_a, model_b, inputs=None) -> Permutations:
    """No alignment: the naive baseline."""
    return identity_permutations(model_a.permutation_spec(), model_a.state_dict())


def is_bias(param: str) -> bool:
    """Whether a parameter name is a bias (``layers.0.bias``, ``layers.0.bias_f``, ``stem.bn.bias``)."""
    return param.rsplit(".", 1)[-1].startswith("bias")


@torch.no_grad()
def weight_matching(
    model_a, model_b, inputs=None, max_sweeps: int = 100, seed: int = 0, biases: bool = True
) -> Permutations:
    """Git Re-Basin weight matching (Ainsworth et al. 2023) by coordinate descent with exact LAPs.

    Maximises ``sum_l <W_A^l, P_l W_B^l P_{l-1}^T>``, plus the biases' inner products ``<b_A^l, P_l b_B^l>``
    unless ``biases`` is false. Each step fixes all permutations but one, whose best value is a LAP over
    the summed inner products of every tensor it acts on. Permutations are visited in a random order
    (``seed``); a permutation is solved again only after a permutation it shares a tensor with has
    changed, and the descent stops when none has. Scores are computed in float32 on the models' device;
    the LAPs are solved on the CPU.
    """
    spec = model_a.permutation_spec()
    if not biases:
        spec = PermutationSpec(
            {name: tuple(p for p in pairs if not is_bias(p[0])) for name, pairs in spec.axes.items()}
        )
    state_a = {k: v.detach().float() for k, v in model_a.state_dict().items()}
    state_b = {k: v.detach().float().to(next(iter(state_a.values())).device) for k, v in model_b.state_dict().items()}
    perms = identity_permutations(spec, state_a)
    neighbours = {
        name: {other for param, _ in pairs for other in spec.acting_on(param).values() if other != name}
        for name, pairs in spec.axes.items()
    }
    rng = np.random.default_rng(seed)
    stale = set(spec.names)  # permutations whose score may have changed since they were last solved
    for sweep in range(max_sweeps):
        for name in rng.permutation(spec.names):
            if name not in stale:
                continue
            stale.discard(name)
            n = len(perms[name])
            score = 0
            for param, axis in spec.axes[name]:
                w_a = state_a[param].movedim(axis, 0).reshape(n, -1)
                w_b = permute_tensor(spec, perms, param, state_b[param], skip_axis=axis)
                score = score + w_a @ w_b.movedim(axis, 0).reshape(n, -1).T
            score = score.double().cpu()
            new = solve_lap(score)
            gain = score[torch.arange(n), new].sum() - score[torch.arange(n), perms[name]].sum()
            if gain > 1e-6 * score.abs().max():
                perms[name] = new
                stale |= neighbours[name]
        if not stale:
            log.debug("weight matching converged after %d sweeps", sweep + 1)
            break
    else:
        log.warning("weight matching stopped at max_sweeps=%d before converging", max_sweeps)
    return perms


@torch.no_grad()
def activation_statistics(model_a, model_b, inputs: torch.Tensor, batch_size: int = 4096) -> dict:
    """Per permutation name, the moments of both models' hidden activations on ``inputs``.

    Returns ``{name: (cross_covariance, std_a, std_b)}``, the covariance ``(n_a, n_b)`` centred,
    float64. Accumulated over batches, so memory stays ``O(batch_size * width + width^2)``.
    """
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
    return {name: solve_lap(cov / torch.outer(sa, sb).clamp_min(1e-12)) for name, (cov, sa, sb) in stats.items()}


def activation_covariance(model_a, model_b, inputs: torch.Tensor, batch_size: int = 4096) -> Permutations:
    """Ferbach et al.'s activation matching: one LAP per layer on the centred cross-covariance
    ``E[(a - E a)(b - E b)^T]`` of the two models' post-activation outputs on ``inputs``."""
    stats = activation_statistics(model_a, model_b, inputs, batch_size)
    return {name: solve_lap(cov) for name, (cov, _, _) in stats.items()}


# --- layer by layer, from the input to the output (Ferbach et al. 2024) ---------------------------


def incoming_matrices(spec: PermutationSpec, name: str, state, solved=None, recurrent: bool = False) -> list[str]:
    """The weight matrices whose axis 0 permutation ``name`` permutes and whose rows can be compared now.

    Biases are excluded. With ``solved`` (the permutations already found), a matrix is left out if another
    of its axes belongs to a permutation not yet solved, ``name`` itself included (recurrent weights): its
    rows cannot be compared yet. A residual stream is thus matched on the first layer that writes to it.
    ``recurrent`` also admits matrices whose other axes are ``name``'s own (hidden-to-hidden weights),
    listed after the others, so that the input-only rows are a column prefix of the rows with them.
    """
    inputs, own = [], []
    for param, axis in spec.axes[name]:
        others = {n for a, n in spec.acting_on(param).items() if a != 0}
        if axis != 0 or state[param].dim() < 2:
            continue
        if solved is None or others <= set(solved):
            inputs.append(param)
        elif recurrent and name in others and others <= {*solved, name}:
            own.append(param)
    if not inputs:
        raise ValueError(f"permutation {name!r} permutes no weight matrix's output axis whose inputs are aligned")
    return inputs + own


def incoming_weights(
    spec: PermutationSpec, name: str, state, perms, solved=None, recurrent: bool = False
) -> torch.Tensor:
    """The weights that feed the units of permutation ``name``, one row per unit: ``(n, fan_in)``: the
    :func:`incoming_matrices` in that order, their other axes permuted by ``perms``, so that a layer
    of B is compared after its inputs were aligned. With ``recurrent``, the hidden-to-hidden columns come
    last, permuted by ``perms[name]`` itself."""
    matrices = incoming_matrices(spec, name, state, solved, recurrent)
    return torch.cat([permute_tensor(spec, perms, p, state[p], skip_axis=0).flatten(1) for p in matrices], dim=1)


def has_recurrent_weights(spec: PermutationSpec) -> bool:
    """Whether some tensor has two axes permuted by the same permutation (hidden-to-hidden weights)."""
    params = {p for pairs in spec.axes.values() for p, _ in pairs}
    return any(len(set(spec.acting_on(p).values())) < len(spec.acting_on(p)) for p in params)


@torch.no_grad()
def layerwise(model_a, model_b, unit_scores, solve=None, recurrent_iterations: int = 20) -> Permutations:
    """Solve the permutations one at a time in the spec's order (input to output).

    ``unit_scores(name, w_a, w_b)`` returns the ``(n, n)`` score to maximise between A's and B's units of
    permutation ``name``, from their incoming weights ``(n, fan_in)`` (B's already aligned at its inputs;
    see :func:`incoming_weights`); ``solve(name, score)`` turns it into a permutation (default
    :func:`solve_lap`).

    A recurrent layer's units also feed themselves (``weight_hh``: both axes are ``name``), so aligning B's
    recurrent columns needs the permutation being solved: the exact problem is a quadratic assignment
    problem. It is approximated by a fixed-point (alternating) iteration: solve on the input-to-hidden
    columns alone (the layer-by-layer answer without the recurrent term), then rebuild B's rows with its
    recurrent columns permuted by the current estimate ``p`` and re-solve, until ``p`` does not change, at
    most ``recurrent_iterations`` times (0: input-only). The result then solves the LAP built with its own
    recurrent rows. If the iteration cycles or does not settle, it returns, with a logged note, the iterate
    of best self-consistent objective ``sum_i S_p[i, p(i)]`` (``S_p``: the score built with ``p``'s own
    rows) among all iterates, the input-only one included. Layers without recurrent weights are solved
    once, as before.
    """
    solve = solve or (lambda name, score: solve_lap(score))
    spec = model_a.permutation_spec()
    state_a = {k: v.detach().float() for k, v in model_a.state_dict().items()}
    state_b = {k: v.detach().float() for k, v in model_b.state_dict().items()}
    identity_perms = identity_permutations(spec, state_a)
    perms = dict(identity_perms)
    for done, name in enumerate(spec.names):
        solved = spec.names[:done]
        w_a = incoming_weights(spec, name, state_a, identity_perms, solved)
        w_b = incoming_weights(spec, name, state_b, perms, solved)
        perms[name] = solve(name, unit_scores(name, w_a, w_b))
        with_own = incoming_matrices(spec, name, state_a, solved, recurrent=True)
        if recurrent_iterations <= 0 or len(with_own) == len(incoming_matrices(spec, name, state_a, solved)):
            continue  # no recurrent weights: solved once
        w_a = incoming_weights(spec, name, state_a, identity_perms, solved, recurrent=True)

        def score_of(perm, name=name, solved=solved, w_a=w_a):
            rows_b = incoming_weights(spec, name, state_b, {**perms, name: perm}, solved, recurrent=True)
            return unit_scores(name, w_a, rows_b)

        perms[name] = _fixed_point(name, perms[name], score_of, solve, recurrent_iterations)
    return perms


def _fixed_point(name: str, perm: torch.Tensor, score_of, solve, max_iterations: int) -> torch.Tensor:
    """Iterate ``perm <- solve(name, score_of(perm))`` from ``perm`` until it stays put (see :func:`layerwise`)."""
    visited = {}  # permutation as a tuple -> (its self-consistent objective, the permutation)
    for _ in range(max_iterations):
        score = score_of(perm)
        visited[tuple(perm.tolist())] = (score.double()[torch.arange(len(perm)), perm].sum().item(), perm)
        new = solve(name, score)
        if torch.equal(new, perm):
            return perm
        if tuple(new.tolist()) in visited:
            log.info("recurrent fixed point at %s cycles; keeping the iterate of best objective", name)
            break
        perm = new
    else:
        score = score_of(perm)
        visited[tuple(perm.tolist())] = (score.double()[torch.arange(len(perm)), perm].sum().item(), perm)
        log.info("recurrent fixed point at %s unsettled after %d iterations; keeping the best", name, max_iterations)
    return max(visited.values(), key=lambda v: v[0])[1]


def naive_weight_matching(model_a, model_b, inputs=None, recurrent_iterations: int = 20) -> Permutations:
    """Layer by layer, LAP on the inner products of incoming weight vectors, ``W_A W_B^T`` (a recurrent
    layer's rows include its hidden-to-hidden weights; see :func:`layerwise`)."""
    return layerwise(model_a, model_b, lambda name, w_a, w_b: w_a @ w_b.T, recurrent_iterations=recurrent_iterations)


@torch.no_grad()
def second_moments(features, inputs: torch.Tensor, batch_size: int = 4096) -> dict[str, torch.Tensor]:
    """``E[f f^T]`` (uncentred, float64) of every ``(samples, n)`` tensor that ``features(x)`` returns by name,
    accumulated over batches of ``inputs``."""
    moments = {}
    for start in range(0, len(inputs), batch_size):
        for name, f in features(inputs[start : start + batch_size]).items():
            moments[name] = moments.get(name, 0) + (f.T.float() @ f.float()).double()
    return {name: m / len(inputs) for name, m in moments.items()}


@torch.no_grad()
def input_second_moments(model, inputs: torch.Tensor, batch_size: int = 4096, features=None) -> dict[str, torch.Tensor]:
    """Per permutation name, ``E[h h^T]`` (uncentred, ``(fan_in, fan_in)``) of the inputs its layer sees
    (``features(x)``, by default ``model.layer_inputs``)."""
    if features is None and not hasattr(model, "layer_inputs"):
        raise ValueError(f"{type(model).__name__} has no layer_inputs(), which covariance-aware matching needs")
    features = features or model.eval().layer_inputs
    return {name: m.float() for name, m in second_moments(features, inputs, batch_size).items()}


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
    state_a, state_b = model_a.state_dict(), model_b.state_dict()

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
    it); ``ValueError`` if the units have several incoming matrices or no bias of their own."""
    solved = spec.names[: spec.names.index(name)]
    matrices = incoming_matrices(spec, name, state, solved)
    bias = f"{matrices[0].rsplit('.', 1)[0]}.bias"
    if len(matrices) > 1 or (bias, 0) not in spec.axes[name]:
        raise ValueError(
            f"bias-aware covariance matching needs each unit of permutation {name!r} to have one incoming weight "
            f"matrix and one bias; it has {', '.join(matrices)} and {'a' if (bias, 0) in spec.axes[name] else 'no'} "
            f"{bias!r}"
        )
    return state[bias].flatten()


def _negative_squared_distances(name, w_a, w_b) -> torch.Tensor:
    """``-|w_A,i - w_B,j|^2``, ``(n, n)`` float64: the OT cost as a score to maximise."""
    return torch.from_numpy(-squared_distances(w_a, w_b))


def ot_emd(
    model_a, model_b, inputs=None, num_iter_max: int = 1_000_000, recurrent_iterations: int = 20
) -> Permutations:
    """Exact optimal transport (POT's ``ot.emd``) between the two layers' neurons, layer by layer.

    Each neuron is a point (its incoming weights) of uniform mass; the cost is the squared Euclidean
    distance. With equal masses an optimal plan can be taken at a vertex of the Birkhoff polytope, a
    permutation, which is what the network simplex returns. Wide layers need a large ``num_iter_max``.
    A recurrent layer's points include its hidden-to-hidden rows (see :func:`layerwise`).
    """

    def plan_to_permutation(name, score):
        return exact_permutation(-score.numpy(), num_iter_max, where=name)

    return layerwise(model_a, model_b, _negative_squared_distances, plan_to_permutation, recurrent_iterations)


def ot_sinkhorn(
    model_a,
    model_b,
    inputs=None,
    epsilon: float = 0.01,
    num_iter_max: int = 10_000,
    stop_threshold: float = 1e-4,
    recurrent_iterations: int = 20,
) -> Permutations:
    """Entropic optimal transport (POT's ``sinkhorn_log``) between the layers' neurons, layer by layer,
    rounded to the permutation of largest log-coupling.

    The squared-distance cost ``C`` is divided by its maximum, so ``epsilon`` is relative to the largest cost.
    Sinkhorn's coupling is ``P = diag(u) K diag(v)`` with ``K = exp(-C / epsilon)``, so over permutations
    ``sum_i log P[i, p(i)] = sum log u + sum log v - sum_i C[i, p(i)] / epsilon``: the rounding returns the
    permutation of least cost, the exact plan's, for every ``epsilon`` and iteration count (the report then
    merges this method with ``ot_emd``). Rounding the coupling itself instead (largest total mass) blurs
    near-ties at small ``epsilon`` and loses most of the exact plan in wide layers. A recurrent layer's
    points include its hidden-to-hidden rows (see :func:`layerwise`).
    """

    def rounded_coupling(name, score):
        return solve_lap(torch.from_numpy(entropic_log_plan(-score.numpy(), epsilon, num_iter_max, stop_threshold)))

    return layerwise(model_a, model_b, _negative_squared_distances, rounded_coupling, recurrent_iterations)


def barycenter(
    model_a,
    model_b,
    inputs=None,
    solver: str = "emd",
    epsilon: float = 1e-3,
    max_iterations: int = 20,
    alpha_h: float = 1.0,
    start: str = "best",
    input_transport: str = "average",
) -> Permutations:
    """Fusion as alignment: the Wasserstein barycentre of A and B (lambda = 1/2, from ``start``) couples
    each to the fused model; the couplings, rounded to permutations, put B's units where A's are.
    See :func:`lmcot.fusion.barycenter_permutations`."""
    from lmcot.fusion import barycenter_permutations

    options = dict(solver=solver, epsilon=epsilon, max_iterations=max_iterations, alpha_h=alpha_h, start=start)
    return barycenter_permutations(model_a, model_b, input_transport=input_transport, **options)


METHODS = {
    "identity": identity,
    "weight_matching": weight_matching,
    "weight_matching_without_biases": partial(weight_matching, biases=False),
    "activation_matching": activation_matching,
    "naive_weight_matching": naive_weight_matching,
    "cov_weight_matching": cov_weight_matching,
    "cov_weight_matching_with_biases": partial(cov_weight_matching, biases=True),
    "activation_covariance": activation_covariance,
    "ot_emd": ot_emd,
    "ot_sinkhorn": ot_sinkhorn,
    "barycenter": barycenter,
}


# Variants take the options of the method they vary (params.yaml's align.<method> group).
OPTIONS_OF = {
    "weight_matching_without_biases": "weight_matching",
    "cov_weight_matching_with_biases": "cov_weight_matching",
}


def align(method: str, model_a, model_b, inputs=None, **options) -> Permutations:
    """Run alignment method ``method`` (a key of :data:`METHODS`) with its options."""
    if method not in METHODS:
        raise ValueError(f"unknown alignment method {method!r}; valid: {', '.join(METHODS)}")
    return METHODS[method](model_a, model_b, inputs, **options)


def permuted_copy(model: torch.nn.Module, perms: Permutations) -> torch.nn.Module:
    """A copy of ``model`` with its hidden units permuted by ``perms`` (the original is untouched)."""
    copy = deepcopy(model)
    copy.load_state_dict(apply_permutations(model.permutation_spec(), perms, model.state_dict()))
    return copy


@torch.no_grad()
def output_change(model: torch.nn.Module, perms: Permutations, inputs: torch.Tensor) -> float:
    """Largest absolute change of ``model``'s outputs on ``inputs`` caused by permuting it.

    A correct permutation gives float round-off only (about 1e-6 of the outputs' scale).
    """
    model.eval()
    return (permuted_copy(model, perms).eval()(inputs) - model(inputs)).abs().max().item()
