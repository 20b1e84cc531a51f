"""Reading and writing artifacts: atomic files, models (safetensors + JSON sidecar), data sets.

torch, safetensors and the models are imported by the functions that use them, so that writing a text or
JSON file (check_params, the cluster commands) starts without them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from lmcot.errors import DamagedFileError, MissingFileError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

MODEL_FORMAT = "lmcot-model/1"


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success move it into place, on error delete it.

    Readers never see a half-written file, and a crash leaves any earlier file at ``path`` intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj, sort_keys: bool = True) -> None:
    """``obj`` as indented JSON (keys sorted unless ``sort_keys`` is false: then in insertion order)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


def write_csv(path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def read_json(path):
    """The JSON document at ``path``, an input that `dvc repro` makes; an error naming it if missing or damaged."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingFileError(f"{path} is missing; run `dvc repro` to make it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DamagedFileError(f"{path}: not valid JSON ({err}); run `dvc repro` to make it again") from None


def read_csv(path) -> pd.DataFrame:
    """The table at ``path``, an input that `dvc repro` makes; an error naming it if missing or damaged."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path} is missing; run `dvc repro` to make it")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DamagedFileError(f"{path}: not a CSV table ({err}); run `dvc repro` to make it again") from None


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- models ---------------------------------------------------------------------------------------


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
    model = build_model(cfg["arch"], cfg["input_shape"], cfg["num_classes"], cfg["width"], cfg["depth"])
    try:
        state = load_file(weights)
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError) as err:
        raise DamagedFileError(
            f"{weights}: cannot load weights into {cfg['arch']} ({err}); run `dvc repro` to make it again"
        ) from None
    return model.to(device).eval()


# --- data sets ------------------------------------------------------------------------------------


DATASET_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def save_dataset(path, arrays: dict[str, np.ndarray], metadata: dict) -> None:
    """Write arrays and JSON-able metadata into one safetensors file (byte-for-byte deterministic)."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"lmcot": json.dumps(metadata, sort_keys=True)})


def load_dataset(path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: prepared data set missing (run the prepare stage: dvc repro)")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = json.loads((f.metadata() or {})["lmcot"])
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, KeyError, json.JSONDecodeError) as err:
        raise DamagedFileError(
            f"{path}: not a prepared lmcot data set ({err!r}); run `dvc repro` to make it again"
        ) from None
    if not isinstance(metadata, dict) or not {"name", "classes"} <= metadata.keys():
        raise DamagedFileError(
            f"{path}: its metadata lacks the data set's name and classes; run `dvc repro` to make it again"
        )
    if set(arrays) != set(DATASET_ARRAYS):
        raise DamagedFileError(
            f"{path}: holds arrays {sorted(arrays)}, expected {list(DATASET_ARRAYS)}; run `dvc repro` to make it again"
        )
    return arrays, metadata
