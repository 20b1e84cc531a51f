"""What the stages that run models share: the torch device, and the trained seeds of a configuration.

Apart from `common`, so that the stages that run no model (check_params, fetch, prepare, report) do not depend
on the model code: DVC reruns a stage when any file it imports changes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from common import model_path

if TYPE_CHECKING:
    from lmcot.config import Configuration


def stage_device(params: dict):
    """The torch device of the ``device`` setting (a ``DeviceError`` if it cannot be used here)."""
    from lmcot.device import resolve_device

    device = resolve_device(params["device"])
    logging.getLogger("device").info("running on %s", device)
    return device


def load_seed_models(params: dict, config: Configuration, device="cpu") -> dict:
    """Every trained seed of ``config``: seed -> model on ``device``."""
    from lmcot.model_files import load_model

    return {seed: load_model(model_path(config, seed), device) for seed in params["train"]["seeds"]}
