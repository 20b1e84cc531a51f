"""Stage fuse: Wasserstein-barycentre fusion of the first fuse.num_models seeds of one configuration,
at every target width of fuse.width_factors, against vanilla averaging, one-shot OT fusion and the
output ensemble, each before and after a short fine-tuning -> results/<config>/fusion.csv, the
barycentre cost per layer and iteration -> results/<config>/fusion_costs.csv, and the fused models
(before fine-tuning) -> fused/<config>/width<W>.safetensors.

At the input width the barycentre is also computed from every start (the models' mean and each model;
rows ``fused_start``, before fine-tuning), which shows how much the result depends on where it starts;
``fuse.ot.start: best`` keeps the one of lowest barycentre cost. Recurrent models are also fused at every
``fuse.alpha_h_grid`` weight of the hidden-to-hidden cost (rows ``fused_alpha_h``, 0 ignores it).
Models with BatchNorm get their running statistics recomputed on the training data once fused (their
averaged statistics describe none of the models); the inputs and the ensemble keep theirs.
"""

import logging

import pandas as pd
from common import configuration_stage, fused_dir, prepared_path, results_dir, run
from common_models import load_seed_models, stage_device
from tqdm import tqdm

from lmcot.data import Dataset
from lmcot.evaluation import batchnorm_layers, ensemble_evaluate, evaluate, reset_batchnorm
from lmcot.fusion import one_shot_fusion, vanilla_average, wasserstein_barycenter
from lmcot.io import write_csv
from lmcot.model_files import save_model
from lmcot.models import build_model
from lmcot.training import Recipe, fit

log = logging.getLogger("fuse")


def scores(model, data) -> dict:
    train, test = evaluate(model, data.x_train, data.y_train), evaluate(model, data.x_test, data.y_test)
    return {
        "train_loss": train["loss"],
        "train_accuracy": train["accuracy"],
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
    }


def cost_rows(fusion, width, label) -> list[dict]:
    """One row per layer and barycentre iteration of ``fusion``."""
    return [
        {"target_width": width, "start": label, "layer": layer, "iteration": i + 1, "cost": cost}
        for layer, costs in fusion.costs.items()
        for i, cost in enumerate(costs)
    ]


