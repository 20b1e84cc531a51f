"""What the stage scripts share: where artifacts live, logging, and finding this stage's configuration.

The directory layout is the pipeline's, not the science's, so it lives here rather than in `lmcot`.
dvc.yaml spells the same paths; tests/test_pipeline.py checks that the two agree.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

# Import the lmcot that sits beside these scripts, also when DVC runs an experiment in a copy of the repo.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if TYPE_CHECKING:
    from lmcot.config import Configuration

RAW = Path("data/raw")
DOWNLOADS = Path("data/downloads")  # tarballs put here by hand are used instead of the network
PREPARED = Path("data/prepared")
MODELS = Path("models")
RESULTS = Path("results")
FUSED = Path("fused")
REPORTS = Path("reports")
CHECKPOINTS = Path("checkpoints")  # not a DVC output: DVC deletes a stage's outputs before running it


def package_path(dataset: str) -> Path:
    """Where the stage fetch@<dataset> puts the tarball of the registry package ``dataset`` is made from."""
    return RAW / dataset / "package.tgz"


def prepared_path(dataset: str) -> Path:
    return PREPARED / f"{dataset}.safetensors"


def model_path(config: Configuration, seed: int) -> Path:
    return MODELS / config.name / f"seed{seed}.safetensors"


def results_dir(config: Configuration) -> Path:
    return RESULTS / config.name


def fused_dir(config: Configuration) -> Path:
    return FUSED / config.name


def checkpoint_path(config: Configuration) -> Path:
    return CHECKPOINTS / config.name / "train.pt"


def setup_logging(stage: str) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {stage} %(levelname)s %(message)s", datefmt="%H:%M:%S")


def setup(stage: str) -> dict:
    """Configure logging and return the validated params; exit with the error list if they are invalid."""
    from lmcot.config import ParamsError, load_params

    setup_logging(stage)
    try:
        return load_params()
    except (ParamsError, FileNotFoundError) as err:
        sys.exit(f"{stage}: {err}")


def configuration_stage(stage: str, description: str) -> tuple[dict, Configuration]:
    """Start a per-configuration stage: read its one argument (the configuration name), validate params."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("config", help="configuration name, as dvc.yaml builds it")
    args = parser.parse_args()
    params = setup(stage)
    return params, find_configuration(params, args.config)


def find_configuration(params: dict, name: str) -> Configuration:
    from lmcot.config import configurations

    for config in configurations(params):
        if config.name == name:
            return config
    valid = ", ".join(c.name for c in configurations(params))
    sys.exit(f"configuration {name!r} is not in train.sweep of params.yaml (valid: {valid})")
