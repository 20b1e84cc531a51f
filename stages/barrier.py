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

from common import configuration_stage, prepared_path, results_dir, run
from common_models import load_seed_models, stage_device

from lmcot.barrier import barrier_tables
from lmcot.data import Dataset
from lmcot.io import read_json, write_csv


def main():
    params, config = configuration_stage("barrier", __doc__)
    device = stage_device(params)
    data = Dataset.load(prepared_path(config.dataset)).to(device)
    alignment = read_json(results_dir(config) / "alignment.json")
    models = load_seed_models(params, config, device)
    tables = barrier_tables(config, models, alignment["alignments"], data, params["barrier"])
    write_csv(results_dir(config) / "curves.csv", tables.curves)
    write_csv(results_dir(config) / "barriers.csv", tables.barriers)


if __name__ == "__main__":
    run("barrier", main)
