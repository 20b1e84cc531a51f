"""The fusion experiment of one configuration: Wasserstein-barycentre fusion of its models at every target
width, against vanilla averaging, one-shot OT fusion anchored at each model in turn and the output ensemble,
each scored before and after a short fine-tuning (:func:`fusion_experiment`). The input-width barycentre's row
names the anchors whose one-shot fusion it equals (column ``equals_one_shot``).

At the input width the barycentre is also computed from every start (the models' mean and each model; rows
``fused_start``, scored before fine-tuning only), which shows how much the result depends on where it starts;
``ot.start: best`` keeps the one of lowest barycentre cost. Recurrent models are also fused at every
``alpha_h_grid`` weight of the hidden-to-hidden cost (rows ``fused_alpha_h``, 0 ignores it). Models with
BatchNorm get their running statistics recomputed on the training data once fused (their averaged statistics
describe none of the models); the inputs and the ensemble keep theirs.

Models with attention heads (``vit``) are not fused by the barycentre, which couples units one at a time and may
split a head: they are aligned to the first model by weight matching (heads matched as units) and averaged (rows
``aligned_average``, at the input width), beside vanilla averaging and the ensemble.
"""

from __future__ import annotations

import logging
from copy import deepcopy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from lmcot.align.methods import align, permuted_copy
from lmcot.design import stream_seed
from lmcot.evaluation import batchnorm_layers, ensemble_evaluate, evaluate, reset_batchnorm
from lmcot.fusion import Fusion, one_shot_fusion, vanilla_average, wasserstein_barycenter
from lmcot.models import build_model
from lmcot.training import Recipe, fit

if TYPE_CHECKING:
    from lmcot.config import Configuration
    from lmcot.data import Dataset

log = logging.getLogger(__name__)

RECURRENT = ("rnn", "lstm")  # the architectures with a hidden-to-hidden matrix (the alpha_h ablation)
PROBES = ("fused_start", "fused_alpha_h")  # the kinds scored before fine-tuning only


@dataclass
class Candidate:
    """A model the experiment scores: its kind and label (the ``kind`` and ``model`` columns), its target
    width and the extra columns of its rows (``start``, ``alpha_h``)."""

    kind: str
    label: str
    width: int
    model: torch.nn.Module
    extra: dict = field(default_factory=dict)


@dataclass
class FusedModel:
    """A fused model as the barycentre gives it (before BatchNorm statistics are recomputed and before
    fine-tuning), and the keys of its sidecar besides the configuration's (width, fused seeds, weights, OT
    options, input shape, classes, start)."""

    model: torch.nn.Module
    sidecar: dict


@dataclass
class FusionResult:
    """The rows of fusion.csv and fusion_costs.csv (configuration columns first), and the fused model of
    every target width."""

    rows: list[dict]
    costs: list[dict]
    fused: dict[int, FusedModel]


def fine_tune_recipe(recipe: dict, lr: float, fine_tune: dict) -> Recipe:
    """The training recipe (``train.recipe``) shortened to ``fine_tune["epochs"]`` epochs without warm-up, at
    ``lr * fine_tune["lr_factor"]``."""
    return Recipe(
        **{**recipe, "epochs": fine_tune["epochs"], "warmup_epochs": 0, "warmup_steps": 0},
        lr=float(lr) * fine_tune["lr_factor"],
    )


def scores(model: torch.nn.Module, data: Dataset) -> dict:
    """Train and test loss and accuracy of ``model``."""
    train, test = evaluate(model, data.x_train, data.y_train), evaluate(model, data.x_test, data.y_test)
    return {
        "train_loss": train["loss"],
        "train_accuracy": train["accuracy"],
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
    }


COST_COLUMNS = (
    "group",
    "target_width",
    "start",
    "layer",
    "iteration",
    "cost",
)  # of fusion_costs.csv, after the config's


def cost_rows(fusion: Fusion, width: int, label: str) -> list[dict]:
    """One row per layer and barycentre iteration of ``fusion`` (:data:`COST_COLUMNS`)."""
    return [
        {"target_width": width, "start": label, "layer": layer, "iteration": i + 1, "cost": cost}
        for layer, costs in fusion.costs.items()
        for i, cost in enumerate(costs)
    ]


class _Fuser:
    """Builds targets of ``config``'s architecture and fuses ``models`` into them, keeping every barycentre's
    cost rows."""

    def __init__(self, config: Configuration, models, seeds, data: Dataset, options: dict):
        self.config, self.models, self.seeds, self.data, self.options = config, models, seeds, data, options
        self.weights = None if options["weights"] == "uniform" else options["weights"]
        self.ot = options["ot"]
        self.costs = []

    def build(self, width: int) -> torch.nn.Module:
        shape, classes, config = self.data.input_shape, self.data.num_classes, self.config
        return build_model(config.arch, shape, classes, width, config.depth, config.heads)

    def loaded(self, fusion: Fusion, width: int) -> torch.nn.Module:
        model = self.build(width)
        model.load_state_dict(fusion.state)
        return model.eval()

    def barycenter(self, width: int, **ot) -> Fusion:
        return wasserstein_barycenter(self.models, self.build(width), self.weights, **{**self.ot, **ot})

    def start_label(self, start: str) -> str:
        return start if start == "mean" else f"seed {self.seeds[int(start.split()[-1])]}"


