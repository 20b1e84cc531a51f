"""Data sets: generate or load, split, standardise with train-split statistics, save and load.

Every data set becomes a :class:`Dataset` of float32 inputs shaped ``(samples, channels, *spatial)``
and int64 labels. MNIST-1D and digits need no network; MNIST, Fashion-MNIST and CIFAR-10 are read by
torchvision's own loaders from a local root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmcot.io import load_dataset, save_dataset


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


def _from_numpy(name, x_train, y_train, x_test, y_test, classes) -> Dataset:
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
    return _from_numpy("mnist1d", x[:n_train], y[:n_train], x[n_train:], y[n_train:], range(10))


def load_digits(test_fraction: float, seed: int) -> Dataset:
    """scikit-learn's 1,797 8x8 digits, stratified split: inputs ``(n, 1, 8, 8)``, 10 classes."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x = bunch.images[:, None, :, :] / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, bunch.target, test_size=test_fraction, random_state=seed, stratify=bunch.target
    )
    return _from_numpy("digits", x_tr, y_tr, x_te, y_te, bunch.target_names)


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


def load_torchvision(name: str, root, download: bool = False) -> Dataset:
    """MNIST, Fashion-MNIST or CIFAR-10 through torchvision from ``root``: inputs ``(n, C, H, W)`` in [0, 1]."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    missing = missing_torchvision_files(name, root)
    if missing and not download:
        folder = Path(root) / TORCHVISION_FILES[name][0]
        raise FileNotFoundError(
            f"{name}: missing {', '.join(p.name for p in missing)} in {folder}/. Put the original files there "
            f"(uncompressed), or set prepare.{name}.download: true on a machine with network access."
        )
    try:
        splits = [cls(root=str(root), train=train, download=download) for train in (True, False)]
    except RuntimeError as err:  # torchvision's "not found or corrupted" (a checksum failed)
        raise ValueError(
            f"{name}: cannot read the files in {Path(root) / TORCHVISION_FILES[name][0]}/ ({err})"
        ) from None

    def arrays(split):
        x = torch.as_tensor(np.asarray(split.data))
        x = x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)  # to (n, C, H, W)
        return x.float() / 255.0, torch.as_tensor(np.asarray(split.targets))

    (x_tr, y_tr), (x_te, y_te) = arrays(splits[0]), arrays(splits[1])
    return _from_numpy(name, x_tr, y_tr, x_te, y_te, splits[0].classes)


def prepare(name: str, options: dict) -> Dataset:
    """Build data set ``name`` from its ``prepare.<name>`` params and standardise it."""
    if name == "mnist1d":
        ds = make_mnist1d(options["num_samples"], options["test_fraction"], options["seed"])
    elif name == "digits":
        ds = load_digits(options["test_fraction"], options["seed"])
    elif name in TORCHVISION_FILES:
        ds = load_torchvision(name, options["root"], options["download"])
    else:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return standardise(ds)


DATASETS = ("mnist1d", "digits", *TORCHVISION_FILES)
