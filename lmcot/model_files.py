"""Trained models on disk: safetensors weights and a JSON sidecar (the configuration that rebuilds the
model, its final metrics, and the weights' SHA-256, so that a damaged or replaced file is caught)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

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
        raise FileNotFoundError(f"{sidecar_path}: model sidecar missing (expected next to the weights)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{sidecar_path}: model sidecar is not valid JSON ({err})") from None
    if sidecar.get("format") != MODEL_FORMAT:
        raise ValueError(f"{sidecar_path}: format is {sidecar.get('format')!r}, expected {MODEL_FORMAT!r}")
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
        raise FileNotFoundError(f"{weights}: weights file missing")
    if sha256_of(weights) != sidecar["weights_sha256"]:
        raise ValueError(f"{weights}: weights do not match the checksum in the sidecar (file damaged or replaced)")
    cfg = sidecar["config"]
    model = build_model(cfg["arch"], cfg["input_shape"], cfg["num_classes"], cfg["width"], cfg["depth"])
    try:
        state = load_file(weights)
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError) as err:
        raise ValueError(f"{weights}: cannot load weights into {cfg['arch']} ({err})") from None
    return model.to(device).eval()
