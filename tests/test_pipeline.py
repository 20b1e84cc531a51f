"""The DVC pipeline end to end on a tiny sweep: outputs, caching, and bad params.

Runs the real `dvc repro` in a copy of the project (about a minute on 2 cores).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = {
    "train.sweep.datasets": ["digits"],
    "train.sweep.widths": [4, 8],
    "train.sweep.lrs": [0.05],
    "align.methods": ["identity", "weight_matching", "activation_matching"],
    "train.seeds": [0, 1, 2],
    "train.recipe.epochs": 2,
    "align.num_samples": 300,
    "barrier.alphas": [0.0, 0.25, 0.5, 0.75, 1.0],
}


def set_params(project: Path, changes: dict) -> None:
    yaml = YAML()  # round-trip, keeps comments as a user's edit would
    params = yaml.load(project / "params.yaml")
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[last] = value
    yaml.dump(params, project / "params.yaml")


def dvc(project: Path, *args, check=True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    result = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def stages_run(result) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", result.stdout)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, project / name)
    for name in ("stages", "lmcot", "data/raw"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__", "*.tmp"))
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    set_params(project, TINY)
    first = dvc(project, "repro")
    return project, first


def test_first_run_makes_every_output(project):
    project, first = project
    ran = stages_run(first)
    assert ran[:2] == ["check_params", "prepare@digits"]
    assert sorted(s for s in ran if s.startswith("train@")) == [
        "train@digits-mlp-2-4-0.05",
        "train@digits-mlp-2-8-0.05",
    ]
    assert ran[-1] == "report"
    for seed in (0, 1, 2):
        assert (project / f"models/digits-mlp-d2-w8-lr0.05/seed{seed}.safetensors").exists()
    for name in (
        "README.md",
        "metrics.json",
        "barriers.csv",
        "curves.csv",
        "dimensions.csv",
        "figures/interpolation_test.png",
    ):
        assert (project / "reports" / name).exists(), name


def test_barrier_table_has_the_promised_rows_and_columns(project):
    project, _ = project
    barriers = pd.read_csv(project / "reports/barriers.csv")
    columns = [
        "dataset",
        "arch",
        "width",
        "depth",
        "lr",
        "seed_a",
        "seed_b",
        "method",
        "split",
        "metric",
        "barrier",
        "midpoint",
    ]
    assert set(columns) <= set(barriers.columns)
    # 2 widths x 3 pairs x 3 methods x 2 splits x 2 metrics
    assert len(barriers) == 2 * 3 * 3 * 2 * 2
    assert not barriers[["barrier", "midpoint"]].isna().any().any()
    assert set(zip(barriers.seed_a, barriers.seed_b, strict=True)) == {(0, 1), (0, 2), (1, 2)}
    curves = pd.read_csv(project / "reports/curves.csv")
    assert sorted(curves["alpha"].unique()) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_second_repro_runs_nothing(project):
    project, _ = project
    assert stages_run(dvc(project, "repro")) == []


def test_report_setting_reruns_only_the_report(project):
    project, _ = project
    set_params(project, {"report.dpi": 90})
    assert stages_run(dvc(project, "repro")) == ["check_params", "report"]


def test_alpha_grid_reruns_barriers_not_training(project):
    project, _ = project
    set_params(project, {"barrier.alphas": [0.0, 0.5, 1.0]})
    ran = stages_run(dvc(project, "repro"))
    assert sorted(ran) == ["barrier@digits-mlp-2-4-0.05", "barrier@digits-mlp-2-8-0.05", "check_params", "report"]


def test_adding_a_width_trains_only_that_width(project):
    project, _ = project
    set_params(project, {"train.sweep.widths": [4, 8, 16]})
    ran = stages_run(dvc(project, "repro"))
    assert [s for s in ran if s.startswith("train@")] == ["train@digits-mlp-2-16-0.05"]
    assert sorted(ran) == [
        "align@digits-mlp-2-16-0.05",
        "barrier@digits-mlp-2-16-0.05",
        "check_params",
        "dimension@digits-mlp-2-16-0.05",
        "report",
        "train@digits-mlp-2-16-0.05",
    ]
    assert pd.read_csv(project / "reports/barriers.csv")["width"].nunique() == 3


def test_bad_params_fail_before_any_training(project):
    project, _ = project
    set_params(project, {"train.sweep.widths": [4, 8, 16, 0], "train.recipe.epochs": 3})
    result = dvc(project, "repro", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "train.sweep.widths" in output and "[3] = 0" in output and ">= 1" in output
    assert not (project / "models/digits-mlp-d2-w0-lr0.05").exists()
    # the models trained before are untouched (epochs changed, but nothing retrained)
    assert (project / "models/digits-mlp-d2-w8-lr0.05/seed0.safetensors").exists()
    assert stages_run(result) == ["check_params"]


def test_sweep_as_a_dvc_experiment(project):
    """`dvc exp run -S` sweeps a list from params.yaml; the experiment runs in DVC's own copy of the repo."""
    project, _ = project
    set_params(project, {"train.sweep.widths": [4, 8], "train.recipe.epochs": 2})
    dvc(project, "repro")  # back to the committed state's outputs
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny sweep"], cwd=project, check=True
    )
    result = dvc(project, "exp", "run", "--temp", "-n", "two-lrs", "-S", "train.sweep.lrs=[0.05,0.1]")
    ran = stages_run(result)
    assert "train@digits-mlp-2-8-0.1" in ran and "train@digits-mlp-2-8-0.05" not in ran  # cached ones reused
    assert "two-lrs" in dvc(project, "exp", "list").stdout
    metrics = dvc(project, "exp", "show", "--json").stdout
    assert "0.1" in metrics and "test_loss_barrier" in metrics
