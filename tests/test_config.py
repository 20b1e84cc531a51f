"""params.yaml: the default is valid; bad input is refused with the key, the value and what is valid."""

import copy
import re
from pathlib import Path

import pytest

from lmcot.config import Configuration, ParamsError, configurations, load_params, read_yaml, validate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default():
    return read_yaml(ROOT / "params.yaml")


def edited(params, path, value):
    out = copy.deepcopy(params)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    node[last] = value
    return out


def test_default_params_are_valid_and_span_the_promised_sweep():
    params = load_params(ROOT / "params.yaml")
    sweep = params["train"]["sweep"]
    assert sweep["datasets"] == ["mnist1d"]
    assert len(sweep["widths"]) >= 3 and max(sweep["widths"]) / min(sweep["widths"]) >= 16
    assert len(params["train"]["seeds"]) >= 3 and sweep["depths"] == [2]
    assert len(params["barrier"]["alphas"]) >= 11


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("train.sweep.datasets", ["mnist2d"], ["train.sweep.datasets", "mnist2d", "mnist1d, digits"]),
        ("train.sweep.archs", ["resnet999"], ["train.sweep.archs", "resnet999", "valid: mlp"]),
        ("align.methods", ["weight_matchin"], ["align.methods", "weight_matchin", "did you mean 'weight_matching'"]),
        ("train.sweep.widths", [32, 0], ["train.sweep.widths", "[1] = 0", ">= 1"]),
        ("train.sweep.widths", 32, ["train.sweep.widths", "must be a list"]),
        ("train.seeds", [0], ["train.seeds", "at least 2"]),
        ("train.seeds", [1, 1], ["train.seeds", "repeat"]),
        ("barrier.alphas", [0.0, 0.5, 1.5], ["barrier.alphas", "1.5", "<= 1"]),
        ("barrier.alphas", [-0.2, 1.0], ["barrier.alphas", "-0.2", ">= 0"]),
        ("train.recipe.optimizer", "sgdd", ["train.recipe.optimizer", "sgdd", "sgd, adam"]),
        ("train.recipe.epochs", 2.5, ["train.recipe.epochs", "2.5", "integer"]),
        ("train.sweep.lrs", [0.1, "fast"], ["train.sweep.lrs", "fast", "number"]),
        ("train.sweep.lrs", [0.0], ["train.sweep.lrs", "> 0"]),
    ],
)
def test_bad_values_are_named(default, key, value, expected):
    with pytest.raises(ParamsError) as err:
        validate(edited(default, key, value))
    for fragment in expected:
        assert fragment in str(err.value), (fragment, str(err.value))


def test_misspelt_key_is_named_with_a_suggestion(default):
    params = copy.deepcopy(default)
    params["train"]["sweep"]["widht"] = params["train"]["sweep"].pop("widths")
    with pytest.raises(ParamsError) as err:
        validate(params)
    message = str(err.value)
    assert "unknown key 'train.sweep.widht'" in message
    assert "did you mean 'train.sweep.widths'" in message
    assert "missing key 'train.sweep.widths'" in message


def test_every_problem_is_reported_at_once(default):
    params = edited(edited(default, "train.sweep.widths", [0]), "train.seeds", [0])
    with pytest.raises(ParamsError) as err:
        validate(params)
    assert "train.sweep.widths" in str(err.value) and "train.seeds" in str(err.value)


def test_yaml_is_read_as_dvc_reads_it(tmp_path, default):
    text = re.sub(r"lrs: \[[^\]]*\]", "lrs: [1e-4, 0.05]", (ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml")["train"]["sweep"]["lrs"] == [1e-4, 0.05]


def test_unparseable_yaml_names_the_file(tmp_path):
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="params.yaml"):
        load_params(tmp_path / "params.yaml")


def test_configurations_follow_the_sweep(default):
    params = edited(edited(default, "train.sweep.widths", [8, 16]), "train.sweep.lrs", [0.1, 1])
    configs = configurations(validate(params))
    assert [c.name for c in configs] == [
        "mnist1d-mlp-d2-w8-lr0.1",
        "mnist1d-mlp-d2-w8-lr1",
        "mnist1d-mlp-d2-w16-lr0.1",
        "mnist1d-mlp-d2-w16-lr1",
    ]


def test_dvc_yaml_builds_the_same_configuration_names():
    """dvc.yaml's matrix stages and lmcot.config.Configuration must name configurations alike."""
    stages = read_yaml(ROOT / "dvc.yaml")["stages"]
    config = Configuration("digits", "mlp", 3, 64, 0.001)
    for stage in ("train", "align", "dimension", "barrier"):
        cmd = stages[stage]["cmd"]
        rendered = re.sub(r"\$\{item\.(\w+)\}", lambda m: str(getattr(config, m.group(1))), cmd)
        assert rendered.endswith(" " + config.name), (stage, rendered)


def test_device_setting(default):
    from lmcot.device import resolve_device

    with pytest.raises(ParamsError, match=r"device = 'gpu'.*auto, cpu, cuda"):
        validate(edited(default, "device", "gpu"))
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
