"""Stage train: every seed of one configuration -> models/<config>/seed<N>.{safetensors,json}.

Also writes results/<config>/training.csv (per-epoch train/test loss and accuracy of every seed).
Saves checkpoints/<config>/train.pt every train.checkpoint_every epochs; run again after a crash, it
resumes from there and ends with the weights an uninterrupted run gives.
"""

import hashlib
import json
import logging

import pandas as pd
from common import checkpoint_path, configuration_stage, model_path, prepared_path, results_dir, run
from common_models import stage_device

from lmcot.data import Dataset
from lmcot.io import sha256_of, write_csv
from lmcot.model_files import save_model
from lmcot.training import Checkpoint, Recipe, train_models

log = logging.getLogger("train")


def main():
    params, config = configuration_stage("train", __doc__)
    recipe = Recipe(lr=float(config.lr), **params["train"]["recipe"])
    seeds = params["train"]["seeds"]
    device = stage_device(params)
    data = Dataset.load(prepared_path(config.dataset)).to(device)
    checkpoint = None
    if params["train"]["checkpoint_every"]:
        # what the weights depend on; a checkpoint of anything else is not resumed
        run = {**config.as_dict(), "recipe": params["train"]["recipe"], "seeds": seeds, "device": str(device)}
        run["data"] = sha256_of(prepared_path(config.dataset))
        key = hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()
        checkpoint = Checkpoint(checkpoint_path(config), key, params["train"]["checkpoint_every"])
    log.info("%s: training seeds %s together with %s", config.name, seeds, recipe)
    models, histories = train_models(
        data, config.arch, config.width, config.depth, recipe, seeds, device, checkpoint=checkpoint, desc=config.name
    )
    rows = []
    for seed, model, history in zip(seeds, models, histories, strict=True):
        sidecar_config = {
            **config.as_dict(),
            "seed": seed,
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "recipe": params["train"]["recipe"],
        }
        final = {k: v for k, v in history[-1].items() if k != "epoch"}
        save_model(model, model_path(config, seed), sidecar_config, final)
        rows += [{"seed": seed, **row} for row in history]
    write_csv(results_dir(config) / "training.csv", pd.DataFrame(rows))
    if checkpoint:
        checkpoint.remove()  # only now: a crash before this point still resumes


if __name__ == "__main__":
    run("train", main)  # a diverged run ends with its one-line message
