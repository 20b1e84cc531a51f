"""Model fusion by Wasserstein barycentres (Akash, Li and Garcia Trillos 2022), and its baselines.

N trained models of one architecture (weights ``lambda_i``) are fused into one target model, whose
widths may differ from theirs, layer by layer from the input to the output, driven by the
architecture's :class:`~lmcot.permutation.PermutationSpec`: each permutation name is one layer of
units. For each model ``i`` and layer, a coupling ``pi_i`` (``m`` target units x ``n`` model units,
uniform marginals, entries summing to 1) transports the model's units onto the target's; it is the
soft counterpart of a permutation and carries every tensor the spec names into the target's
coordinates (:func:`transport_tensor`). A unit's own parameters (axis 0: its incoming weights, bias,
BatchNorm scale and statistics) become the mean over the model units coupled to it, ``m pi_i`` (rows
sum to 1). An input axis (the next layer's weights) is carried as the paper's code (and OTFusion's)
does, by the coupling normalised by the target's marginal: a target input receives the *average* of
the weights from the model units coupled to it (``input_transport="average"``). The alternative
``"sum"`` gives it their *sum* (``n pi_i``, columns sum to 1): a model unit split over two target
units passes half to each, which keeps a widened network's function exactly; the two agree whenever
the widths are equal.

For a layer, a unit is a point: its incoming weight matrices with their input axes already carried into
the target's coordinates. Biases, BatchNorm scales and shifts follow the coupling but do not decide it, as
in the paper's code. The cost between target unit ``j`` and model unit ``k`` is the paper's
``sum_{j',k'} ||W[j,j'] - W_i[k,k']||^2 pi_prev[j',k']`` with ``pi_prev``'s entries summing to 1: per
incoming matrix, the squared distance of the carried rows divided by the ``m'`` inputs they carry (the
target's units of the previous layer, or the input features where the previous coupling is the identity;
a convolution's kernel is summed), a *mean* over the inputs. For a permutation ``pi_prev`` the two are
equal; otherwise they differ by a term of ``k`` alone, which no coupling between uniform marginals can
change.

The barycentre alternates couplings and the weighted mean ``W = sum_i lambda_i m pi_i W_i``. Its cost
``sum_i lambda_i <pi_i, cost_i(W)>`` is recorded after each update. The first iteration couples every model
to the start. After it, ``couple_to="others"`` (the default) couples each model in turn (the costliest
first) to the weighted mean of the *other* models, aligned by their current couplings: with exact OT and
equal widths this is coordinate descent on the barycentre cost (``sum_{a<b} lambda_a lambda_b
||W_a - W_b||^2`` over the aligned models), so the cost never rises and each model's coupling is optimal
against the rest at the end. ``couple_to="all"`` is the paper's loop: every model is coupled to the
barycentre, its own units included. That pull towards a model's own units makes a start at one model a
fixed point at once (one-shot OT fusion anchored there), and the unaligned mean nearly one.

**Where it starts.** ``start="mean"`` favours no model: the target's units start as the weighted mean of
the models' units (inputs already carried, no alignment), the same set of points for any order of the
models, and since the sweep's order follows the costs, not the list, so is the result. ``start="best"``
restarts from the mean and from every model and keeps the fusion of lowest barycentre cost (summed over
layers). A target of another width starts from the same-width barycentre's units, a random subset
(narrower) or with random repeats (wider). With two models and exact OT, every start ends where one-shot
OT fusion from either model does: the optimal matching of two equal sets is the same from either side.

A recurrent matrix ``H`` (both axes are the layer's own units) adds the paper's Gromov-Wasserstein
term ``alpha_h * sum_{j',k'} (H[j,j'] - H_i[k,k'])^2 pi_i[j',k']`` (summed over an LSTM's gates),
with ``pi_i``'s entries summing to 1 as in their code: for a permutation coupling it is ``alpha_h``
times the *mean* squared difference of the two rows. The input term being a mean too, ``alpha_h = 1``
weighs a recurrent matrix like one more incoming matrix, at any width and depth. The term depends on the
coupling being solved, so each coupling is found by a fixed-point loop; ``H`` is updated like the
weights. ``alpha_h = 0`` ignores it (the ablation).
A matrix whose input axis belongs to a layer not solved yet (a residual block's last convolution
writing to the skip stream) takes no part in the cost: the stream's coupling, found from the first
layer that writes to it, is reused for it.

Baselines: :func:`vanilla_average` (no alignment), :func:`one_shot_fusion` (Singh and Jaggi 2020:
couple every model once to a fixed anchor, then average) and the output ensemble
(:func:`lmcot.evaluation.ensemble_evaluate`: average of the models' predicted probabilities).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass, field

import numpy as np
import torch

from lmcot.choices import COUPLE_TO, INPUT_TRANSPORTS, STARTS
from lmcot.errors import UnsupportedModelError
from lmcot.ot import SOLVERS, solve_lap, uniform_plan
from lmcot.permutation import Permutations, PermutationSpec, unit_parameters

log = logging.getLogger(__name__)

Couplings = dict[str, torch.Tensor]


@dataclass
class Fusion:
    """The fused state dict; per input model the coupling of every layer, ``(m, n_i)`` float64, and the cost
    matrix ``(m, n_i)`` it was last solved for (``transport_costs``); per layer the barycentre iterations and
    the barycentre cost ``sum_i lambda_i <pi_i, cost_i>`` at each one; the start used, and with
    ``start="best"`` the total cost of every start tried."""

    state: dict[str, torch.Tensor]
    couplings: list[dict[str, torch.Tensor]]
    iterations: dict[str, int]
    costs: dict[str, list[float]] = field(default_factory=dict)
    start: str = "mean"
    start_costs: dict[str, float] = field(default_factory=dict)
    transport_costs: list[dict[str, torch.Tensor]] = field(default_factory=list)

    @property
    def cost(self) -> float:
        """The barycentre cost at the last iteration, summed over layers."""
        return float(sum(c[-1] for c in self.costs.values()))


def averaging(plan: torch.Tensor) -> torch.Tensor:
    """``(m, n)`` map of a unit's own parameters: each target unit's is the mean of its coupled units'."""
    return plan / plan.sum(1, keepdim=True).clamp_min(1e-300)


