"""Presets are partial params files: each must make valid params together with params.yaml, and the
replication presets must be the papers' settings, with their cuts stated."""

import subprocess
import sys
from pathlib import Path

import pytest

from lmcot.config import parse_model, read_yaml

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (ROOT / "presets").glob("*.yaml"))
sys.path.insert(0, str(ROOT / "presets"))
from run import flatten  # noqa: E402

PAPER_LRS = [0.0001, 0.000398, 0.00158, 0.00631, 0.0251, 0.1]


def preset(name: str) -> dict:
    return flatten(read_yaml(ROOT / f"presets/{name}.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_preset_gives_valid_params_and_a_dvc_command(name):
    result = subprocess.run(
        [sys.executable, str(ROOT / "presets/run.py"), name, "--dry-run"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith(f"dvc exp run -n {name} -S ")


def assert_ferbach_recipe(values: dict):
    assert values["train.sweep.models"] == ["mlp-d3-w512"]
    assert values["train.sweep.datasets"] == ["mnist10k"] and values["fetch.datasets"] == ["mnist10k"]
    assert values["prepare.mnist10k.standardise"] is False  # raw pixels in [0, 1]
    assert (values["train.recipe.optimizer"], values["train.recipe.momentum"]) == ("sgd", 0.9)
    assert (values["train.recipe.batch_size"], values["train.recipe.epochs"]) == (500, 50)  # never fewer epochs
    assert (values["train.recipe.warmup_steps"], values["train.recipe.warmup_epochs"]) == (10, 0)
    assert values["align.pairs"] == "disjoint"
    assert {
        "identity",
        "naive_weight_matching",
        "cov_weight_matching",
        "activation_covariance",
        "weight_matching",
    } <= set(values["align.methods"])
    assert values["report.replications"] == ["ferbach2024"]


def test_ferbach_preset_is_the_papers_setting():
    values = preset("ferbach2024_mnist")
    assert_ferbach_recipe(values)
    assert values["train.sweep.lrs"] == PAPER_LRS
    ratios = [b / a for a, b in zip(PAPER_LRS, PAPER_LRS[1:], strict=False)]
    assert max(ratios) / min(ratios) < 1.01  # log-spaced
    assert values["train.seeds"] == list(range(8))  # 4 disjoint pairs


def test_quick_ferbach_preset_cuts_only_learning_rates_and_pairs():
    values = preset("ferbach2024_mnist_quick")
    assert_ferbach_recipe(values)
    assert set(values["train.sweep.lrs"]) < set(PAPER_LRS) and max(values["train.sweep.lrs"]) == 0.1
    assert len(values["train.seeds"]) == 6  # 3 disjoint pairs: the fewest that can decide a claim
    text = (ROOT / "presets/ferbach2024_mnist_quick.yaml").read_text()
    assert "3 of the paper's 6 learning rates" in text and "3 disjoint pairs" in text


def test_git_rebasin_preset_spans_sixteen_times_in_width():
    values = preset("ainsworth2023_mnist_mlp_width")
    widths = [parse_model(m)[2] for m in values["train.sweep.models"]]
    assert {parse_model(m)[:2] for m in values["train.sweep.models"]} == {("mlp", 3)} and 512 in widths
    assert max(widths) / min(widths) >= 16
    assert values["align.methods"] == ["identity", "weight_matching", "activation_matching"]
    assert (values["train.recipe.optimizer"], values["train.sweep.lrs"]) == ("adam", [0.001])
    assert (values["train.recipe.batch_size"], values["train.recipe.epochs"]) == (500, 100)
    assert values["report.replications"] == ["ainsworth2023"]


def test_extra_values_override_the_preset_and_are_validated():
    run = [sys.executable, str(ROOT / "presets/run.py"), "ferbach2024_mnist", "--dry-run"]
    result = subprocess.run([*run, "-S", "train.sweep.lrs=[0.01]"], capture_output=True, text=True, check=True)
    assert "-S train.sweep.lrs=[0.01]" in result.stdout and "0.000398" not in result.stdout
    result = subprocess.run([*run, "-S", "train.sweep.datasets=[mnist10]"], capture_output=True, text=True)
    assert result.returncode != 0 and "train.sweep.datasets" in result.stderr and "mnist10k" in result.stderr


def test_unknown_preset_names_the_valid_ones():
    result = subprocess.run([sys.executable, str(ROOT / "presets/run.py"), "nope"], capture_output=True, text=True)
    assert result.returncode != 0 and "ferbach2024_mnist_quick" in result.stderr
