"""Stage plane: train loss and test error on two planes through models of one configuration, as in
Akash, Li and Garcia Trillos's Figure 1 -> results/<config>/plane.csv and plane_points.csv.

Model 1 and model 2 are the first two seeds of train.seeds. Plane "permutation" passes through
model 1, model 2 and model 2 permuted onto model 1 by the couplings of their Wasserstein barycentre;
plane "fusion" through model 1, model 2 and that barycentre (the fused model).
"""

from common import configuration_stage, prepared_path, results_dir, run
from common_models import load_seed_models, stage_device

from lmcot.data import Dataset
from lmcot.io import write_csv
from lmcot.plane import plane_tables


def main():
    params, config = configuration_stage("plane", __doc__)
    device = stage_device(params)
    data = Dataset.load(prepared_path(config.dataset)).to(device)
    seed_1, seed_2 = params["train"]["seeds"][:2]
    models = load_seed_models(params, config, "cpu")
    planes = plane_tables(config, models[seed_1], models[seed_2], data, params["plane"], params["fuse"]["ot"], device)
    write_csv(results_dir(config) / "plane.csv", planes.grid)
    write_csv(results_dir(config) / "plane_points.csv", planes.points)


if __name__ == "__main__":
    run("plane", main)