def summing(plan: torch.Tensor) -> torch.Tensor:
    """``(m, n)`` map of an input axis that keeps a layer's total output: each model unit's contribution
    is shared among its target units."""
    return plan / plan.sum(0, keepdim=True).clamp_min(1e-300)


INPUT_MAPS = {"average": averaging, "sum": summing}


def _input_map(input_transport: str):
    if input_transport not in INPUT_MAPS:
        raise ValueError(f"unknown input_transport {input_transport!r}; valid: {', '.join(INPUT_TRANSPORTS)}")
    return INPUT_MAPS[input_transport]


def transport_tensor(
    spec: PermutationSpec,
    couplings: Couplings,
    param: str,
    tensor: torch.Tensor,
    skip=(),
    input_transport: str = "average",
) -> torch.Tensor:
    """Carry every axis of ``tensor`` that a permutation with a coupling in ``couplings`` acts on
    (except the axes in ``skip``) into the target's coordinates: an axis of ``n`` units becomes ``m``,
    by :func:`averaging` on axis 0 (the units' own parameters) and on the others (inputs) by
    ``input_transport`` (:func:`averaging` or :func:`summing`). A permutation's coupling (a permutation
    matrix / n) gives :func:`~lmcot.permutation.permute_tensor` either way. A block axis (``n*b`` entries)
    becomes ``m*b``, each unit's block carried whole."""
    input_map = _input_map(input_transport)
    for axis, name in spec.acting_on(param).items():
        if axis in skip or name not in couplings:
            continue
        plan = couplings[name].to(tensor.dtype)
        moved = tensor.movedim(axis, 0)  # (n * b, ...): a block axis carries each unit's b entries together
        units = moved.reshape(moved.shape[0] // spec.block(param, axis), -1)
        flat = (averaging(plan) if axis == 0 else input_map(plan)) @ units
        tensor = flat.reshape(-1, *moved.shape[1:]).movedim(0, axis)
    return tensor


def _units(spec, name, state, couplings, parameters, solved, input_transport):
    """Model units of layer ``name`` as points ``(n, features)``: each incoming weight matrix with its input
    axes carried into the target's coordinates, divided by the square root of the number of inputs it carries
    (:func:`carried_inputs`), so that a squared distance is the paper's mean over the inputs; and the layer's
    recurrent matrices ``(n, n, ...)`` (input axes other than ``name`` carried)."""
    inputs, recurrent = unit_parameters(spec, name, solved)

    def carried(param):
        return transport_tensor(spec, couplings, param, state[param].double(), (0,), input_transport)

    # biases and buffers (BatchNorm statistics) follow the units, they do not steer them
    matrices = [p for p in inputs if p in parameters and state[p].dim() > 1]
    points = [
        carried(p).reshape(len(state[p]), -1) / carried_inputs(spec, p, couplings, state[p].shape) ** 0.5
        for p in matrices
    ]
    return torch.cat(points, 1) if points else None, [carried(p) for p in recurrent if p in parameters]


def carried_inputs(spec: PermutationSpec, param: str, couplings: Couplings, shape) -> int:
    """How many inputs ``m'`` each row of the weight matrix ``param`` reads in the target's coordinates: the
    product over its coupled input axes of the target's units there (a block axis counts each unit once), or,
    where no input axis is coupled (the first layer: the identity coupling), the size of axis 1 of its
    ``shape`` (features or input channels; a convolution's kernel axes are summed, not averaged)."""
    coupled = [name for axis, name in spec.acting_on(param).items() if axis != 0 and name in couplings]
    if coupled:
        return int(np.prod([len(couplings[name]) for name in coupled]))
    return int(shape[1])


@dataclass
class _Options:
    """How one layer's barycentre is solved (see :func:`wasserstein_barycenter`)."""

    solver: str
    epsilon: float
    max_iterations: int
    alpha_h: float
    tolerance: float
    input_transport: str
    couple_to: str = "others"


def wasserstein_barycenter(
    models: Sequence[torch.nn.Module],
    target: torch.nn.Module,
    weights: Sequence[float] | None = None,
    solver: str = "emd",
    epsilon: float = 1e-3,
    max_iterations: int = 20,
    alpha_h: float = 1.0,
    start: str | int = "best",
    input_transport: str = "average",
    couple_to: str = "others",
    tolerance: float = 1e-6,
    update_target: bool = True,
    seed: int = 0,
) -> Fusion:
    """Fuse ``models`` into the architecture of ``target`` (an untrained model whose widths may differ).

    Layer by layer: the target's units start at ``start`` (``"mean"``: the models' weighted mean;
    an index or ``"first"`` (0): that model's units; ``"best"``: each of those, keeping the lowest
    barycentre cost; a target of another width takes a random subset or random repeats, chosen by
    ``seed``); then couplings and the weighted mean ``W = sum_i lambda_i m pi_i W_i`` alternate for at
    most ``max_iterations`` until the relative change of ``W`` is below ``tolerance``, each model coupled
    to the mean of the others (``couple_to="others"``) or to ``W`` itself (``"all"``, the paper's loop).
    ``update_target=False`` keeps the target at model ``start`` (an anchor, as one-shot OT fusion does).
    Returns the fused state (load it into ``target``), the couplings and the cost per iteration.
    """
    with torch.no_grad():
        weights = _normalised_weights(weights, len(models))
        if solver not in SOLVERS:
            raise ValueError(f"unknown OT solver {solver!r}; valid: {', '.join(SOLVERS)}")
        _input_map(input_transport)
        if couple_to not in COUPLE_TO:
            raise ValueError(f"unknown couple_to {couple_to!r}; valid: {', '.join(COUPLE_TO)}")
        start = 0 if start == "first" else start
        if start == "best":
            if not update_target:
                raise ValueError("start='best' needs update_target=True")
            options = dict(solver=solver, epsilon=epsilon, max_iterations=max_iterations, alpha_h=alpha_h)
            options |= dict(input_transport=input_transport, couple_to=couple_to, tolerance=tolerance, seed=seed)
            return _best_start(models, target, weights, **options)
        if not (start == "mean" or (isinstance(start, int | np.integer) and 0 <= start < len(models))):
            raise ValueError(
                f"unknown start {start!r}; valid: {', '.join(STARTS)} or a model index below {len(models)}"
            )
        if not update_target and start == "mean":
            raise ValueError("update_target=False needs a model to anchor on (start=<model index>)")
        options = _Options(solver, epsilon, max_iterations, alpha_h, tolerance, input_transport, couple_to)
        spec = target.permutation_spec()
        if spec.sections:
            raise UnsupportedModelError(
                f"the Wasserstein barycentre does not fuse tensors that hold several permutations' units side by side "
                f"yet ({', '.join(spec.sections)}: a concatenation or a packed attention projection); fuse with "
                "weight matching and averaging instead"
            )
        if spec.groups:
            raise UnsupportedModelError(
                f"the Wasserstein barycentre couples units one at a time, so it may split an attention head "
                f"({', '.join(spec.head_groups())}); align heads with weight_matching or activation_matching instead"
            )
        states = [{k: v.detach().cpu() for k, v in model.state_dict().items()} for model in models]
        parameters = {name for name, _ in models[0].named_parameters()}
        couplings, iterations, costs, matrices = _solve_layers(
            spec, spec.sizes(target.state_dict()), states, parameters, weights, start, options, update_target, seed
        )
        fused = _carried_mean(spec, couplings, states, weights, input_transport)
        start_name = "mean" if start == "mean" else f"model {start}"
        return Fusion(fused, couplings, iterations, costs, start_name, transport_costs=matrices)


def _best_start(models, target, weights, **options) -> Fusion:
    """The barycentre from the models' mean and from each model, keeping the lowest total cost."""
    tried = [wasserstein_barycenter(models, target, weights, start=s, **options) for s in ["mean", *range(len(models))]]
    best = min(tried, key=lambda f: f.cost)
    best.start_costs = {f.start: f.cost for f in tried}
    return best


def _solve_layers(spec, sizes, states, parameters, weights, start, options: _Options, update_target, seed):
    """Each layer's barycentre, from the input to the output: per model its couplings and their cost
    matrices, and per layer the iteration count and the cost at each iteration."""
    input_transport = options.input_transport
    couplings: list[Couplings] = [{} for _ in states]
    matrices: list[Couplings] = [{} for _ in states]
    iterations, costs = {}, {}
    generator = np.random.default_rng(seed)
    for done, name in enumerate(spec.names):
        units = [
            _units(spec, name, s, couplings[i], parameters, spec.names[:done], input_transport)
            for i, s in enumerate(states)
        ]
        points, recurrent = [u[0] for u in units], [u[1] for u in units]
        if points[0] is None:
            raise ValueError(f"layer {name!r} has no incoming weights whose inputs are solved before it")
        if not update_target and sizes[name] != len(points[0]):
            raise ValueError(
                f"one-shot fusion needs the target as wide as model {start} at {name!r} ({sizes[name]} != "
                f"{len(points[0])})"
            )
        target_points, target_self = _start_units(points, recurrent, weights, start, sizes[name], options, generator)
        plans, _, _, costs[name], solved_for = _layer_barycenter(
            points, recurrent, weights, target_points, target_self, options, update_target
        )
        iterations[name] = len(costs[name])
        for i, (plan, matrix) in enumerate(zip(plans, solved_for, strict=True)):
            couplings[i][name], matrices[i][name] = plan, matrix
        log.debug("layer %s: %d barycentre iterations, cost %.6g", name, iterations[name], costs[name][-1])
    return couplings, iterations, costs, matrices


def _normalised_weights(weights, n_models: int) -> np.ndarray:
    """The models' weights ``(n_models,)`` summing to 1 (uniform when ``weights`` is None)."""
    if n_models < 1:
        raise ValueError("wasserstein_barycenter needs at least one model")
    weights = np.full(n_models, 1 / n_models) if weights is None else np.asarray(weights, dtype=float)
    if len(weights) != n_models or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"weights must be {n_models} non-negative numbers, not all 0; got {weights.tolist()}")
    return weights / weights.sum()


