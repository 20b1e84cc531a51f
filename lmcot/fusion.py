"""Model fusion by Wasserstein barycentres (Akash, Li and Garcia Trillos 2022), and its baselines.

N trained models of one architecture (weights ``lambda_i``) are fused into one target model, whose
widths may differ from theirs, layer by layer from the input to the output, driven by the
architecture's :class:`~lmcot.permutation.PermutationSpec`: each permutation name is one layer of
units. For each model ``i`` and layer, a coupling ``pi_i`` (``m`` target units x ``n`` model units,
uniform marginals) transports the model's units onto the target's; it is the soft counterpart of a
permutation and carries every tensor the spec names into the target's coordinates
(:func:`transport_tensor`). A unit's own parameters (axis 0: its incoming weights, bias, BatchNorm
scale and statistics) become the mean over the model units coupled to it, ``m pi_i`` (rows sum to
1). An input axis (the next layer's weights) becomes the sum of the contributions of those units,
``n pi_i`` (columns sum to 1), so a target unit that merges two model units receives both of their
outgoing weights, and a model unit split over two target units passes half to each: the fused layer
feeds the next one as much as the model's layer did, whatever the target's width.

For a layer, a unit is a point: its incoming weights with their input axes already carried into the
target's coordinates (and its bias, BatchNorm scale and shift). The cost between target unit ``j``
and model unit ``k`` is the squared distance of the two points. Up to terms that do not change the
optimal coupling, it is the paper's ``sum_{j',k'} ||W[j,j'] - W_i[k,k']||^2 pi_prev[j',k']``.
The barycentre alternates ``pi_i = OT(cost_i)`` and ``W = sum_i lambda_i m pi_i W_i`` until neither
changes. A recurrent matrix (one whose other axis is the layer's own permutation) adds
``alpha_h * ||H[j] - (H_i n pi_i^T)[k]||^2``, which depends on the coupling being solved, so it is
found by a fixed-point loop (the Gromov-Wasserstein barycentre); ``alpha_h = 0`` ignores it.
A matrix whose input axis belongs to a layer not solved yet (a residual block's last convolution
writing to the skip stream) takes no part in the cost: the stream's coupling, found from the first
layer that writes to it, is reused for it.

Baselines: :func:`vanilla_average` (no alignment), :func:`one_shot_fusion` (Singh and Jaggi 2020:
couple every model once to a fixed anchor, then average) and :func:`ensemble_evaluate` (average of
the models' predicted probabilities).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lmcot.alignment import solve_lap
from lmcot.permutation import Permutations, PermutationSpec

log = logging.getLogger(__name__)

SOLVERS = ("emd", "sinkhorn")
Couplings = dict[str, torch.Tensor]


@dataclass
class Fusion:
    """The fused state dict, and per input model the coupling of every layer, ``(m, n_i)`` float64."""

    state: dict[str, torch.Tensor]
    couplings: list[dict[str, torch.Tensor]]
    iterations: dict[str, int]


def averaging(plan: torch.Tensor) -> torch.Tensor:
    """``(m, n)`` map of a unit's own parameters: each target unit's is the mean of its coupled units'."""
    return plan / plan.sum(1, keepdim=True).clamp_min(1e-300)


def summing(plan: torch.Tensor) -> torch.Tensor:
    """``(m, n)`` map of an input axis: each model unit's contribution is shared among its target units."""
    return plan / plan.sum(0, keepdim=True).clamp_min(1e-300)


def transport_tensor(
    spec: PermutationSpec, couplings: Couplings, param: str, tensor: torch.Tensor, skip=()
) -> torch.Tensor:
    """Carry every axis of ``tensor`` that a permutation with a coupling in ``couplings`` acts on
    (except the axes in ``skip``) into the target's coordinates: an axis of ``n`` units becomes ``m``,
    by :func:`averaging` on axis 0 (the units' own parameters) and :func:`summing` on the others
    (inputs). A permutation's coupling (a permutation matrix / n) gives
    :func:`~lmcot.permutation.permute_tensor`."""
    for axis, name in spec.acting_on(param).items():
        if axis in skip or name not in couplings:
            continue
        plan = couplings[name].to(tensor.dtype)
        moved = tensor.movedim(axis, 0)
        flat = (averaging(plan) if axis == 0 else summing(plan)) @ moved.reshape(moved.shape[0], -1)
        tensor = flat.reshape(-1, *moved.shape[1:]).movedim(0, axis)
    return tensor