def main():
    params, config = configuration_stage("fuse", __doc__)
    device = stage_device(params)
    data = Dataset.load(prepared_path(config.dataset)).to(device)
    options = params["fuse"]
    seeds = params["train"]["seeds"][: options["num_models"]]
    weights = None if options["weights"] == "uniform" else options["weights"]
    ot = options["ot"]
    every = load_seed_models(params, config, "cpu")
    models = [every[seed] for seed in seeds]

    def build(width):
        return build_model(config.arch, data.input_shape, data.num_classes, width, config.depth)

    def loaded(fusion, width):
        model = build(width)
        model.load_state_dict(fusion.state)
        return model.eval()

    def start_label(start):
        return start if start == "mean" else f"seed {seeds[int(start.split()[-1])]}"

    # (kind, label, target width, model, extra columns): every candidate is scored; the main ones are
    # then fine-tuned and scored again
    candidates = [("input", f"seed {s}", config.width, m, {}) for s, m in zip(seeds, models, strict=True)]
    probes, costs = [], []  # scored before fine-tuning only
    by_start = {}
    for start in tqdm(["mean", *range(len(models))], desc=f"{config.name} starts"):
        fusion = wasserstein_barycenter(models, build(config.width), weights, **{**ot, "start": start})
        by_start[fusion.start] = fusion
        label = start_label(fusion.start)
        probes.append(("fused_start", f"start: {label}", config.width, loaded(fusion, config.width), {"start": label}))
        costs += cost_rows(fusion, config.width, label)
    factors = sorted({float(f) for f in options["width_factors"]} | {1.0})
    for factor in tqdm(factors, desc=f"{config.name} fusion"):
        width = max(1, round(factor * config.width))
        if width == config.width and ot["start"] == "best":  # the lowest-cost start, computed above
            fusion = min(by_start.values(), key=lambda f: f.cost)
        elif width == config.width and ot["start"] in ("mean", "first"):
            fusion = by_start["mean" if ot["start"] == "mean" else "model 0"]
        else:
            fusion = wasserstein_barycenter(models, build(width), weights, **ot)
            costs += cost_rows(fusion, width, start_label(fusion.start))
        fused = loaded(fusion, width)
        chosen = start_label(fusion.start)
        candidates.append(("fused", f"fused (width {width})", width, fused, {"start": chosen}))
        log.info("width %d: barycentre from start %s, cost %.6g", width, chosen, fusion.cost)
        sidecar = {**config.as_dict(), "width": width, "fused_seeds": seeds, "weights": options["weights"], "ot": ot}
        sidecar |= {"input_shape": list(data.input_shape), "num_classes": data.num_classes, "start": chosen}
        save_model(fused, fused_dir(config) / f"width{width}.safetensors", sidecar, {})
    if config.arch in ("rnn", "lstm"):
        for alpha_h in options["alpha_h_grid"]:
            fused = wasserstein_barycenter(models, build(config.width), weights, **{**ot, "alpha_h": alpha_h})
            extra = {"alpha_h": alpha_h, "start": start_label(fused.start)}
            probes.append(("fused_alpha_h", f"alpha_h = {alpha_h:g}", config.width, loaded(fused, config.width), extra))
    candidates.append(("vanilla", "vanilla average", config.width, vanilla_average(models, weights), {}))
    one_shot = one_shot_fusion(models, weights=weights, **ot)
    candidates.append(("one_shot", f"one-shot OT fusion (anchor seed {seeds[0]})", config.width, one_shot, {}))

    fine_tune = options["fine_tune"]
    recipe = Recipe(
        **{**params["train"]["recipe"], "epochs": fine_tune["epochs"], "warmup_epochs": 0, "warmup_steps": 0},
        lr=float(config.lr) * fine_tune["lr_factor"],
    )
    rows, tuned_inputs = [], []
    for kind, label, width, model, extra in tqdm(candidates + probes, desc=f"{config.name} scoring"):
        model = model.to(device)
        if kind != "input" and batchnorm_layers(model):
            reset_batchnorm(model, data.x_train)
        stages = [(False, model)]
        if fine_tune["epochs"] > 0 and kind not in ("fused_start", "fused_alpha_h"):
            (tuned,), _ = fit([model], data, recipe, seeds[:1], device, progress=False, desc=f"fine-tune {label}")
            stages.append((True, tuned.to(device)))
            if kind == "input":
                tuned_inputs.append(tuned.to(device))
        for tuned_flag, m in stages:
            row = {**config.as_dict(), "kind": kind, "model": label, "target_width": width, **extra}
            rows.append(row | {"fine_tuned": tuned_flag, **scores(m, data)})
        log.info("%s: test accuracy %.4f", label, rows[-len(stages)]["test_accuracy"])
    for tuned_flag, group in [(False, [m.to(device) for m in models]), (True, tuned_inputs)]:
        if group:
            train = ensemble_evaluate(group, data.x_train, data.y_train, weights)
            test = ensemble_evaluate(group, data.x_test, data.y_test, weights)
            row = {**config.as_dict(), "kind": "ensemble", "model": "output ensemble", "target_width": config.width}
            rows.append(
                row
                | {"fine_tuned": tuned_flag, "train_loss": train["loss"], "train_accuracy": train["accuracy"]}
                | {"test_loss": test["loss"], "test_accuracy": test["accuracy"]}
            )
    write_csv(results_dir(config) / "fusion.csv", pd.DataFrame(rows))
    write_csv(results_dir(config) / "fusion_costs.csv", pd.DataFrame([{**config.as_dict(), **r} for r in costs]))


if __name__ == "__main__":
    run("fuse", main)