def _start_units(points, recurrent, weights, start, m: int, options: _Options, generator):
    """Where one layer's ``m`` target units start: the models' weighted mean (for another width, the
    same-width barycentre's units) or model ``start``'s units, then a random subset or repeats of them
    when ``m`` differs from the models' width. Returns the points and the recurrent matrices."""
    n = len(points[0])
    if start == "mean":
        target_points = sum(w * p for w, p in zip(weights, points, strict=True))
        target_self = [sum(w * h[r] for w, h in zip(weights, recurrent, strict=True)) for r in range(len(recurrent[0]))]
        if m != n:  # the same-width barycentre first, then a subset or repeats of its units
            _, target_points, target_self, _, _ = _layer_barycenter(
                points, recurrent, weights, target_points, target_self, options, True
            )
    else:
        target_points, target_self = points[start], recurrent[start]
    if m != n:
        chosen = _initial_units(n, m, generator)
        target_points, target_self = target_points[chosen], [h[chosen][:, chosen] for h in target_self]
    return target_points, target_self


def _carried_mean(spec, couplings, states, weights, input_transport) -> dict[str, torch.Tensor]:
    """The fused state: each float tensor of every model carried into the target's coordinates by that
    model's couplings, then the weighted mean; integer buffers (BatchNorm's step counter) are model 0's."""
    fused = {}
    for key, tensor in states[0].items():
        if tensor.is_floating_point():
            carried = [
                transport_tensor(spec, c, key, s[key].double(), (), input_transport)
                for c, s in zip(couplings, states, strict=True)
            ]
            fused[key] = sum(w * t for w, t in zip(weights, carried, strict=True)).to(tensor.dtype)
        else:
            fused[key] = tensor.clone()
    return fused