def transport_state(spec: PermutationSpec, couplings: Couplings, state) -> dict[str, torch.Tensor]:
    """Every floating tensor of ``state`` carried by :func:`transport_tensor`; other tensors unchanged."""
    return {k: transport_tensor(spec, couplings, k, v) if v.is_floating_point() else v for k, v in state.items()}


def ot_plan(
    cost: torch.Tensor,
    solver: str = "emd",
    epsilon: float = 1e-3,
    num_iter_max: int | None = None,
    stop_threshold: float = 1e-4,
):
    """Coupling ``(m, n)`` with uniform marginals minimising ``<pi, cost>``: exact (``emd``, at most
    ``num_iter_max`` network-simplex iterations, default 10^6) or entropic (``sinkhorn``, log domain,
    ``epsilon`` relative to the largest cost, stopping once the marginals are within ``stop_threshold``
    or after ``num_iter_max`` iterations, default 10^4, then rounded onto the exact marginals)."""
    import ot

    cost = cost.detach().double().cpu().numpy()
    m, n = cost.shape
    a, b = np.full(m, 1.0 / m), np.full(n, 1.0 / n)
    if solver == "emd":
        plan = ot.emd(a, b, cost, numItermax=num_iter_max or 1_000_000)
    elif solver == "sinkhorn":
        scale = max(cost.max(), 1e-300)
        plan = ot.sinkhorn(
            a,
            b,
            cost / scale,
            epsilon,
            method="sinkhorn_log",
            numItermax=num_iter_max or 10_000,
            stopThr=stop_threshold,
            warn=False,
        )
        plan = round_to_marginals(plan, a, b)
    else:
        raise ValueError(f"unknown OT solver {solver!r}; valid: {', '.join(SOLVERS)}")
    return torch.from_numpy(plan)


