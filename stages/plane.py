"""Stage plane: train loss and test error on two planes through models of one configuration, as in
Akash, Li and Garcia Trillos's Figure 1 -> results/<config>/plane.csv and plane_points.csv.

Model 1 and model 2 are the first two seeds of train.seeds. Plane "permutation" passes through
model 1, model 2 and model 2 permuted onto model 1 by the couplings of their Wasserstein barycentre;
plane "fusion" through model 1, model 2 and that barycentre (the fused model).
"""

import logging
from copy import deepcopy

import pandas as pd
import torch
from common import configuration_stage, prepared_path, results_dir, run
from common_models import load_seed_models, stage_device

from lmcot.data import Dataset
from lmcot.fusion import permutations_from_fusion, wasserstein_barycenter
from lmcot.io import write_csv
from lmcot.permutation import apply_permutations
from lmcot.plane import evaluate_plane

log = logging.getLogger("plane")


def main():
    params, config = configuration_stage("plane", __doc__)
    device = stage_device(params)
    data = Dataset.load(prepared_path(config.dataset)).to(device)
    options = params["plane"]
    seed_1, seed_2 = params["train"]["seeds"][:2]
    models = load_seed_models(params, config, "cpu")
    model_1, model_2 = models[seed_1], models[seed_2]
    fusion = wasserstein_barycenter([model_1, model_2], model_1, **params["fuse"]["ot"])
    perms = permutations_from_fusion(fusion)
    state_1, state_2 = model_1.state_dict(), model_2.state_dict()
    permuted_2 = apply_permutations(model_2.permutation_spec(), perms, state_2)
    train = (data.x_train[: options["num_samples"]], data.y_train[: options["num_samples"]])
    test = (data.x_test, data.y_test)
    container = deepcopy(model_1).to(device)  # overwritten at every grid point
    grids, marks = [], []
    planes = {
        "permutation": (state_2, permuted_2, {"origin": "model 1", "first": "model 2", "second": "permuted model 2"}),
        "fusion": (state_2, fusion.state, {"origin": "model 1", "first": "model 2", "second": "fused model"}),
    }
    for plane, (first, second, labels) in planes.items():
        first = {k: v.clone() for k, v in first.items()}
        second = {k: torch.as_tensor(v).clone() for k, v in second.items()}
        rows, points = evaluate_plane(
            container, state_1, first, second, train, test, options["grid_size"], options["margin"]
        )
        keys = {**config.as_dict(), "plane": plane}
        grids += [keys | row for row in rows]
        marks += [keys | {"point": labels[p], "x": x, "y": y} for p, (x, y) in points.items()]
        log.info("%s plane: %d points, train loss %.3f to %.3f", plane, len(rows),
                 min(r["train_loss"] for r in rows), max(r["train_loss"] for r in rows))  # fmt: skip
    write_csv(results_dir(config) / "plane.csv", pd.DataFrame(grids))
    write_csv(results_dir(config) / "plane_points.csv", pd.DataFrame(marks))


if __name__ == "__main__":
    run("plane", main)
