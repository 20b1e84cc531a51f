"""The README's extension guide, followed with toy ones: an alignment method and a data set, each registered
where the guide says and then used by the same functions the stages call. (A new architecture:
tests/test_extend_architecture.py.)"""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lmcot import config
from lmcot.align import methods
from lmcot.align.methods import METHODS, Method, align, method_options, output_change
from lmcot.config import ParamsError, integer, number, params_schema, read_yaml, validate
from lmcot.data import LOADERS, Dataset, from_numpy, prepare
from lmcot.models import build_model
from lmcot.permutation import Permutations
from lmcot.training import Recipe, train_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def default():
    return read_yaml(ROOT / "params.yaml")


# --- an alignment method --------------------------------------------------------------------------------


def shuffle(model_a, model_b, inputs=None, seed=0) -> Permutations:
    """A random permutation of every layer's units, drawn from ``seed``: aligns nothing, keeps the function."""
    generator = torch.Generator().manual_seed(seed)
    sizes = model_b.permutation_spec().sizes(model_b.state_dict())
    return {name: torch.randperm(size, generator=generator) for name, size in sizes.items()}


@pytest.fixture
def registered_method(monkeypatch):
    """Step 1 of the guide: the record in lmcot.align.methods.METHODS and the name in lmcot.choices.METHODS.
    lmcot.config imported that tuple by name, so the name it validates against is patched there too."""
    monkeypatch.setitem(METHODS, "shuffle", Method(shuffle, "align.shuffle", needs_data=False))
    monkeypatch.setattr("lmcot.choices.METHODS", (*config.METHODS, "shuffle"))
    monkeypatch.setattr(config, "METHODS", (*config.METHODS, "shuffle"))
    return "shuffle"


def schema_with_shuffle():
    """Step 2: the options group's schema, beside the other groups of ``align`` in lmcot.config.params_schema."""
    schema = params_schema()
    schema["align"]["shuffle"] = {"seed": integer(0)}
    return schema


def with_shuffle(params):
    """params.yaml with the method listed in align.methods and its options group under align."""
    out = copy.deepcopy(params)
    out["align"]["methods"] = [*out["align"]["methods"], "shuffle"]
    out["align"]["shuffle"] = {"seed": 3}
    return out


def test_a_registered_method_runs_as_the_align_stage_runs_it(registered_method, default):
    params = validate(with_shuffle(default), schema_with_shuffle())
    assert method_options(registered_method, params) == {"seed": 3}

    torch.manual_seed(0)
    model_a, model_b = (build_model("mlp", (1, 8, 8), 10, 16, 2) for _ in range(2))
    x = torch.randn(64, 1, 8, 8)
    perms = align(registered_method, model_a, model_b, x, **method_options(registered_method, params))  # as the stage
    assert set(perms) == {"P0", "P1"}
    assert all(sorted(p.tolist()) == list(range(16)) for p in perms.values())
    assert any(not torch.equal(p, torch.arange(16)) for p in perms.values())
    expected = shuffle(model_a, model_b, seed=3)
    assert perms.keys() == expected.keys() and all(torch.equal(perms[k], expected[k]) for k in perms)
    assert output_change(model_b, perms, x) < 1e-5  # a permutation keeps the function


def test_params_accept_the_method_only_once_registered(default, monkeypatch):
    with pytest.raises(ParamsError, match=r"align.methods = .*'shuffle' is not valid"):
        validate(with_shuffle(default), schema_with_shuffle())
    monkeypatch.setitem(METHODS, "shuffle", Method(shuffle, "align.shuffle", needs_data=False))
    monkeypatch.setattr(config, "METHODS", (*config.METHODS, "shuffle"))
    assert "shuffle" in validate(with_shuffle(default), schema_with_shuffle())["align"]["methods"]
    # without its schema, the options group is an unknown key
    with pytest.raises(ParamsError, match=r"unknown key 'align.shuffle'"):
        validate(with_shuffle(default))
    # and the registries stay as they were outside the test
    monkeypatch.undo()
    assert "shuffle" not in methods.METHODS and "shuffle" not in config.METHODS


# --- a data set -------------------------------------------------------------------------------------------


def blobs(options: dict, source=None) -> Dataset:
    """Two Gaussian blobs in 2-D (a ``(n, 1, 2)`` input), one per class, split by ``test_fraction``."""
    rng = np.random.default_rng(options["seed"])
    n = options["num_samples"]
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 1, 2)) + 3.0 * (2 * y[:, None, None] - 1)
    n_train = n - round(n * options["test_fraction"])
    return from_numpy("blobs", x[:n_train], y[:n_train], x[n_train:], y[n_train:], ["left", "right"])


BLOBS = {"num_samples": 400, "test_fraction": 0.25, "seed": 0, "standardise": True}


@pytest.fixture
def registered_dataset(monkeypatch):
    """Step 1 of the guide: the loader in lmcot.data.LOADERS and the name in lmcot.choices.DATASETS (and in
    lmcot.config, which imported that tuple by name)."""
    monkeypatch.setitem(LOADERS, "blobs", blobs)
    monkeypatch.setattr("lmcot.choices.DATASETS", (*config.DATASETS, "blobs"))
    monkeypatch.setattr(config, "DATASETS", (*config.DATASETS, "blobs"))
    return "blobs"


def test_params_accept_a_registered_data_set_with_its_options(registered_dataset, default):
    schema = params_schema()
    schema["prepare"]["blobs"] = {
        "num_samples": integer(10),
        "test_fraction": number(0, 1, exclusive_minimum=True),
        "seed": integer(0),
        "standardise": config.boolean,
    }
    params = copy.deepcopy(default)
    params["prepare"]["blobs"] = dict(BLOBS)
    params["train"]["sweep"]["datasets"] = ["blobs"]
    params["fetch"]["datasets"] = []
    assert validate(params, schema)["prepare"]["blobs"] == BLOBS
    with pytest.raises(ParamsError, match=r"missing key 'prepare.blobs'"):
        validate(default, schema)  # every data set of the schema has its group in params.yaml


def test_a_registered_data_set_is_prepared_saved_loaded_and_trained_on(registered_dataset, tmp_path):
    ds = prepare(registered_dataset, BLOBS)  # what stages/prepare.py calls
    assert (len(ds.x_train), len(ds.x_test), ds.input_shape, ds.num_classes) == (300, 100, (1, 2), 2)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    mean, std = ds.x_train.mean(dim=(0, 2)), ds.x_train.std(dim=(0, 2))
    assert torch.allclose(mean, torch.zeros(1), atol=1e-5) and torch.allclose(std, torch.ones(1), atol=1e-5)
    raw = prepare(registered_dataset, {**BLOBS, "standardise": False})
    assert not torch.allclose(raw.x_train, ds.x_train)

    ds.save(tmp_path / "blobs.safetensors")
    loaded = Dataset.load(tmp_path / "blobs.safetensors")
    assert loaded.name == "blobs" and loaded.classes == ["left", "right"]
    for split in ("train", "test"):
        assert all(torch.equal(a, b) for a, b in zip(loaded.split(split), ds.split(split), strict=True))

    model, history = train_model(loaded, "mlp", 8, 1, Recipe(lr=0.1, epochs=1, batch_size=32), seed=0, progress=False)
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])
    assert history[0]["test_accuracy"] > 0.9  # the blobs are 6 standard deviations apart