def round_to_marginals(plan: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The nearby coupling with marginals exactly ``a`` and ``b`` (Altschuler, Weed and Rigollet 2017):
    scale down rows and columns that carry too much, then spread the missing mass as a rank-one term."""
    plan = plan * np.minimum(a / np.maximum(plan.sum(1), 1e-300), 1)[:, None]
    plan = plan * np.minimum(b / np.maximum(plan.sum(0), 1e-300), 1)[None, :]
    row_deficit, column_deficit = np.maximum(a - plan.sum(1), 0), np.maximum(b - plan.sum(0), 0)
    if row_deficit.sum() > 0:
        plan = plan + np.outer(row_deficit, column_deficit) / row_deficit.sum()
    return plan


def _units(spec, name, state, couplings, parameters, solved):
    """Model units of layer ``name`` as points ``(n, features)`` carried into the target's inputs, and
    its recurrent matrices ``(n, n, ...)`` (input axes other than ``name`` carried)."""
    inputs, recurrent = [], []
    for param, axis in spec.axes[name]:
        if axis != 0 or param not in parameters:  # buffers (BatchNorm statistics) follow, they do not steer
            continue
        others = {a: n for a, n in spec.acting_on(param).items() if a != 0}
        if not set(others.values()) <= {*solved, name}:
            continue  # input from a layer not solved yet: reuses this layer's coupling (residual streams)
        tensor = transport_tensor(spec, couplings, param, state[param].double(), skip=(0,))
        if name in others.values():
            recurrent.append(tensor)
        else:
            inputs.append(tensor.reshape(len(tensor), -1))
    return torch.cat(inputs, 1) if inputs else None, recurrent


def _self_points(recurrent, plan):
    """Recurrent matrices ``(n, n)`` with their column (input) axis carried by the coupling ``(m, n)``."""
    spec_map = summing(plan)
    return torch.cat(
        [(h.reshape(h.shape[0], h.shape[1], -1).transpose(1, 2) @ spec_map.T).flatten(1) for h in recurrent], 1
    )


@torch.no_grad()
def wasserstein_barycenter(
    models: Sequence[torch.nn.Module],
    target: torch.nn.Module,
    weights: Sequence[float] | None = None,
    solver: str = "emd",
    epsilon: float = 1e-3,
    max_iterations: int = 20,
    alpha_h: float = 1.0,
    tolerance: float = 1e-6,
    update_target: bool = True,
    seed: int = 0,
) -> Fusion:
    """Fuse ``models`` into the architecture of ``target`` (an untrained model whose widths may differ).

    Layer by layer: the target's units start as model 0's (a random subset when the target is
    narrower, repeated units when wider, chosen by ``seed``); then couplings and the weighted mean
    ``W = sum_i lambda_i m pi_i W_i`` alternate for at most ``max_iterations`` until the relative change
    of ``W`` is below ``tolerance``. ``update_target=False`` keeps the target at model 0 (an anchor, as
    one-shot OT fusion does). Returns the fused state (load it into ``target``) and the couplings.
    """
    if len(models) < 1:
        raise ValueError("wasserstein_barycenter needs at least one model")
    weights = np.full(len(models), 1 / len(models)) if weights is None else np.asarray(weights, dtype=float)
    if len(weights) != len(models) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"weights must be {len(models)} non-negative numbers, not all 0; got {weights.tolist()}")
    weights = weights / weights.sum()
    spec = target.permutation_spec()
    sizes = spec.sizes(target.state_dict())
    states = [{k: v.detach().cpu() for k, v in model.state_dict().items()} for model in models]
    parameters = {name for name, _ in models[0].named_parameters()}
    couplings: list[Couplings] = [{} for _ in models]
    iterations = {}
    generator = np.random.default_rng(seed)
    for done, name in enumerate(spec.names):
        solved = spec.names[:done]
        m = sizes[name]
        units = [_units(spec, name, state, couplings[i], parameters, solved) for i, state in enumerate(states)]
        points = [u[0] for u in units]
        recurrent = [u[1] for u in units]
        if points[0] is None:
            raise ValueError(f"layer {name!r} has no incoming weights whose inputs are solved before it")
        n0 = len(points[0])
        if not update_target and m != n0:
            raise ValueError(f"one-shot fusion needs the target as wide as model 0 at {name!r} ({m} != {n0})")
        start = np.arange(m) if m == n0 else _initial_units(n0, m, generator)
        target_points = points[0][start]
        target_self = [h[start][:, start] for h in recurrent[0]]
        for iterations[name] in range(1, max_iterations + 1):
            for i in range(len(models)):
                plan = _couple(
                    target_points,
                    target_self,
                    points[i],
                    recurrent[i],
                    couplings[i].get(name),
                    alpha_h,
                    solver,
                    epsilon,
                )
                couplings[i][name] = plan
            if not update_target:
                break
            new_points = sum(w * averaging(couplings[i][name]) @ points[i] for i, w in enumerate(weights))
            new_self = [
                sum(w * _transport_square(couplings[i][name], recurrent[i][r]) for i, w in enumerate(weights))
                for r in range(len(target_self))
            ]
            change = (new_points - target_points).norm() / target_points.norm().clamp_min(1e-12)
            target_points, target_self = new_points, new_self
            if change < tolerance:
                break
        log.debug("layer %s: %d barycentre iterations", name, iterations[name])
    fused = {}
    for key, tensor in states[0].items():
        if tensor.is_floating_point():
            fused[key] = sum(
                w * transport_tensor(spec, couplings[i], key, states[i][key].double()) for i, w in enumerate(weights)
            )
            fused[key] = fused[key].to(tensor.dtype)
        else:  # integer buffers (BatchNorm's step counter) are not averaged
            fused[key] = tensor.clone()
    return Fusion(fused, couplings, iterations)


def _initial_units(n: int, m: int, generator) -> np.ndarray:
    """``m`` of ``n`` units: a random subset when ``m < n``; every unit and random repeats when ``m > n``."""
    if m < n:
        return np.sort(generator.choice(n, m, replace=False))
    return np.concatenate([np.arange(n), generator.choice(n, m - n, replace=True)])


def _transport_square(plan: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """A recurrent matrix ``h`` ``(n, n, ...)`` carried to ``(m, m, ...)``: rows averaged, columns summed."""
    flat = h.reshape(h.shape[0], h.shape[1], -1).permute(2, 0, 1)
    m = plan.shape[0]
    return (averaging(plan) @ flat @ summing(plan).T).permute(1, 2, 0).reshape(m, m, *h.shape[2:])


def _couple(target_points, target_self, points, recurrent, previous, alpha_h, solver, epsilon, fixed_point=20):
    """Coupling of the target's units and one model's: OT on the input cost, plus the recurrent cost
    through a fixed-point loop (the cost depends on the coupling; start from the last one or from the
    input cost alone)."""
    cost = torch.cdist(target_points, points) ** 2
    if not recurrent or alpha_h == 0:
        return ot_plan(cost, solver, epsilon)
    m = len(target_points)
    plan = ot_plan(cost, solver, epsilon) if previous is None else previous
    target_rows = torch.cat([h.reshape(m, m, -1).transpose(1, 2).reshape(m, -1) for h in target_self], 1)
    for _ in range(fixed_point):
        recurrent_cost = torch.cdist(target_rows, _self_points(recurrent, plan)) ** 2
        new = ot_plan(cost + alpha_h * recurrent_cost, solver, epsilon)
        if torch.allclose(new, plan, atol=1e-9):
            break
        plan = new
    return new


def fuse(models, target, **options) -> torch.nn.Module:
    """The fused model: ``target`` (an untrained model of the wanted widths) with the barycentre's weights."""
    fusion = wasserstein_barycenter(models, target, **options)
    fused = deepcopy(target)
    fused.load_state_dict(fusion.state)
    return fused.eval()


def one_shot_fusion(models, solver: str = "emd", epsilon: float = 1e-3, weights=None, **_) -> torch.nn.Module:
    """One-shot OT fusion (Singh and Jaggi 2020): couple each model once, layer by layer, to model 0,
    then average the transported models."""
    fusion = wasserstein_barycenter(
        models, models[0], weights, solver=solver, epsilon=epsilon, alpha_h=0.0, update_target=False
    )
    fused = deepcopy(models[0])
    fused.load_state_dict(fusion.state)
    return fused.eval()


def vanilla_average(models, weights=None) -> torch.nn.Module:
    """Weighted average of the models' parameters with no alignment."""
    weights = np.full(len(models), 1 / len(models)) if weights is None else np.asarray(weights) / np.sum(weights)
    states = [m.state_dict() for m in models]
    averaged = {
        k: sum(w * s[k].double() for w, s in zip(weights, states, strict=True)).to(v.dtype)
        if v.is_floating_point()
        else v
        for k, v in states[0].items()
    }
    model = deepcopy(models[0])
    model.load_state_dict(averaged)
    return model.eval()


@torch.no_grad()
def ensemble_evaluate(models, x: torch.Tensor, y: torch.Tensor, weights=None, batch_size: int = 4096) -> dict:
    """Mean cross-entropy (nats) and accuracy of the output ensemble: the weighted mean of the models'
    predicted class probabilities."""
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


def permutations_from_fusion(fusion: Fusion) -> Permutations:
    """From the barycentre of two models (A first), the permutation of B's units onto A's: each
    coupling is rounded to a permutation (a LAP on it), and B's unit matched to target unit ``j`` goes
    where A's unit matched to ``j`` is."""
    perms = {}
    for name, plan_b in fusion.couplings[1].items():
        to_a, to_b = solve_lap(fusion.couplings[0][name]), solve_lap(plan_b)  # target unit j -> model unit
        perm = torch.empty_like(to_b)
        perm[to_a] = to_b
        perms[name] = perm
    return perms


def barycenter_permutations(
    model_a, model_b, solver="emd", epsilon=1e-3, max_iterations=20, alpha_h=1.0
) -> Permutations:
    """Fusion as alignment: the barycentre of A and B (lambda = 1/2, started from A), its couplings
    rounded to the permutation that puts B's units where A's matching units are."""
    fusion = wasserstein_barycenter(
        [model_a, model_b], model_a, solver=solver, epsilon=epsilon, max_iterations=max_iterations, alpha_h=alpha_h
    )
    return permutations_from_fusion(fusion)