def _layer_barycenter(points, recurrent, weights, target_points, target_self, options: _Options, update_target):
    """One layer's barycentre from the given start: returns the couplings, the target's points and
    recurrent matrices, the barycentre cost after each iteration, and the cost matrix each coupling was
    last solved for. The first iteration couples every model to the start (``update_target=False``: only
    that, the target staying the anchor); later ones couple to the others' mean or to the barycentre
    (``options.couple_to``)."""
    plans, matrices, costs = [None] * len(points), [None] * len(points), []
    own_costs = np.zeros(len(points))  # each model's cost against the barycentre: the costliest moves first
    for iteration in range(options.max_iterations):
        leave_one_out = iteration > 0 and options.couple_to == "others" and len(points) > 1
        order = np.argsort(-own_costs, kind="stable") if leave_one_out else range(len(points))
        for i in order:
            # against the others' mean, unless they weigh nothing
            others = leave_one_out and weights[i] < 1
            against = _mean(points, recurrent, weights, plans, options, without=i) if others else None
            against_points, against_self = against or (target_points, target_self)
            plans[i], own_costs[i], matrices[i] = _couple(
                against_points, against_self, points[i], recurrent[i], plans[i], options
            )
        if not update_target:
            costs.append(float(np.dot(weights, own_costs)))
            break
        new_points, target_self = _mean(points, recurrent, weights, plans, options)
        own_costs = _costs(new_points, target_self, points, recurrent, plans, options.alpha_h)
        costs.append(float(np.dot(weights, own_costs)))
        change = (new_points - target_points).norm() / target_points.norm().clamp_min(1e-12)
        target_points = new_points
        # the first update may leave a start unmoved that coupling to the others' mean would still move
        if change < options.tolerance and (iteration > 0 or options.couple_to == "all" or len(points) == 1):
            break
    return plans, target_points, target_self, costs, matrices


