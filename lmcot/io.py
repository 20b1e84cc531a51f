"""Reading and writing artifacts: atomic files (text, JSON, CSV) and prepared data sets.

Models are saved and loaded by :mod:`lmcot.model_files`. torch and safetensors are imported by the functions
that use them, so that writing a text or JSON file (check_params, the cluster commands) starts without them."""

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
