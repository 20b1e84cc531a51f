"""Stage fuse: Wasserstein-barycentre fusion of fuse.num_models seeds of one configuration, for each of
fuse.groups disjoint groups of seeds (seeds 0-2, 3-5, ... of train.seeds: independent samples), at every
target width of fuse.width_factors, against vanilla averaging, one-shot OT fusion and the output ensemble,
each before and after a short fine-tuning -> results/<config>/fusion.csv (column ``group``), the barycentre
cost per layer and iteration -> results/<config>/fusion_costs.csv, and the fused models (before fine-tuning)
-> fused/<config>/width<W>.safetensors for the first group, group<k>-width<W>.safetensors for the others.

The experiment is :func:`lmcot.fusion_study.fusion_experiment`; its module says what each row is.
"""

import pandas as pd
from common import configuration_stage, fused_dir, prepared_path, results_dir, run
from common_models import load_seed_models, stage_device

from lmcot.data import Dataset
from lmcot.design import seed_groups
from lmcot.fusion_study import COST_COLUMNS, fine_tune_recipe, fusion_experiment
from lmcot.io import write_csv
from lmcot.model_files import save_model


def main():
    params, config = configuration_stage("fuse", __doc__)
    device = stage_device(params)
    data = Dataset.load(prepared_path(config.dataset)).to(device)
    options = params["fuse"]
    groups = seed_groups(params["train"]["seeds"], options["num_models"], options["groups"])
    every = load_seed_models(params, config, "cpu")
    recipe = fine_tune_recipe(params["train"]["recipe"], config.lr, options["fine_tune"])
    rows, costs = [], []
    for group, seeds in enumerate(groups):
        models = [every[seed] for seed in seeds]
        result = fusion_experiment(config, models, seeds, data, options, recipe, device, group)
        prefix = f"group{group}-" if group else ""
        for width, fused in result.fused.items():
            sidecar = config.as_dict() | fused.sidecar
            save_model(fused.model, fused_dir(config) / f"{prefix}width{width}.safetensors", sidecar, {})
        rows += result.rows
        costs += result.costs
    write_csv(results_dir(config) / "fusion.csv", pd.DataFrame(rows))
    # the columns even without rows: a model with attention heads has no barycentre
    write_csv(results_dir(config) / "fusion_costs.csv", pd.DataFrame(costs, columns=[*config.as_dict(), *COST_COLUMNS]))


if __name__ == "__main__":
    run("fuse", main)
