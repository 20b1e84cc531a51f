"""Stage fuse: Wasserstein-barycentre fusion of the first fuse.num_models seeds of one configuration,
at every target width of fuse.width_factors, against vanilla averaging, one-shot OT fusion and the
output ensemble, each before and after a short fine-tuning -> results/<config>/fusion.csv, the
barycentre cost per layer and iteration -> results/<config>/fusion_costs.csv, and the fused models
(before fine-tuning) -> fused/<config>/width<W>.safetensors.

The experiment is :func:`lmcot.fusion_study.fusion_experiment`; its module says what each row is.
"""

import pandas as pd
from common import configuration_stage, fused_dir, prepared_path, results_dir, run
from common_models import load_seed_models, stage_device

from lmcot.data import Dataset
from lmcot.fusion_study import COST_COLUMNS, fine_tune_recipe, fusion_experiment
from lmcot.io import write_csv
from lmcot.model_files import save_model


def main():
    params, config = configuration_stage("fuse", __doc__)
    device = stage_device(params)
    data = Dataset.load(prepared_path(config.dataset)).to(device)
    options = params["fuse"]
    seeds = params["train"]["seeds"][: options["num_models"]]
    every = load_seed_models(params, config, "cpu")
    recipe = fine_tune_recipe(params["train"]["recipe"], config.lr, options["fine_tune"])
    result = fusion_experiment(config, [every[seed] for seed in seeds], seeds, data, options, recipe, device)
    for width, fused in result.fused.items():
        save_model(fused.model, fused_dir(config) / f"width{width}.safetensors", config.as_dict() | fused.sidecar, {})
    write_csv(results_dir(config) / "fusion.csv", pd.DataFrame(result.rows))
    # the columns even without rows: a model with attention heads has no barycentre
    costs = pd.DataFrame(result.costs, columns=[*config.as_dict(), *COST_COLUMNS])
    write_csv(results_dir(config) / "fusion_costs.csv", costs)


if __name__ == "__main__":
    run("fuse", main)
