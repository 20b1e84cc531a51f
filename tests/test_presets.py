"""Presets are partial params files: each must make valid params together with params.yaml."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (ROOT / "presets").glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_preset_gives_valid_params_and_a_dvc_command(name):
    result = subprocess.run(
        [sys.executable, str(ROOT / "presets/run.py"), name, "--dry-run"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith(f"dvc exp run -n {name} -S ")


def test_ferbach_preset_is_the_papers_setting():
    sys.path.insert(0, str(ROOT / "presets"))
    from run import flatten

    from lmcot.config import read_yaml

    preset = flatten(read_yaml(ROOT / "presets/ferbach_mnist.yaml"))
    assert preset["train.sweep.models"] == ["mlp-d3-w512"]
    lrs = preset["train.sweep.lrs"]
    assert len(lrs) == 6 and lrs[0] == 1e-4 and lrs[-1] == 0.1
    ratios = [b / a for a, b in zip(lrs, lrs[1:], strict=False)]
    assert max(ratios) / min(ratios) < 1.01  # log-spaced
    assert preset["train.recipe.epochs"] == 50 and preset["train.recipe.batch_size"] == 500


def test_unknown_preset_names_the_valid_ones():
    result = subprocess.run([sys.executable, str(ROOT / "presets/run.py"), "nope"], capture_output=True, text=True)
    assert result.returncode != 0 and "ferbach_mnist" in result.stderr
