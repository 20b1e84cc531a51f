"""Stage align: for every pair of seeds of one configuration and every method, one permutation per
hidden layer -> results/<config>/alignment.json.

Each permutation is checked to leave model B's function unchanged before it is written. Timings go to
the log only, so that the same inputs give a byte-identical output (and DVC's caches can share it).
"""

from common import configuration_stage, prepared_path, results_dir, run
from common_models import load_seed_models, stage_device

from lmcot.align.methods import align_pairs
from lmcot.data import Dataset
from lmcot.design import seed_pairs
from lmcot.io import write_json


def main():
    params, config = configuration_stage("align", __doc__)
    device = stage_device(params)
    data = Dataset.load(prepared_path(config.dataset)).to(device)
    inputs = data.x_train[: params["align"]["num_samples"]]
    models = load_seed_models(params, config, device)
    pairs = seed_pairs(params["train"]["seeds"], params["align"]["pairs"])
    records = align_pairs(models, pairs, params["align"]["methods"], params, inputs, data.x_test[:512], config.name)
    write_json(results_dir(config) / "alignment.json", {"configuration": config.as_dict(), "alignments": records})


if __name__ == "__main__":
    run("align", main)