def _every_start(fuser: _Fuser) -> tuple[list[Candidate], dict[str, Fusion]]:
    """The input-width barycentre from the models' mean and from each model: the probes and the fusions."""
    width, probes, by_start = fuser.config.width, [], {}
    for start in tqdm(["mean", *range(len(fuser.models))], desc=f"{fuser.config.name} starts"):
        fusion = fuser.barycenter(width, start=start)
        by_start[fusion.start] = fusion
        label = fuser.start_label(fusion.start)
        probes.append(Candidate("fused_start", f"start: {label}", width, fuser.loaded(fusion, width), {"start": label}))
        fuser.costs += cost_rows(fusion, width, label)
    return probes, by_start


def _every_width(fuser: _Fuser, by_start: dict[str, Fusion], factors) -> tuple[list[Candidate], dict[int, FusedModel]]:
    """The barycentre at every target width (``factors`` times the input width, and the input width itself,
    where the start ``ot.start`` asks for is taken from ``by_start``)."""
    config, ot, candidates, fused_models = fuser.config, fuser.ot, [], {}
    for factor in tqdm(sorted({float(f) for f in factors} | {1.0}), desc=f"{config.name} fusion"):
        width = max(1, round(factor * config.width))
        if width == config.width and ot["start"] == "best":  # the lowest-cost start, computed before
            fusion = min(by_start.values(), key=lambda f: f.cost)
        elif width == config.width and ot["start"] in ("mean", "first"):
            fusion = by_start["mean" if ot["start"] == "mean" else "model 0"]
        else:
            fusion = fuser.barycenter(width)
            fuser.costs += cost_rows(fusion, width, fuser.start_label(fusion.start))
        fused = fuser.loaded(fusion, width)
        chosen = fuser.start_label(fusion.start)
        candidates.append(Candidate("fused", f"fused (width {width})", width, fused, {"start": chosen}))
        log.info("width %d: barycentre from start %s, cost %.6g", width, chosen, fusion.cost)
        sidecar = {"width": width, "fused_seeds": fuser.seeds, "weights": fuser.options["weights"], "ot": ot}
        sidecar |= {"input_shape": list(fuser.data.input_shape), "num_classes": fuser.data.num_classes, "start": chosen}
        fused_models[width] = FusedModel(deepcopy(fused), sidecar)  # a copy: scoring resets BatchNorm statistics
    return candidates, fused_models


def _alpha_h_probes(fuser: _Fuser, grid) -> list[Candidate]:
    """A recurrent model's input-width barycentre at every weight of the hidden-to-hidden cost in ``grid``."""
    probes, width = [], fuser.config.width
    for alpha_h in grid:
        fused = fuser.barycenter(width, alpha_h=alpha_h)
        extra = {"alpha_h": alpha_h, "start": fuser.start_label(fused.start)}
        probes.append(Candidate("fused_alpha_h", f"alpha_h = {alpha_h:g}", width, fuser.loaded(fused, width), extra))
    return probes


def _baselines(fuser: _Fuser) -> list[Candidate]:
    """Vanilla averaging and one-shot OT fusion anchored at each model in turn (column ``anchor``)."""
    width, models = fuser.config.width, fuser.models
    candidates = [Candidate("vanilla", "vanilla average", width, vanilla_average(models, fuser.weights))]
    for anchor, seed in enumerate(fuser.seeds):
        one_shot = one_shot_fusion(models, weights=fuser.weights, anchor=anchor, **fuser.ot)
        label = f"one-shot OT fusion (anchor seed {seed})"
        candidates.append(Candidate("one_shot", label, width, one_shot, {"anchor": f"seed {seed}"}))
    return candidates


