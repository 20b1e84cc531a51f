"""lmcot as a user installs it: a wheel built from the sources holds every subpackage and the ``lmcot`` command, and
installed outside the checkout (no editable finder on the path) it aligns two networks end to end."""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def packages_in_source() -> set[str]:
    """Every package of lmcot in the checkout, dotted (``lmcot``, ``lmcot.align``, ...)."""
    return {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "lmcot").rglob("__init__.py")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (the checkout stays untouched), installed into a folder of its own."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT / "lmcot", source / "lmcot", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"), str(source)]
    subprocess.run(build, check=True, capture_output=True)
    (wheel,) = (work / "dist").glob("lmcot-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(work / "site"), str(wheel)], check=True)
    return wheel


def outside_the_checkout(command: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``command`` with Python's ``-S`` (no site: the editable install's finder is not loaded), the installed
    wheel first on the path and then the environment's packages (torch, POT, ...)."""
    path = f"{site}:{sysconfig.get_paths()['purelib']}:{sysconfig.get_paths()['platlib']}"
    env = {"PYTHONPATH": path, "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-S", *command], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_the_wheel_holds_every_subpackage_and_the_command(installed):
    with zipfile.ZipFile(installed) as wheel:
        names = wheel.namelist()
        entry_points = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    in_wheel = {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert in_wheel == packages_in_source() and {"lmcot.align", "lmcot.report", "lmcot.models"} <= in_wheel
    assert "[console_scripts]\nlmcot = lmcot.__main__:main" in entry_points


@pytest.mark.slow
def test_the_installed_command_aligns_two_networks_outside_the_checkout(installed, tmp_path):
    """``lmcot align`` from the installed wheel (the console script and ``python -m lmcot``) on two torchvision
    ResNet-18 state dicts: lmcot is imported from the install, and the file written computes B's function."""
    import torchvision

    site = installed.parent.parent / "site"
    where = outside_the_checkout(["-c", "import lmcot.align, lmcot.report; print(lmcot.__file__)"], site, tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout
    models = []
    for seed, name in ((0, "a.pt"), (1, "b.pt")):
        torch.manual_seed(seed)
        models.append(torchvision.models.resnet18(num_classes=10).eval())
        torch.save(models[-1].state_dict(), tmp_path / name)
    arguments = ["align", "a.pt", "b.pt", "--arch", "resnet18", "--input-shape", "3,32,32"]
    for command, out in (([str(site / "bin" / "lmcot")], "script.pt"), (["-m", "lmcot"], "module.pt")):
        done = outside_the_checkout([*command, *arguments, "--out", out], site, tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{out}: B aligned to A by weight_matching; 12 permutations")
        aligned = torchvision.models.resnet18(num_classes=10).eval()
        aligned.load_state_dict(torch.load(tmp_path / out))
        x = torch.randn(4, 3, 32, 32)
        with torch.no_grad():
            assert torch.allclose(aligned(x), models[1](x), atol=1e-4)
        assert not torch.equal(aligned.conv1.weight, models[1].conv1.weight)


@pytest.mark.slow
def test_the_installed_commands_fuse_and_measure_a_barrier_on_the_users_data(installed, tmp_path):
    """``lmcot fuse`` and ``lmcot barrier`` from the wheel, with no params.yaml at hand: two small torchvision
    SqueezeNets (a concatenation in every block), a tensor file of the user's inputs and labels."""
    import torchvision

    site = installed.parent.parent / "site"
    for seed, name in ((0, "a.pt"), (1, "b.pt")):
        torch.manual_seed(seed)
        torch.save(torchvision.models.squeezenet1_1(num_classes=3).state_dict(), tmp_path / name)
    torch.save({"inputs": torch.randn(12, 3, 32, 32), "labels": torch.arange(12) % 3}, tmp_path / "data.pt")
    networks = ["a.pt", "b.pt", "--arch", "squeezenet1_1"]
    fused = outside_the_checkout(["-m", "lmcot", "fuse", *networks, "--method", "average", "--out", "f.pt",
                                  "--input-shape", "3,32,32"], site, tmp_path)  # fmt: skip
    assert fused.returncode == 0, fused.stderr
    assert set(torch.load(tmp_path / "f.pt")) == set(torch.load(tmp_path / "a.pt"))
    barrier = outside_the_checkout(["-m", "lmcot", "barrier", *networks, "--data", "data.pt", "--alphas", "3",
                                    "--align", "weight_matching", "--json"], site, tmp_path)  # fmt: skip
    assert barrier.returncode == 0, barrier.stderr
    assert '"split": "data"' in barrier.stdout


def test_the_installed_commands_defaults_are_the_projects_params():
    from lmcot.__main__ import INSTALLED_PARAMS
    from lmcot.config import PROJECT_PARAMS, load_params

    params = load_params(PROJECT_PARAMS)
    for group, values in INSTALLED_PARAMS.items():
        assert {key: params[group][key] for key in values} == values
