"""Sweeps as DVC experiments: a queued sweep run by two workers, and experiments killed midway.

Every test runs the real `dvc exp` commands in a copy of the project with a small sweep.
"""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from dvc_project import commit_all, copy_project, dvc, env, set_params, stages_run
from test_sharing import SMALL

from lmcot.report.metrics import count_leaves

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path):
    project = copy_project(tmp_path / "project")
    set_params(project, SMALL)
    commit_all(project, "small sweep")
    return project


def experiments(project: Path) -> dict[str, dict]:
    """name -> {"status", "params", "metrics"} of the experiments on top of the workspace's commit."""
    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    found = {}
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            for revision in experiment["revs"]:
                data = revision.get("data") or {}
                found[revision.get("name") or experiment.get("name")] = {
                    "status": data.get("status"),
                    "params": data.get("params", {}).get("params.yaml", {}).get("data", {}),
                    "metrics": data.get("metrics", {}).get("reports/metrics.json", {}).get("data", {}),
                }
    return found


def wait_for_queue(project: Path, timeout: float) -> str:
    """Wait until no queued experiment is queued or running; returns the last `dvc queue status`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = dvc(project, "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        time.sleep(5)
    raise AssertionError(f"the queue did not finish in {timeout:.0f} s:\n{status}")


def test_queued_sweep_runs_to_completion_with_two_workers(project):
    dvc(project, "exp", "run", "--queue", "-n", "lr-0.1", "-S", "train.sweep.lrs=[0.1]")
    dvc(project, "exp", "run", "--queue", "-n", "wider", "-S", "train.sweep.models=[mlp-d2-w8]")
    assert dvc(project, "queue", "status").stdout.count("Queued") == 2
    dvc(project, "queue", "start", "-j", "2")
    status = wait_for_queue(project, timeout=900)
    assert status.count("Success") == 2, status
    found = experiments(project)
    assert found["lr-0.1"]["params"]["train"]["sweep"]["lrs"] == [0.1]
    assert found["wider"]["params"]["train"]["sweep"]["models"] == ["mlp-d2-w8"]
    for name in ("lr-0.1", "wider"):
        metrics = found[name]["metrics"]
        assert 0 <= metrics["endpoints"]["test_acc"] <= 1, (name, metrics)
        # the same few headline keys in every experiment, so that `dvc exp show` lines them up in columns
        assert count_leaves(metrics) <= 30 and set(metrics) == set(found["lr-0.1"]["metrics"]), name
    diff = dvc(project, "metrics", "diff", "lr-0.1", "wider", "--json").stdout
    assert "reports/metrics.json" in json.loads(diff)


def start_and_kill(project: Path, args: list[str], when: str, timeout: float = 600) -> list[str]:
    """Start `dvc <args>` and SIGKILL it and its children once its output shows ``when``; return its output lines."""
    process = subprocess.Popen(
        ["dvc", *args],
        cwd=project,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + timeout
    seen = []
    for line in process.stdout:
        seen.append(line)
        if when in line or time.time() > deadline:
            break
    time.sleep(2)  # midway through that stage
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    seen += process.stdout.readlines()  # what it printed before the kill, after ``when``
    assert any(when in line for line in seen), "".join(seen)
    return seen


def test_killed_exp_run_completes_when_run_again(project):
    """Killed once an align stage has started, the same command again completes the run and skips every stage
    that had finished: each one announced before the last one announced (DVC runs them in turn; the last may
    have finished or not when the kill came)."""
    command = ["exp", "run", "-S", "train.recipe.epochs=3"]
    seen = start_and_kill(project, command, when="Running stage 'align@")
    announced = [m[1] for line in seen if (m := re.search(r"Running stage '([^']+)'", line))]
    finished = announced[:-1]
    assert any(s.startswith("train@") for s in finished) and "report" not in announced, announced
    result = dvc(project, *command)
    ran = stages_run(result)
    assert "report" in ran
    assert not set(finished) & set(ran), (finished, ran)
    assert (project / "models/digits-mlp-d2-w4-lr0.05/seed1.safetensors").exists()
    assert json.loads((project / "reports/metrics.json").read_text())["endpoints"]["test_acc"] >= 0


def queue_processes(project: Path) -> list[psutil.Process]:
    """The queue's worker and experiment-runner processes of this project, and their children."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        ours = str(project) in cmdline or (process.info["cwd"] or "").startswith(str(project))
        if ours and ("queue-worker" in cmdline or "exec-run" in cmdline):
            found.append(process)
    children = [child for process in found for child in process.children(recursive=True)]
    return found + children


def test_killed_queue_worker_leaves_a_queue_that_runs_again(project):
    queued = ["exp", "run", "--queue", "-n", "deeper", "-S", "train.recipe.epochs=3"]
    dvc(project, *queued)
    dvc(project, "queue", "start", "-j", "1")
    deadline = time.time() + 300
    while not any("exec-run" in " ".join(p.cmdline()) for p in queue_processes(project)):
        assert time.time() < deadline, dvc(project, "queue", "status").stdout
        time.sleep(0.5)
    time.sleep(5)  # into the experiment's stages
    victims = queue_processes(project)
    for process in victims:
        process.kill()
    psutil.wait_procs(victims, timeout=30)
    status = dvc(project, "queue", "status").stdout
    assert "Success" not in status and "0 active" in status, status
    print(f"after SIGKILL of the worker and its experiment:\n{status}")

    # the dead task still reads "Running": mark it failed and forget it, then the same commands again
    dvc(project, "queue", "kill", "deeper")
    assert "Failed" in dvc(project, "queue", "status").stdout
    dvc(project, "queue", "remove", "--all")
    assert "deeper" not in dvc(project, "queue", "status").stdout
    dvc(project, *queued)
    dvc(project, "queue", "start", "-j", "1")
    status = wait_for_queue(project, timeout=900)
    assert "Success" in status, status
    assert experiments(project)["deeper"]["metrics"]["endpoints"]["test_acc"] >= 0
