"""The Slurm job scripts, resources and sweep overrides of ``lmcot.cluster`` (no Slurm needed: see
test_cluster.py for the runs on a real one)."""

from pathlib import Path

import pytest
from dvc_project import ROOT, copy_project

from lmcot.cluster import ClusterError, apply_sweep, array_script, gather_script, resources
from lmcot.config import ParamsError, load_params, validate

RESOURCES = {
    "workdir": ".cluster",
    "partition": "gpu",
    "account": "lab42",
    "time": "1-02:00:00",
    "cpus": 8,
    "mem": "32G",
    "gpus": 2,
    "max_running": 5,
    "gather_time": "00:30:00",
}


def test_the_array_script_asks_for_the_resources_and_runs_one_configuration_per_index(tmp_path):
    script = array_script(tmp_path / "sub", Path("/home/u/lmcot"), "abc123", ["a", "b", "c"], RESOURCES)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    output = f"--output={tmp_path / 'sub/logs/%A_%a.out'}"
    for option in ("--time=1-02:00:00", "--cpus-per-task=8", "--mem=32G", "--partition=gpu", "--account=lab42",
                   "--gres=gpu:2", "--array=0-2%5", "--requeue", output):  # fmt: skip
        assert f"#SBATCH {option}" in lines, option
    assert "at commit abc123 of /home/u/lmcot" in script
    assert 'sed -n "$((SLURM_ARRAY_TASK_ID + 1))p"' in script and "configurations.txt" in script
    assert lines[-1].startswith("exec python -m lmcot.cluster task ")
    # Every #SBATCH line comes before the first command, or sbatch ignores it.
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert all(i < first_command for i, line in enumerate(lines) if line.startswith("#SBATCH"))


def test_without_partition_account_gpus_or_throttle_the_cluster_defaults_apply(tmp_path):
    plain = {**RESOURCES, "partition": None, "account": None, "gpus": 0, "max_running": 0}
    script = array_script(tmp_path, Path("/p"), "c", ["a", "b"], plain)
    assert "--partition" not in script and "--account" not in script and "--gres" not in script
    assert "#SBATCH --array=0-1\n" in script


def test_the_gather_waits_for_every_array_given_and_never_asks_for_a_gpu(tmp_path):
    script = gather_script(tmp_path, Path("/home/u/lmcot"), ["12", "7"], RESOURCES)
    assert "#SBATCH --dependency=afterany:12:7" in script
    assert "#SBATCH --time=00:30:00" in script and "#SBATCH --cpus-per-task=2" in script
    assert "--gres" not in script
    assert "cd /home/u/lmcot" in script and "lmcot.cluster gather" in script


def test_flags_override_params_and_bad_values_name_the_key():
    params = load_params(ROOT / "params.yaml")
    res = resources(params, {"time": "30", "mem": 4000, "gpus": None})
    assert res["time"] == "30" and res["mem"] == "4000" and res["gpus"] == params["cluster"]["gpus"]
    with pytest.raises(ClusterError, match=r"cluster.mem = '8 GB': must be a Slurm memory size"):
        resources(params, {"mem": "8 GB"})
    with pytest.raises(ClusterError, match=r"cluster.cpus = 0: must be an integer >= 1"):
        resources(params, {"cpus": 0})


@pytest.mark.parametrize("value", ["30", "04:00:00", "1-00", "2-12:30", "0-00:30:00", "45:00"])
def test_slurm_time_limits_are_accepted(value):
    params = load_params(ROOT / "params.yaml")
    assert validate({**params, "cluster": {**params["cluster"], "time": value}})["cluster"]["time"] == value


@pytest.mark.parametrize("value", ["4h", "04:00:00:00", "", 240, "1-", "-1"])
def test_other_time_limits_are_refused(value):
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(ParamsError, match="cluster.time"):
        validate({**params, "cluster": {**params["cluster"], "time": value}})


def test_overrides_are_written_only_when_the_sweep_is_valid(tmp_path):
    project = copy_project(tmp_path / "p")
    before = (project / "params.yaml").read_text()
    with pytest.raises(ClusterError, match=r"train.sweep.lrs = \[0.1, 0\]"):
        apply_sweep(project, ["train.sweep.lrs=[0.1,0]"])
    assert (project / "params.yaml").read_text() == before
    with pytest.raises(ClusterError, match="-S train.sweep.lrs="):
        apply_sweep(project, ["train.sweep.lrs=[0.1"])  # not an override DVC can parse
    params = apply_sweep(project, ["train.sweep.lrs=[0.1,0.2]", "cluster.gpus=1"])
    assert params["train"]["sweep"]["lrs"] == [0.1, 0.2] and params["cluster"]["gpus"] == 1
    assert load_params(project / "params.yaml") == params
    assert "gpus: 1                    # GPUs of each task" in (project / "params.yaml").read_text()  # comments kept
    assert not list(project.glob("tmp*"))
