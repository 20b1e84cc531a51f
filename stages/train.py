"""Stage train: every seed of one configuration -> models/<config>/seed<N>.{safetensors,json}.

Also writes results/<config>/training.csv (per-epoch train/test loss and accuracy of every seed).
Saves checkpoints/<config>/train.pt every train.checkpoint_every epochs; run again after a crash, it
resumes from there and ends with the weights an uninterrupted run gives.
"""

import pandas as pd
from common import checkpoint_path, configuration_stage, model_path, prepared_path, results_dir, run
from common_models import stage_device

from lmcot.data import Dataset
from lmcot.io import sha256_of, write_csv
from lmcot.model_files import save_model
from lmcot.training import Checkpoint, run_key, train_configuration


def main():
    params, config = configuration_stage("train", __doc__)
    options = params["train"]
    device = stage_device(params)
    data = Dataset.load(prepared_path(config.dataset)).to(device)
    checkpoint = None
    if options["checkpoint_every"]:  # a checkpoint of another run (params, data or device) is not resumed
        key = run_key(config, options["recipe"], options["seeds"], device, sha256_of(prepared_path(config.dataset)))
        checkpoint = Checkpoint(checkpoint_path(config), key, options["checkpoint_every"])
    trained = train_configuration(config, data, options["recipe"], options["seeds"], device, checkpoint)
    for one in trained.seeds:
        save_model(one.model, model_path(config, one.seed), one.sidecar, one.metrics)
    write_csv(results_dir(config) / "training.csv", pd.DataFrame(trained.history))
    if checkpoint:
        checkpoint.remove()  # only now: a crash before this point still resumes


if __name__ == "__main__":
    run("train", main)  # a diverged run ends with its one-line message