def _mean(points, recurrent, weights, plans, options: _Options, without: int | None = None):
    """The weighted mean of the models' units ``(m, features)`` and recurrent matrices ``(m, m, ...)``, each
    model carried by its coupling, leaving model ``without`` out (the rest's weights renormalised)."""
    kept = [i for i in range(len(points)) if i != without]
    total = sum(weights[i] for i in kept)
    mean_points = sum(weights[i] / total * averaging(plans[i]) @ points[i] for i in kept)
    mean_self = [
        sum(weights[i] / total * _transport_square(plans[i], recurrent[i][r], options.input_transport) for i in kept)
        for r in range(len(recurrent[kept[0]]))
    ]
    return mean_points, mean_self


def _costs(target_points, target_self, points, recurrent, plans, alpha_h: float) -> np.ndarray:
    """Each model's coupling cost ``<pi_i, C_i>`` against the target ``(n_models,)``, the recurrent term
    included."""
    out = []
    for plan, model_points, model_self in zip(plans, points, recurrent, strict=True):
        cost = torch.cdist(target_points, model_points) ** 2
        if model_self and alpha_h:
            cost = cost + alpha_h * recurrent_cost(target_self, model_self, plan)
        out.append(float((plan * cost).sum()))
    return np.array(out)


def _initial_units(n: int, m: int, generator) -> np.ndarray:
    """``m`` of ``n`` units: a random subset when ``m < n``; every unit and random repeats when ``m > n``."""
    if m < n:
        return np.sort(generator.choice(n, m, replace=False))
    return np.concatenate([np.arange(n), generator.choice(n, m - n, replace=True)])


def _transport_square(plan: torch.Tensor, h: torch.Tensor, input_transport: str = "average") -> torch.Tensor:
    """A recurrent matrix ``h`` ``(n, n, ...)`` carried to ``(m, m, ...)``: rows averaged, columns by
    ``input_transport`` (averaged on both axes, it is the Gromov-Wasserstein barycentre's update)."""
    flat = h.reshape(h.shape[0], h.shape[1], -1).permute(2, 0, 1)
    m = plan.shape[0]
    return (averaging(plan) @ flat @ _input_map(input_transport)(plan).T).permute(1, 2, 0).reshape(m, m, *h.shape[2:])


