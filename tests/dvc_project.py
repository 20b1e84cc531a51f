"""Helpers for tests that run the real DVC pipeline in a copy of the project."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config", ".gitignore")
PROJECT_DIRS = ("stages", "lmcot", "data/raw")
GIT_USER = ["-c", "user.name=lmcot tests", "-c", "user.email=tests@lmcot.invalid"]
# The stages after training at their smallest, for tests about training, failures, caching and sharing rather
# than about the numbers: one alignment method, few samples, three alphas, one fused width, a 3 x 3 plane.
SMALLEST_DOWNSTREAM = {
    "align.methods": ["identity"],
    "align.num_samples": 200,
    "dimension.num_samples": 200,
    "barrier.alphas": [0.0, 0.5, 1.0],
    "barrier.norm_corrections": [],
    "fuse.num_models": 2,
    "fuse.width_factors": [1],
    "fuse.alpha_h_grid": [],
    "fuse.fine_tune.epochs": 0,
    "plane.grid_size": 3,
    "plane.num_samples": 100,
}


def env() -> dict:
    """The environment of a user of the project's venv, offline."""
    return {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def copy_project(destination: Path) -> Path:
    """A copy of the project's pipeline (no outputs, no cache) at ``destination``, as a git repository."""
    for name in PROJECT_FILES:
        if (ROOT / name).exists():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    for name in PROJECT_DIRS:
        shutil.copytree(ROOT / name, destination / name, ignore=shutil.ignore_patterns("__pycache__", "*.tmp"))
    git(destination, "init", "-q", "-b", "main")
    return destination


def set_params(project: Path, changes: dict) -> None:
    """Edit params.yaml as a user would (round trip, comments kept); keys are dotted paths."""
    yaml = YAML()
    params = yaml.load(project / "params.yaml")
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[last] = value
    yaml.dump(params, project / "params.yaml")


def run(cwd: Path, *command: str, check=True, timeout=900) -> subprocess.CompletedProcess:
    # Output goes to files, not pipes: daemons a command starts (`dvc queue start`'s workers) inherit
    # them, and a pipe would make this call wait for the daemons to exit.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        returncode = subprocess.run(command, cwd=cwd, env=env(), stdout=out, stderr=err, timeout=timeout).returncode
        out.seek(0), err.seek(0)
        result = subprocess.CompletedProcess(command, returncode, out.read(), err.read())
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed in {cwd}:\n{result.stdout}\n{result.stderr}")
    return result


def dvc(project: Path, *args: str, check=True, timeout=900) -> subprocess.CompletedProcess:
    return run(project, "dvc", *args, check=check, timeout=timeout)


def git(project: Path, *args: str, check=True) -> subprocess.CompletedProcess:
    return run(project, "git", *GIT_USER, *args, check=check)


def copy_with_cache(project: Path, destination: Path) -> Path:
    """A copy of a project folder (workspace, Git repository and DVC cache) at ``destination``; DVC's own state
    (locks, indexes under ``.dvc/tmp``) is left behind, as a fresh checkout has none."""
    dvc_state = lambda folder, names: ["tmp"] if folder.endswith(".dvc") else []  # noqa: E731
    return Path(shutil.copytree(project, destination, symlinks=True, ignore=dvc_state))


def commit_all(project: Path, message: str) -> None:
    git(project, "add", "-A")
    git(project, "commit", "-qm", message)


def stages_run(result: subprocess.CompletedProcess) -> list[str]:
    """Stages that DVC executed (not those it skipped or restored from the run-cache)."""
    return re.findall(r"Running stage '([^']+)'", result.stdout)


def stages_restored(result: subprocess.CompletedProcess) -> list[str]:
    """Stages that DVC restored from the run-cache instead of running them."""
    return re.findall(r"Stage '([^']+)' is cached - skipping run", result.stdout)
