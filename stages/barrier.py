"""Stage barrier: loss and error along the linear path between model A and aligned model B, for every
pair and method of one configuration -> results/<config>/curves.csv and results/<config>/barriers.csv.

Every path is also evaluated after each of barrier.norm_corrections that applies to the architecture: column
``method`` names the alignment, column ``correction`` the correction (``none``: the path as it is). BN reset
(recompute the running statistics) applies to networks with BatchNorm. REPAIR (Jordan et al. 2023: rescale
every channel to the interpolated endpoints' mean and standard deviation) applies to networks with BatchNorm
(at the BatchNorm layers) and to those without (mlp, cnn, resnet: at every Linear/Conv layer with permuted
outputs), but not to rnn/lstm, whose gates are raw tensors. A correction that does not apply is skipped with a
logged reason.
"""

import logging
from copy import deepcopy

import pandas as pd
import torch
from common import configuration_stage, prepared_path, results_dir, run
from common_models import load_seed_models, stage_device
from tqdm import tqdm

from lmcot.analysis import method_label
from lmcot.barrier import barrier_summary, check_finite, interpolation_curve
from lmcot.choices import NO_CORRECTION
from lmcot.data import Dataset
from lmcot.design import evaluation_grid
from lmcot.evaluation import correction_refusal
from lmcot.io import read_json, write_csv
from lmcot.permutation import apply_permutations

log = logging.getLogger("barrier")


def main():
    params, config = configuration_stage("barrier", __doc__)
    device = stage_device(params)
    data = Dataset.load(prepared_path(config.dataset)).to(device)
    limit = {"train": params["barrier"]["train_samples"], "test": None}  # the train split is subsampled
    splits = {split: tuple(t[: limit[split]] for t in data.split(split)) for split in params["barrier"]["splits"]}
    alphas = evaluation_grid(params["barrier"]["alphas"])
    alignment = read_json(results_dir(config) / "alignment.json")
    models = load_seed_models(params, config, device)
    container = deepcopy(models[params["train"]["seeds"][0]])  # overwritten in place at every path point
    corrections = [None]
    for correction in params["barrier"]["norm_corrections"]:
        if why := correction_refusal(container, correction):
            log.info("%s: no %s paths: %s", config.name, correction, why)
        else:
            corrections.append(correction)
    norm_inputs = data.x_train[: params["barrier"]["norm_samples"]]

    curves = []
    for record in tqdm(alignment["alignments"], desc=config.name):
        model_a, model_b = models[record["seed_a"]], models[record["seed_b"]]
        perms = {name: torch.tensor(perm) for name, perm in record["permutations"].items()}
        state_b = apply_permutations(model_b.permutation_spec(), perms, model_b.state_dict())
        for correction in corrections:
            keys = {**config.as_dict(), "seed_a": record["seed_a"], "seed_b": record["seed_b"],
                    "method": record["method"], "correction": correction or NO_CORRECTION}  # fmt: skip
            rows = interpolation_curve(
                container, model_a.state_dict(), state_b, alphas, splits, params["barrier"]["batch_size"],
                correction, norm_inputs,
            )  # fmt: skip
            curves += [{**keys, **row} for row in rows]
    curves = pd.DataFrame(curves)
    check_finite(curves, config.name)  # stop rather than let a NaN or inf turn into a barrier

    group_keys = [*config.as_dict(), "seed_a", "seed_b", "method", "correction", "split", "metric"]
    barriers = pd.DataFrame(
        [
            {**dict(zip(group_keys, key, strict=True)), **barrier_summary(g["alpha"], g["value"])}
            for key, g in curves.groupby(group_keys, sort=False)
        ]
    )
    for row in barriers.query("split == 'test' and metric == 'loss'").itertuples():
        label = method_label(row.method, row.correction)
        log.info("seeds %d-%d %-20s test loss barrier %.4f", row.seed_a, row.seed_b, label, row.barrier)
    write_csv(results_dir(config) / "curves.csv", curves)
    write_csv(results_dir(config) / "barriers.csv", barriers)


if __name__ == "__main__":
    run("barrier", main)
