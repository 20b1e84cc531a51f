"""A train stage killed with SIGKILL midway resumes from its checkpoint and ends with the weights of an
uninterrupted run; a diverging configuration stops with its name, seed and step, and saves nothing; a NaN
in a model stops the barrier stage instead of becoming a barrier."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from dvc_project import SMALLEST_DOWNSTREAM, copy_project, copy_with_cache, dvc, env, set_params, stages_run

from lmcot.io import sha256_of

pytestmark = pytest.mark.slow

CONFIG = "digits-mlp-d2-w64-lr0.05"
STAGE = "train@digits-mlp-d2-w64-0.05"
EPOCHS = 6
SLOW_ENOUGH_TO_KILL = {
    "train.sweep.datasets": ["digits"],
    "fetch.datasets": [],
    "train.sweep.models": ["mlp-d2-w64"],
    "train.sweep.lrs": [0.05],
    "train.seeds": [0, 1],
    "train.recipe.epochs": EPOCHS,
    "train.recipe.batch_size": 8,  # many small steps: about a second an epoch
    **SMALLEST_DOWNSTREAM,  # these tests are about training and failures
}


@pytest.fixture(scope="module")
def prepared_project(tmp_path_factory):
    """The project with these params and its data set prepared, once for the module's tests."""
    project = copy_project(tmp_path_factory.mktemp("prepared") / "project")
    set_params(project, SLOW_ENOUGH_TO_KILL)
    dvc(project, "repro", "prepare@digits")
    return project


@pytest.fixture
def project(prepared_project, tmp_path):
    """A copy of ``prepared_project`` (workspace, Git repository and DVC cache) for one test."""
    return copy_with_cache(prepared_project, tmp_path / "project")


def weights(project: Path) -> dict[str, str]:
    return {p.name: sha256_of(p) for p in sorted((project / "models" / CONFIG).glob("*.safetensors"))}


def test_killed_train_stage_resumes_to_the_same_weights(project):
    checkpoint = project / "checkpoints" / CONFIG / "train.pt"
    process = subprocess.Popen(
        ["dvc", "repro", STAGE],
        cwd=project,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # a little further into training
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    saved_epoch = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= saved_epoch < EPOCHS, "the stage must be killed midway"
    assert not (project / "models" / CONFIG / "seed0.safetensors").exists()

    resumed = dvc(project, "repro", STAGE)
    assert stages_run(resumed) == [STAGE]
    assert "resuming from the checkpoint of epoch" in resumed.stdout + resumed.stderr
    assert not checkpoint.exists()  # removed once the models are saved
    after_resume = weights(project)
    assert len(after_resume) == 2

    uninterrupted = dvc(project, "repro", "--force", STAGE)
    assert "resuming" not in uninterrupted.stdout + uninterrupted.stderr
    assert weights(project) == after_resume
    # no temporary file left at any output path
    assert not list((project / "models").rglob("*.tmp")) and not list((project / "results").rglob("*.tmp"))


def test_diverging_configuration_stops_with_its_name_and_saves_nothing(project):
    set_params(project, {"train.sweep.lrs": [1e6], "train.recipe.epochs": 2, "train.recipe.batch_size": 64})
    result = dvc(project, "repro", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "training diverged: digits-mlp-d2-w64-lr1000000.0, lr=1000000.0, seed=0" in output, output
    assert "at step" in output and "Traceback" not in output
    assert not (project / "models/digits-mlp-d2-w64-lr1000000.0").exists()
    assert (
        not (project / "reports/barriers.csv").exists()
        or "1000000" not in (project / "reports/barriers.csv").read_text()
    )


def test_keep_going_finishes_the_healthy_configuration_beside_a_diverging_one(project):
    """Two learning rates, one diverging: ``dvc repro --keep-going`` fails on it and still runs every stage of
    the other configuration; only the report, which needs both, is left."""
    set_params(project, {"train.sweep.lrs": [0.05, 1e6], "train.recipe.epochs": 2, "train.recipe.batch_size": 64})
    result = dvc(project, "repro", "--keep-going", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "training diverged: digits-mlp-d2-w64-lr1000000.0" in output, output
    ran = stages_run(result)
    for stage in ("train", "align", "dimension", "barrier", "fuse", "plane"):
        assert f"{stage}@digits-mlp-d2-w64-0.05" in ran, (stage, ran)
    assert (project / "results" / CONFIG / "barriers.csv").exists()
    assert not (project / "models/digits-mlp-d2-w64-lr1000000.0").exists()
    assert "report" not in ran


def test_a_nan_never_becomes_a_barrier(project):
    """A model whose weights hold a NaN (saved with a valid checksum) stops the barrier stage with a message;
    the barriers of the healthy run before it stay in the cache, and ``dvc checkout --force`` brings them
    back with the model as trained."""
    from lmcot.model_files import load_model, read_sidecar, save_model

    set_params(project, {"train.recipe.epochs": 2, "train.recipe.batch_size": 64, "align.methods": ["identity"]})
    dvc(project, "repro", "barrier@digits-mlp-d2-w64-0.05")
    barriers = project / "results" / CONFIG / "barriers.csv"
    healthy = barriers.read_bytes()
    path = project / "models" / CONFIG / "seed1.safetensors"
    model, sidecar = load_model(path), read_sidecar(path)
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    save_model(model, path, sidecar["config"], sidecar["metrics"])
    result = dvc(project, "repro", "--single-item", "barrier@digits-mlp-d2-w64-0.05", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"barrier: {CONFIG}: the" in output and "is not finite on the path from seed 0 to seed 1" in output, output
    assert "Traceback" not in output
    assert not barriers.exists() or barriers.read_bytes() == healthy  # never a barrier of the NaN model
    # --force: the damaged model file is discarded knowingly; the stages named, since the others never ran here
    dvc(project, "checkout", "--force", "train@digits-mlp-d2-w64-0.05", "barrier@digits-mlp-d2-w64-0.05")
    assert barriers.read_bytes() == healthy
    assert torch.isfinite(next(load_model(path).parameters())).all()  # the model as trained, too
