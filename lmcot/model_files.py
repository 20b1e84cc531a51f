"""Trained models on disk: safetensors weights and a JSON sidecar (the configuration that rebuilds the
model, its final metrics, and the weights' SHA-256, so that a damaged or replaced file is caught)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from lmcot.errors import DamagedFileError, MissingFileError
from lmcot.io import atomic_path, sha256_of, write_json

if TYPE_CHECKING:
    import torch

MODEL_FORMAT = "lmcot-model/1"


def save_model(model: torch.nn.Module, path, config: dict, metrics: dict) -> None:
    """Write ``path`` (``.safetensors`` weights) and its sidecar ``path.with_suffix('.json')``.

    ``config`` must hold what :func:`~lmcot.models.build_model` needs (arch, input_shape, num_classes,
    width, depth) and may hold anything else that describes the run (seed, recipe, ...).
    """
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, tmp)
        digest = sha256_of(tmp)
    sidecar = {"format": MODEL_FORMAT, "config": config, "metrics": metrics, "weights_sha256": digest}
    write_json(path.with_suffix(".json"), sidecar)


def read_sidecar(path) -> dict:
    sidecar_path = Path(path).with_suffix(".json")
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except FileNotFoundError:
        raise MissingFileError(
            f"{sidecar_path}: model sidecar missing (expected next to the weights); run `dvc repro` to make it"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DamagedFileError(
            f"{sidecar_path}: model sidecar is not valid JSON ({err}); run `dvc repro` to make it again"
        ) from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != MODEL_FORMAT:
        found = sidecar.get("format") if isinstance(sidecar, dict) else None
        raise DamagedFileError(
            f"{sidecar_path}: format is {found!r}, expected {MODEL_FORMAT!r}; run `dvc repro` to make it again"
        )
    return sidecar


def load_model(path, device="cpu") -> torch.nn.Module:
    """Return the model saved at ``path`` (weights or sidecar path), in eval mode, ready to run.

    Raises an error naming the file when the weights are missing, damaged, or from another architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from lmcot.models import build_model

    weights = Path(path).with_suffix(".safetensors")
    sidecar = read_sidecar(weights)
    if not weights.exists():
        raise MissingFileError(f"{weights}: weights file missing; run `dvc repro` to make it")
    if sha256_of(weights) != sidecar.get("weights_sha256"):
        raise DamagedFileError(
            f"{weights}: weights do not match the checksum in the sidecar (file damaged or replaced); "
            "run `dvc repro` to make it again"
        )
    cfg = sidecar.get("config")
    if not isinstance(cfg, dict) or not {"arch", "input_shape", "num_classes", "width", "depth"} <= cfg.keys():
        raise DamagedFileError(
            f"{weights.with_suffix('.json')}: its config lacks what builds the model; run `dvc repro` to make it again"
        )
    model = build_model(
        cfg["arch"], cfg["input_shape"], cfg["num_classes"], cfg["width"], cfg["depth"], cfg.get("heads")
    )
    try:
        state = load_file(weights)
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError) as err:
        raise DamagedFileError(
            f"{weights}: cannot load weights into {cfg['arch']} ({err}); run `dvc repro` to make it again"
        ) from None
    return model.to(device).eval()