def _mark_one_shot_equals(fused: list[Candidate], baselines: list[Candidate], input_shape) -> None:
    """Record on the input-width barycentre (column ``equals_one_shot``) the anchors whose one-shot fusion is the
    same network up to the order of its units (the same outputs on 64 random inputs, to 1e-5), "" where none
    is: there one-shot fusion from that model is already a fixed point of the barycentre's iterations."""
    one_shots = [c for c in baselines if c.kind == "one_shot"]
    x = torch.randn(64, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for candidate in (c for c in fused if c.width == one_shots[0].width):
            out = candidate.model.eval()(x)
            same = [c.extra["anchor"] for c in one_shots if torch.allclose(c.model.eval()(x), out, atol=1e-5)]
            candidate.extra["equals_one_shot"] = ", ".join(same)


def _aligned_average(fuser: _Fuser) -> tuple[list[Candidate], dict[int, FusedModel]]:
    """For models with attention heads, which the barycentre would split: every model aligned to the first by
    weight matching (heads matched as units), then averaged; at the input width only."""
    width, models = fuser.config.width, fuser.models
    aligned = [models[0]] + [permuted_copy(m, align("weight_matching", models[0], m)) for m in models[1:]]
    fused = vanilla_average(aligned, fuser.weights)
    label = f"weight-matching average (anchor seed {fuser.seeds[0]})"
    log.info("%s: %s (the barycentre cannot keep attention heads whole)", fuser.config.name, label)
    sidecar = {"width": width, "fused_seeds": fuser.seeds, "weights": fuser.options["weights"], "ot": None}
    sidecar |= {"input_shape": list(fuser.data.input_shape), "num_classes": fuser.data.num_classes, "start": None}
    candidate = Candidate("aligned_average", label, width, fused)
    return [candidate], {width: FusedModel(deepcopy(fused), sidecar | {"fusion": "weight_matching_average"})}


def score_candidates(
    config: Configuration, candidates: list[Candidate], data: Dataset, recipe: Recipe, seed: int, device
) -> tuple[list[dict], list[torch.nn.Module]]:
    """Score every candidate and, unless it is a probe (or ``recipe`` has no epochs), fine-tune it by ``recipe``
    (mini-batches in the order of the fine-tuning stream of ``config`` and ``seed``,
    :func:`lmcot.design.stream_seed`) and score it again. Returns the rows and the fine-tuned inputs."""
    rows, tuned_inputs = [], []
    stream = stream_seed(config.name, seed, "fine-tune")
    for candidate in tqdm(candidates, desc=f"{config.name} scoring"):
        model = candidate.model.to(device)
        if candidate.kind != "input" and batchnorm_layers(model):
            reset_batchnorm(model, data.x_train)
        stages = [(False, model)]
        if recipe.epochs > 0 and candidate.kind not in PROBES:
            desc = f"fine-tune {candidate.label}"
            (tuned,), _ = fit([model], data, recipe, [seed], device, progress=False, desc=desc, streams=[stream])
            stages.append((True, tuned.to(device)))
            if candidate.kind == "input":
                tuned_inputs.append(tuned.to(device))
        keys = {**config.as_dict(), "kind": candidate.kind, "model": candidate.label, "target_width": candidate.width}
        rows += [keys | candidate.extra | {"fine_tuned": tuned_flag, **scores(m, data)} for tuned_flag, m in stages]
        log.info("%s: test accuracy %.4f", candidate.label, rows[-len(stages)]["test_accuracy"])
    return rows, tuned_inputs


def ensemble_rows(config: Configuration, groups, data: Dataset, weights) -> list[dict]:
    """The output ensemble's rows: one per ``(fine_tuned, models)`` of ``groups`` that has models."""
    rows = []
    for tuned_flag, group in groups:
        if group:
            train = ensemble_evaluate(group, data.x_train, data.y_train, weights)
            test = ensemble_evaluate(group, data.x_test, data.y_test, weights)
            row = {**config.as_dict(), "kind": "ensemble", "model": "output ensemble", "target_width": config.width}
            rows.append(
                row
                | {"fine_tuned": tuned_flag, "train_loss": train["loss"], "train_accuracy": train["accuracy"]}
                | {"test_loss": test["loss"], "test_accuracy": test["accuracy"]}
            )
    return rows


def fusion_experiment(
    config: Configuration,
    models: list,
    seeds: list[int],
    data: Dataset,
    options: dict,
    recipe: Recipe,
    device,
    group: int = 0,
) -> FusionResult:
    """Fuse ``models`` (of ``config``, trained from ``seeds``, on the CPU) by the ``fuse`` params ``options``
    (``ot``, ``weights``, ``width_factors``, ``alpha_h_grid``), score every fused model and baseline on ``data``
    before and after fine-tuning by ``recipe`` (see :func:`fine_tune_recipe`), and the output ensemble of the
    inputs and of the fine-tuned inputs. Every row and cost row is tagged with ``group``, the index of these
    models' group among the disjoint groups of the configuration (:func:`lmcot.design.seed_groups`)."""
    fuser = _Fuser(config, models, seeds, data, options)
    inputs = [Candidate("input", f"seed {s}", config.width, m) for s, m in zip(seeds, models, strict=True)]
    if models[0].permutation_spec().groups:  # attention heads: no barycentre (it may split a head)
        probes = []
        fused, fused_models = _aligned_average(fuser)
        vanilla = Candidate("vanilla", "vanilla average", config.width, vanilla_average(models, fuser.weights))
        candidates = inputs + fused + [vanilla]
    else:
        probes, by_start = _every_start(fuser)
        fused, fused_models = _every_width(fuser, by_start, options["width_factors"])
        if config.arch in RECURRENT:
            probes += _alpha_h_probes(fuser, options["alpha_h_grid"])
        baselines = _baselines(fuser)
        _mark_one_shot_equals(fused, baselines, data.input_shape)
        candidates = inputs + fused + baselines
    rows, tuned_inputs = score_candidates(config, candidates + probes, data, recipe, seeds[0], device)
    groups = [(False, [m.to(device) for m in models]), (True, tuned_inputs)]
    rows += ensemble_rows(config, groups, data, fuser.weights)
    rows = [{**config.as_dict(), "group": group, **row} for row in rows]
    costs = [{**config.as_dict(), "group": group, **row} for row in fuser.costs]
    return FusionResult(rows, costs, fused_models)
