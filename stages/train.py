"""Stage train: every seed of one configuration -> models/<config>/seed<N>.{safetensors,json}.

Also writes results/<config>/training.csv (per-epoch train/test loss and accuracy of every seed).
"""

import logging

import pandas as pd
from common import configuration_stage, model_path, prepared_path, results_dir, stage_device

from lmcot.data import Dataset
from lmcot.io import save_model, write_csv
from lmcot.training import Recipe, train_models

log = logging.getLogger("train")


def main():
    params, config = configuration_stage("train", __doc__)
    recipe = Recipe(lr=float(config.lr), **params["train"]["recipe"])
    seeds = params["train"]["seeds"]
    device = stage_device(params)
    data = Dataset.load(prepared_path(config.dataset)).to(device)
    log.info("%s: training seeds %s together with %s", config.name, seeds, recipe)
    models, histories = train_models(data, config.arch, config.width, config.depth, recipe, seeds, device)
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


if __name__ == "__main__":
    main()
