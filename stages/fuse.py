"""Stage fuse: Wasserstein-barycentre fusion of the first fuse.num_models seeds of one configuration,
at every target width of fuse.width_factors, against vanilla averaging, one-shot OT fusion and the
output ensemble, each before and after a short fine-tuning -> results/<config>/fusion.csv, and the
fused models (before fine-tuning) -> fused/<config>/width<W>.safetensors.

Recurrent models are also fused without the hidden-to-hidden cost (alpha_h = 0), the ablation.
Models with BatchNorm get their running statistics recomputed on the training data once fused (their
averaged statistics describe none of the models); the inputs and the ensemble keep theirs.
"""

import logging

import pandas as pd
from common import configuration_stage, fused_dir, load_seed_models, prepared_path, results_dir, stage_device
from tqdm import tqdm

from lmcot.barrier import batchnorm_layers, reset_batchnorm
from lmcot.data import Dataset
from lmcot.fusion import ensemble_evaluate, fuse, one_shot_fusion, vanilla_average
from lmcot.io import save_model, write_csv
from lmcot.models import build_model
from lmcot.training import Recipe, evaluate, fit

log = logging.getLogger("fuse")


def scores(model, data) -> dict:
    train, test = evaluate(model, data.x_train, data.y_train), evaluate(model, data.x_test, data.y_test)
    return {
        "train_loss": train["loss"],
        "train_accuracy": train["accuracy"],
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
    }


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

    # (kind, label, target width, model): every candidate is scored, then fine-tuned and scored again
    candidates = [("input", f"seed {seed}", config.width, model) for seed, model in zip(seeds, models, strict=True)]
    factors = sorted({float(f) for f in options["width_factors"]} | {1.0})
    for factor in tqdm(factors, desc=f"{config.name} fusion"):
        width = max(1, round(factor * config.width))
        fused = fuse(models, build(width), weights=weights, **ot)
        candidates.append(("fused", f"fused (width {width})", width, fused))
        sidecar = {**config.as_dict(), "width": width, "fused_seeds": seeds, "weights": options["weights"], "ot": ot}
        sidecar |= {"input_shape": list(data.input_shape), "num_classes": data.num_classes}
        save_model(fused, fused_dir(config) / f"width{width}.safetensors", sidecar, {})
    if config.arch in ("rnn", "lstm"):
        no_hidden = fuse(models, build(config.width), weights=weights, **{**ot, "alpha_h": 0.0})
        candidates.append(
            ("fused_no_hidden", f"fused without hidden term (width {config.width})", config.width, no_hidden)
        )
    candidates.append(("vanilla", "vanilla average", config.width, vanilla_average(models, weights)))
    candidates.append(("one_shot", "one-shot OT fusion", config.width, one_shot_fusion(models, weights=weights, **ot)))

    fine_tune = options["fine_tune"]
    recipe = Recipe(
        **{**params["train"]["recipe"], "epochs": fine_tune["epochs"], "warmup_epochs": 0, "warmup_steps": 0},
        lr=float(config.lr) * fine_tune["lr_factor"],
    )
    rows, tuned_inputs = [], []
    for kind, label, width, model in tqdm(candidates, desc=f"{config.name} scoring"):
        model = model.to(device)
        if kind != "input" and batchnorm_layers(model):
            reset_batchnorm(model, data.x_train)
        stages = [(False, model)]
        if fine_tune["epochs"] > 0:
            (tuned,), _ = fit([model], data, recipe, seeds[:1], device, progress=False, desc=f"fine-tune {label}")
            stages.append((True, tuned.to(device)))
            if kind == "input":
                tuned_inputs.append(tuned.to(device))
        for tuned_flag, m in stages:
            row = {**config.as_dict(), "kind": kind, "model": label, "target_width": width}
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


if __name__ == "__main__":
    main()
