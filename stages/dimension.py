"""Stage dimension: for every trained seed of one configuration and every hidden layer, estimates of
the dimension of the layer's weight distribution -> results/<config>/dimensions.csv.

Participation ratios of the three matrices of Ferbach et al. (weights, covariance-aware, activations),
principal components for 90/95/99% of the variance, TwoNN, maximum likelihood and the Wasserstein-rate
slope, the last four on the layer's neurons as points (their incoming weight vectors).
"""

import logging

import pandas as pd
from common import configuration_stage, prepared_path, results_dir, run
from common_models import load_seed_models, stage_device
from tqdm import tqdm

from lmcot.data import Dataset
from lmcot.dimension import model_dimensions
from lmcot.io import write_csv

log = logging.getLogger("dimension")


def main():
    params, config = configuration_stage("dimension", __doc__)
    device = stage_device(params)
    data = Dataset.load(prepared_path(config.dataset)).to(device)
    inputs = data.x_train[: params["dimension"]["num_samples"]]
    rows = []
    for seed, model in tqdm(load_seed_models(params, config, device).items(), desc=config.name):
        options = params["dimension"]["wasserstein_rate"]
        for row in model_dimensions(model, inputs, **options, min_ambient=params["dimension"]["min_ambient"]):
            rows.append({**config.as_dict(), "seed": seed, **row})
    table = pd.DataFrame(rows)
    summary = table.groupby(["layer", "estimator"])["value"].mean().unstack()
    log.info("%s: mean estimates per layer\n%s", config.name, summary.to_string(float_format="%.2f"))
    write_csv(results_dir(config) / "dimensions.csv", table)


if __name__ == "__main__":
    run("dimension", main)