def recurrent_cost(target_self, recurrent, plan: torch.Tensor) -> torch.Tensor:
    """``(m, n)`` Gromov-Wasserstein cost ``sum_{j',k'} (H[j,j'] - H_i[k,k'])^2 plan[j',k']`` between the
    target's recurrent matrices ``H`` ``(m, m, ...)`` and a model's ``H_i`` ``(n, n, ...)``, summed over the
    matrices (an LSTM's gates) and trailing axes; ``plan`` ``(m, n)`` has entries summing to 1."""
    m, n = plan.shape
    row_mass, column_mass = plan.sum(1), plan.sum(0)
    total = torch.zeros(m, n, dtype=plan.dtype)
    for h_target, h in zip(target_self, recurrent, strict=True):
        t = h_target.reshape(m, m, -1).permute(2, 0, 1).to(plan.dtype)  # (extra, m, m)
        s = h.reshape(n, n, -1).permute(2, 0, 1).to(plan.dtype)
        total += ((t * t) @ row_mass).sum(0)[:, None] + ((s * s) @ column_mass).sum(0)[None, :]
        total -= 2 * (t @ plan @ s.transpose(1, 2)).sum(0)
    return total


def _couple(target_points, target_self, points, recurrent, previous, options: _Options, fixed_point: int = 20):
    """Coupling of the target's units and one model's, its cost ``<pi, cost>`` and the cost matrix ``(m, n)``
    it was solved for: OT on the input cost, plus ``alpha_h`` times the recurrent cost, which depends on the
    coupling: a fixed-point loop started from the last coupling (or from the input cost alone) re-solves OT
    until the coupling stops changing."""
    cost = torch.cdist(target_points, points) ** 2
    if not recurrent or options.alpha_h == 0:
        plan = uniform_plan(cost, options.solver, options.epsilon)
        return plan, float((plan * cost).sum()), cost
    plan = uniform_plan(cost, options.solver, options.epsilon) if previous is None else previous
    solved_for = None  # stays None when the coupling given is kept unsolved (fixed_point=0)
    for _ in range(fixed_point):
        solved_for = cost + options.alpha_h * recurrent_cost(target_self, recurrent, plan)
        new = uniform_plan(solved_for, options.solver, options.epsilon)
        converged = torch.allclose(new, plan, atol=1e-9)
        plan = new
        if converged:
            break
    total = cost + options.alpha_h * recurrent_cost(target_self, recurrent, plan)
    return plan, float((plan * total).sum()), total if solved_for is None else solved_for


def fuse(models, target, **options) -> torch.nn.Module:
    """The fused model: ``target`` (an untrained model of the wanted widths) with the barycentre's weights."""
    fusion = wasserstein_barycenter(models, target, **options)
    fused = deepcopy(target)
    fused.load_state_dict(fusion.state)
    return fused.eval()


def one_shot_fusion(
    models, solver: str = "emd", epsilon: float = 1e-3, weights=None, anchor: int = 0, **_
) -> torch.nn.Module:
    """One-shot OT fusion (Singh and Jaggi 2020): couple each model once, layer by layer, to model
    ``anchor``, then average the transported models."""
    fusion = wasserstein_barycenter(
        models, models[anchor], weights, solver=solver, epsilon=epsilon, alpha_h=0.0, start=anchor, update_target=False
    )
    fused = deepcopy(models[anchor])
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


def permutations_from_fusion(fusion: Fusion) -> Permutations:
    """From the barycentre of two models (A first), the permutation of B's units onto A's: each coupling
    is rounded to the assignment of least total cost under the cost matrix it was solved for, and B's unit
    matched to target unit ``j`` goes where A's unit matched to ``j`` is.

    For Sinkhorn's plan ``log P = log u + log v - C / epsilon`` that assignment is the one of largest
    log-plan (the potentials add the same constant to every permutation), where rounding by the plan's
    mass would follow its blur; for an exact plan that is a permutation, it is that permutation (up to ties).
    """
    perms = {}
    for name in fusion.couplings[1]:
        # target unit j -> model unit
        to_a, to_b = (solve_lap(-costs[name]) for costs in fusion.transport_costs[:2])
        perm = torch.empty_like(to_b)
        perm[to_a] = to_b
        perms[name] = perm
    return perms


def barycenter_permutations(model_a, model_b, **options) -> Permutations:
    """Fusion as alignment: the barycentre of A and B (lambda = 1/2; ``options`` as
    :func:`wasserstein_barycenter`'s), its couplings rounded to the permutation that puts B's units where
    A's matching units are."""
    return permutations_from_fusion(wasserstein_barycenter([model_a, model_b], model_a, **options))
