"""Data sets: generation is deterministic, standardisation uses train-split statistics only, prepared files
round-trip exactly and byte-for-byte, and torchvision's loaders read small files written in the real formats."""

import os
import pickle
import re

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from safetensors.torch import save_file

from lmcot.data import Dataset, load_digits, load_torchvision, make_mnist1d, prepare, standardise

# --- helpers --------------------------------------------------------------------------------------


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of ``x`` shaped ``(n, C, *spatial)``."""
    dims = [0, *range(2, x.dim())]
    return x.mean(dim=dims), x.std(dim=dims)


def assert_same_dataset(a: Dataset, b: Dataset) -> None:
    assert a.name == b.name
    assert a.classes == b.classes
    for split in ("train", "test"):
        for ta, tb in zip(a.split(split), b.split(split), strict=True):
            assert ta.dtype == tb.dtype
            assert torch.equal(ta, tb)


def write_idx(path, array: np.ndarray) -> None:
    """IDX file as MNIST ships it: magic 0x00000800 + ndim (uint8 data), big-endian uint32 dims, raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = np.array([0x0800 | array.ndim, *array.shape], dtype=">u4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def mnist_images(n: int, offset: int) -> np.ndarray:
    """Known, image-dependent uint8 pixels shaped (n, 28, 28)."""
    k, i, j = np.meshgrid(np.arange(n), np.arange(28), np.arange(28), indexing="ij")
    return ((k + offset) * 37 + i * 28 + j) % 256


def write_mnist(raw_dir, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    """MNIST / Fashion-MNIST raw folder with uncompressed IDX files; returns what was written."""
    arrays = {
        "train-images-idx3-ubyte": mnist_images(n_train, 0),
        "train-labels-idx1-ubyte": (np.arange(n_train) * 3) % 10,
        "t10k-images-idx3-ubyte": mnist_images(n_test, 1000),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 7 + 1) % 10,
    }
    for name, array in arrays.items():
        write_idx(raw_dir / name, array)
    return arrays


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_images(n: int, offset: int) -> np.ndarray:
    """(n, 3, 32, 32) uint8: every image and channel has its own values, and pixels vary over rows and columns."""
    k, c, i, j = np.meshgrid(np.arange(n), np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((k + offset) * 11 + c * 80 + i * 3 + j) % 256


def cifar_row(image: np.ndarray) -> np.ndarray:
    """One CIFAR record: 1024 red bytes, then 1024 green, then 1024 blue, each plane row-major."""
    return np.concatenate([image[0].ravel(), image[1].ravel(), image[2].ravel()]).astype(np.uint8)


def write_cifar(root, per_batch: int = 2, n_test: int = 3) -> tuple[np.ndarray, list, np.ndarray, list]:
    """``<root>/cifar-10-batches-py`` as the python tarball unpacks: pickled dicts (torchvision unpickles them
    with encoding='latin1', which turns the original Python 2 str keys into str, so the keys here are str)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(name, obj):
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    x_train = cifar_images(5 * per_batch, 0)
    y_train = [(3 * i + 1) % 10 for i in range(5 * per_batch)]
    for b in range(5):
        rows = slice(b * per_batch, (b + 1) * per_batch)
        data = np.stack([cifar_row(img) for img in x_train[rows]])
        dump(
            f"data_batch_{b + 1}",
            {"batch_label": f"training batch {b + 1} of 5", "data": data, "labels": y_train[rows]},
        )
    x_test = cifar_images(n_test, 100)
    y_test = [(7 * i) % 10 for i in range(n_test)]
    test_data = np.stack([cifar_row(img) for img in x_test])
    dump("test_batch", {"batch_label": "testing batch 1 of 1", "data": test_data, "labels": y_test})
    dump("batches.meta", {"label_names": CIFAR_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return x_train, y_train, x_test, y_test


@pytest.fixture
def skip_cifar_md5(monkeypatch):
    """torchvision checks each CIFAR file against the md5 of the real 170 MB download, which tiny test files cannot
    match; keep its "file exists" check and drop only the checksum. ``_check_integrity`` covers the batches,
    the module-level ``check_integrity`` is what ``_load_meta`` calls for batches.meta."""
    monkeypatch.setattr(tvd.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tvd.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


# --- MNIST-1D -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist1d_500():
    return make_mnist1d(500, 0.2, 0)


def test_mnist1d_shapes_labels_and_split_sizes(mnist1d_500):
    ds = mnist1d_500
    assert ds.name == "mnist1d"
    assert ds.x_train.shape == (400, 1, 40) and ds.x_test.shape == (100, 1, 40)
    assert ds.y_train.shape == (400,) and ds.y_test.shape == (100,)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.classes == [str(c) for c in range(10)] and ds.num_classes == 10 and ds.input_shape == (1, 40)
    labels = torch.cat([ds.y_train, ds.y_test])
    assert labels.min() >= 0 and labels.max() <= 9
    assert torch.bincount(labels, minlength=10).tolist() == [50] * 10  # the generator makes num_samples/10 per class
    assert torch.isfinite(ds.x_train).all() and ds.x_train.std() > 0.1


@pytest.mark.parametrize("test_fraction", [0.1, 0.25, 0.5])
def test_mnist1d_test_fraction_sets_split_sizes(test_fraction):
    ds = make_mnist1d(200, test_fraction, 0)
    assert len(ds.y_test) == round(200 * test_fraction)
    assert len(ds.y_train) + len(ds.y_test) == 200


def test_mnist1d_split_sizes_survive_float_rounding():
    ds = make_mnist1d(500, 0.55, 0)
    assert (len(ds.y_train), len(ds.y_test)) == (225, 275)


def test_mnist1d_is_deterministic_and_seed_dependent(mnist1d_500):
    assert_same_dataset(make_mnist1d(500, 0.2, 0), mnist1d_500)
    other = make_mnist1d(500, 0.2, 1)
    assert other.x_train.shape == mnist1d_500.x_train.shape
    assert not torch.equal(other.x_train, mnist1d_500.x_train)
    assert not torch.equal(other.y_train, mnist1d_500.y_train)


def test_prepare_mnist1d_standardises_with_train_statistics(mnist1d_500):
    ds = prepare("mnist1d", {"num_samples": 500, "test_fraction": 0.2, "seed": 0})
    mean, std = channel_stats(ds.x_train)
    assert mean.abs().max() < 1e-4 and (std - 1).abs().max() < 1e-4
    # the test split is shifted and scaled by the train split's statistics, nothing fitted on it
    raw_mean, raw_std = channel_stats(mnist1d_500.x_train)
    expected_test = (mnist1d_500.x_test - raw_mean[None, :, None]) / raw_std[None, :, None]
    torch.testing.assert_close(ds.x_test, expected_test, rtol=0, atol=1e-5)
    test_mean, test_std = channel_stats(ds.x_test)
    assert test_mean.abs().max() > 1e-3 or (test_std - 1).abs().max() > 1e-3
    assert torch.equal(ds.y_train, mnist1d_500.y_train) and torch.equal(ds.y_test, mnist1d_500.y_test)


# --- digits ---------------------------------------------------------------------------------------


def test_prepare_digits_stratified_split_and_train_statistics():
    raw = load_digits(0.25, 0)
    ds = prepare("digits", {"test_fraction": 0.25, "seed": 0})
    assert ds.name == "digits" and ds.classes == [str(c) for c in range(10)]
    assert ds.x_train.shape == (1347, 1, 8, 8) and ds.x_test.shape == (450, 1, 8, 8)
    assert 0 <= raw.x_train.min() and raw.x_train.max() <= 1  # pixel counts 0..16 scaled to [0, 1]

    # stratified: every class is split 3:1, up to rounding
    train_counts = torch.bincount(ds.y_train, minlength=10)
    test_counts = torch.bincount(ds.y_test, minlength=10)
    assert ((test_counts - 0.25 * (train_counts + test_counts)).abs() <= 1).all()

    mean, std = channel_stats(ds.x_train)
    assert mean.abs().max() < 1e-4 and (std - 1).abs().max() < 1e-4
    raw_mean, raw_std = channel_stats(raw.x_train)
    expected_test = (raw.x_test - raw_mean.view(1, 1, 1, 1)) / raw_std.view(1, 1, 1, 1)
    torch.testing.assert_close(ds.x_test, expected_test, rtol=0, atol=1e-5)
    # the test split is not re-centred on its own statistics: its mean stays off 0 by more than the tolerance
    # the train split meets (digits' splits are alike, so only just: 4e-4)
    test_mean, _ = channel_stats(ds.x_test)
    assert test_mean.abs().max() > 2e-4

    assert_same_dataset(prepare("digits", {"test_fraction": 0.25, "seed": 0}), ds)
    assert not torch.equal(prepare("digits", {"test_fraction": 0.25, "seed": 1}).y_train, ds.y_train)


def test_standardise_is_per_channel_and_ignores_the_test_split():
    x_train = torch.stack([torch.arange(8.0), 100 + 10 * torch.arange(8.0)], dim=1)[:, :, None]  # (8, 2, 1)
    y = torch.zeros(8, dtype=torch.int64)
    ds = standardise(Dataset("toy", x_train, y, x_train[:2] + 5, y[:2], ["a"]))
    mean, std = channel_stats(ds.x_train)
    torch.testing.assert_close(mean, torch.zeros(2), rtol=0, atol=1e-6)
    torch.testing.assert_close(std, torch.ones(2), rtol=0, atol=1e-6)
    # a test split shifted by 5 stays shifted by 5 train-stds per channel; a different test split changes nothing
    raw_std = x_train.std(dim=0, keepdim=True)
    torch.testing.assert_close(ds.x_test, ds.x_train[:2] + 5 / raw_std)
    other = standardise(Dataset("toy", x_train, y, torch.full((3, 2, 1), 1e3), y[:3], ["a"]))
    assert torch.equal(other.x_train, ds.x_train)


def test_prepare_rejects_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'.*mnist1d"):
        prepare("svhn", {})


# --- saving and loading ---------------------------------------------------------------------------


def small_dataset() -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset(
        "toy",
        torch.randn(6, 1, 4, generator=g),
        torch.tensor([0, 1, 2, 0, 1, 2]),
        torch.randn(3, 1, 4, generator=g),
        torch.tensor([2, 1, 0]),
        ["zero", "one", "two"],
    )


def test_save_load_round_trip(tmp_path, mnist1d_500):
    for ds in (small_dataset(), mnist1d_500):
        path = tmp_path / "nested" / f"{ds.name}.safetensors"
        ds.save(path)
        assert_same_dataset(Dataset.load(path), ds)
    assert sorted(p.name for p in (tmp_path / "nested").iterdir()) == ["mnist1d.safetensors", "toy.safetensors"]


def test_save_is_byte_for_byte_deterministic(tmp_path):
    small_dataset().save(tmp_path / "a.safetensors")
    small_dataset().save(tmp_path / "b.safetensors")
    loaded = Dataset.load(tmp_path / "a.safetensors")
    loaded.save(tmp_path / "c.safetensors")  # a re-save of what was read back is identical too
    first = (tmp_path / "a.safetensors").read_bytes()
    assert (tmp_path / "b.safetensors").read_bytes() == first
    assert (tmp_path / "c.safetensors").read_bytes() == first


def test_load_missing_file_names_the_path(tmp_path):
    path = tmp_path / "prepared" / "nothing.safetensors"
    with pytest.raises(FileNotFoundError, match="nothing.safetensors") as err:
        Dataset.load(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "damage",
    [lambda b: b[: len(b) // 2], lambda b: b[:20], lambda b: b"", lambda b: b"not a safetensors file" * 4],
    ids=["truncated-data", "truncated-header", "empty", "garbage"],
)
def test_load_damaged_file_raises_value_error_naming_the_path(tmp_path, damage):
    path = tmp_path / "toy.safetensors"
    small_dataset().save(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError) as err:
        Dataset.load(path)
    assert str(path) in str(err.value)


def test_load_safetensors_without_lmcot_metadata_raises_value_error(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"x_train": torch.zeros(2)}, path, metadata={"format": "pt"})
    with pytest.raises(ValueError) as err:
        Dataset.load(path)
    assert str(path) in str(err.value)


def test_load_model_weights_file_raises_value_error(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError):
        Dataset.load(path)


# --- torchvision data sets ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "folder", "cls"), [("mnist", "MNIST", tvd.MNIST), ("fashion_mnist", "FashionMNIST", tvd.FashionMNIST)]
)
def test_mnist_like_loads_idx_files(tmp_path, name, folder, cls):
    written = write_mnist(tmp_path / folder / "raw")
    ds = load_torchvision(name, tmp_path)
    assert ds.name == name and ds.classes == list(cls.classes)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    expected_train = torch.from_numpy(written["train-images-idx3-ubyte"]).float()[:, None] / 255
    expected_test = torch.from_numpy(written["t10k-images-idx3-ubyte"]).float()[:, None] / 255
    assert torch.equal(ds.x_train, expected_train) and torch.equal(ds.x_test, expected_test)
    assert ds.y_train.tolist() == written["train-labels-idx1-ubyte"].tolist()
    assert ds.y_test.tolist() == written["t10k-labels-idx1-ubyte"].tolist()
    assert ds.x_train[3, 0, 2, 5].item() == pytest.approx(((3 * 37 + 2 * 28 + 5) % 256) / 255, abs=1e-7)  # row 2, col 5

    prepared = prepare(name, {"root": str(tmp_path), "download": False})
    mean, std = channel_stats(prepared.x_train)
    assert mean.abs().max() < 1e-4 and (std - 1).abs().max() < 1e-4
    raw_mean, raw_std = channel_stats(ds.x_train)
    expected = (ds.x_test - raw_mean.view(1, 1, 1, 1)) / raw_std.view(1, 1, 1, 1)
    torch.testing.assert_close(prepared.x_test, expected, rtol=0, atol=1e-5)
    assert torch.equal(prepared.y_test, ds.y_test)


def test_cifar10_loads_python_batches_with_channels_first(tmp_path, skip_cifar_md5):
    x_train, y_train, x_test, y_test = write_cifar(tmp_path)
    ds = load_torchvision("cifar10", tmp_path)
    assert ds.name == "cifar10" and ds.classes == CIFAR_CLASSES
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert torch.equal(ds.x_train, torch.from_numpy(x_train).float() / 255)
    assert torch.equal(ds.x_test, torch.from_numpy(x_test).float() / 255)
    assert ds.y_train.tolist() == y_train and ds.y_test.tolist() == y_test  # batches 1..5 in order
    # spelled out for one pixel: channel c of image k at (row i, column j) is byte c*1024 + i*32 + j of its record
    k, c, i, j = 4, 2, 7, 30
    assert ds.x_train[k, c, i, j].item() == pytest.approx(cifar_row(x_train[k])[c * 1024 + i * 32 + j] / 255, abs=1e-7)

    prepared = prepare("cifar10", {"root": tmp_path, "download": False})
    mean, std = channel_stats(prepared.x_train)
    assert mean.shape == (3,)
    assert mean.abs().max() < 1e-4 and (std - 1).abs().max() < 1e-4
    raw_mean, raw_std = channel_stats(ds.x_train)
    expected = (ds.x_test - raw_mean[None, :, None, None]) / raw_std[None, :, None, None]
    torch.testing.assert_close(prepared.x_test, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_like_missing_files_are_named(tmp_path, name):
    folder = tmp_path / ("MNIST" if name == "mnist" else "FashionMNIST") / "raw"
    write_idx(folder / "train-images-idx3-ubyte", mnist_images(2, 0))
    with pytest.raises(FileNotFoundError) as err:
        load_torchvision(name, tmp_path, download=False)
    message = str(err.value)
    for missing in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert missing in message
    assert "train-images-idx3-ubyte" not in message
    assert str(folder) in message


def test_cifar10_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        prepare("cifar10", {"root": str(tmp_path), "download": False})
    message = str(err.value)
    for missing in ("batches.meta", "data_batch_1", "data_batch_5", "test_batch"):
        assert missing in message
    assert str(tmp_path / "cifar-10-batches-py") in message


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-5])


def _wrong_magic(path):
    data = bytearray(path.read_bytes())
    data[3] = 2  # a 2-dimensional IDX header
    path.write_bytes(bytes(data))


def _gzip(path):
    import gzip

    path.write_bytes(gzip.compress(path.read_bytes()))


def _short(path):
    path.write_bytes(b"\x00\x00\x08")


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_truncate, "truncated or damaged"),
        (_wrong_magic, "magic number"),
        (_gzip, "gzip-compressed"),
        (_short, "header"),
    ],
)
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("file", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_a_damaged_idx_file_is_named(tmp_path, name, file, damage, says):
    folder = tmp_path / ("MNIST" if name == "mnist" else "FashionMNIST") / "raw"
    write_mnist(folder)
    damage(folder / file)
    with pytest.raises(ValueError, match=re.escape(str(folder / file)) + ".*" + says):
        load_torchvision(name, tmp_path)


def test_images_and_labels_of_a_split_must_be_as_many(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_mnist(folder)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(19) % 10)  # 20 images
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: 20 images but train-labels-idx1-ubyte has 19"):
        load_torchvision("mnist", tmp_path)


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_truncate, "not a CIFAR-10 python batch"),
        (lambda p: p.write_bytes(b"not a pickle"), "not a CIFAR-10 python batch"),
        (lambda p: p.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8)})), "without the key.*labels"),
        (lambda p: p.write_bytes(pickle.dumps({"data": np.zeros((2, 100)), "labels": [0, 1]})), r"\(n, 3072\)"),
    ],
)
@pytest.mark.parametrize("file", ["data_batch_3", "test_batch"])
def test_a_damaged_cifar_batch_is_named(tmp_path, skip_cifar_md5, file, damage, says):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / file
    damage(path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + says):
        load_torchvision("cifar10", tmp_path)


def test_a_cifar_meta_file_without_label_names_is_named(tmp_path, skip_cifar_md5):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "batches.meta"
    path.write_bytes(pickle.dumps({"num_vis": 3072}))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*label_names"):
        load_torchvision("cifar10", tmp_path)
