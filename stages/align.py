"""Stage align: for every pair of seeds of one configuration and every method, one permutation per
hidden layer -> results/<config>/alignment.json.

Each permutation is checked to leave model B's function unchanged before it is written. Timings go to
the log only, so that the same inputs give a byte-identical output (and DVC's caches can share it).
"""

import itertools
import logging
import time

from common import configuration_stage, prepared_path, results_dir, run
from common_models import load_seed_models, stage_device
from tqdm import tqdm

from lmcot.align.methods import align, method_options, output_change
from lmcot.data import Dataset
from lmcot.design import seed_pairs
from lmcot.io import write_json

log = logging.getLogger("align")


def main():
    params, config = configuration_stage("align", __doc__)
    device = stage_device(params)
    data = Dataset.load(prepared_path(config.dataset)).to(device)
    inputs = data.x_train[: params["align"]["num_samples"]]
    models = load_seed_models(params, config, device)
    pairs = seed_pairs(params["train"]["seeds"], params["align"]["pairs"])
    records = []
    for (seed_a, seed_b), method in tqdm(list(itertools.product(pairs, params["align"]["methods"])), desc=config.name):
        start = time.perf_counter()
        perms = align(method, models[seed_a], models[seed_b], inputs, **method_options(method, params))
        seconds = time.perf_counter() - start
        change = output_change(models[seed_b], perms, data.x_test[:512])
        if change > 1e-3:
            raise RuntimeError(f"{method} permutation changed model {seed_b}'s outputs by {change:.3g}: a bug")
        log.info("%s seeds %d-%d %s: %.3f s", config.name, seed_a, seed_b, method, seconds)
        records.append(
            {
                "seed_a": seed_a,
                "seed_b": seed_b,
                "method": method,
                "output_change": change,
                "permutations": {name: perm.tolist() for name, perm in perms.items()},
            }
        )
    write_json(results_dir(config) / "alignment.json", {"configuration": config.as_dict(), "alignments": records})


if __name__ == "__main__":
    run("align", main)
