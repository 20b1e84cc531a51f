"""The labelled samples ``python -m lmcot barrier`` evaluates on: the user's own data or one of lmcot's data sets.

``--data`` names one of three kinds (:func:`data_kind`):

- ``"images"``: a folder in torchvision's ImageFolder layout (``root/<class>/<image>``; classes sorted by name are
  labels 0, 1, ...), read by :func:`read_image_folder`;
- ``"tensors"``: a file saved with ``torch.save`` holding inputs and labels, or inputs alone with the labels in a
  second file (:func:`read_labelled_tensors`);
- ``"dataset"``: a prepared data set file (``data/prepared/<name>.safetensors``) or the name of an offline data
  set (:func:`lmcot.data.dataset_source`), evaluated on its train and test splits.

Every failure is a :class:`lmcot.errors.UserError` whose one-line message names the file and says what would be
valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lmcot.errors import DamagedFileError, MissingFileError, UserError

KINDS = ("images", "tensors", "dataset")
TENSOR_FILE = (
    "a torch.save'd dict {'inputs': float tensor (N, ...), 'labels': integer tensor (N,)}, or a tuple "
    "(inputs, labels), or the inputs alone with --labels"
)


@dataclass
class LabelledData:
    """Per split, inputs ``(N, *input_shape)`` float32 and labels ``(N,)`` int64; ``inputs``
    ``(samples, *input_shape)``: the samples that alignment methods and normalisation corrections read."""

    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    inputs: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.inputs.shape[1:])


def data_kind(text: str) -> str:
    """Which of :data:`KINDS` ``text`` names: a folder is ``"images"``, an offline data set's name or a
    ``.safetensors`` file ``"dataset"``, any other file ``"tensors"``. Reads nothing; a missing path or an unknown
    name is a :class:`UserError` listing what is valid."""
    from lmcot.data import OFFLINE, dataset_source

    path = Path(text)
    if path.is_dir():
        return "images"
    if path.is_file() and path.suffix != ".safetensors":
        return "tensors"
    try:
        dataset_source(text)
    except MissingFileError:
        raise MissingFileError(
            f"{path}: no such file; give a prepared data set file (data/prepared/<name>.safetensors), a torch.save'd "
            f"file of inputs and labels, an image folder (root/<class>/<image>) or an offline data set's name: "
            f"{', '.join(OFFLINE)}"
        ) from None
    except UserError:
        raise UserError(
            f"unknown data set {text!r}; valid names: {', '.join(OFFLINE)} (or the path of a prepared data set file, "
            "a torch.save'd file of inputs and labels, or an image folder)"
        ) from None
    return "dataset"


def _load(path: Path, what: str):
    """The object ``torch.save`` wrote at ``path`` (tensors only); ``what`` says what the file should hold."""
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file; give {what}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # any unpickling failure: not a file of tensors
        raise DamagedFileError(f"{path}: cannot read it with torch.load; give {what}") from None


def _described(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    if isinstance(value, dict):
        return f"a dict with keys {', '.join(map(repr, value)) or 'none'}"
    return f"a {type(value).__name__}"


def read_labelled_tensors(path, labels_path=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(N, ...)`` float32 and labels ``(N,)`` int64 from ``path``: a dict with ``inputs`` and ``labels``,
    a tuple or list ``(inputs, labels)``, or the inputs tensor alone with the labels ``(N,)`` in ``labels_path``
    (each saved with ``torch.save``)."""
    path = Path(path)
    held = _load(path, TENSOR_FILE)
    if isinstance(held, dict) and {"inputs", "labels"} <= held.keys():
        inputs, labels = held["inputs"], held["labels"]
    elif isinstance(held, tuple | list) and len(held) == 2:
        inputs, labels = held
    elif isinstance(held, torch.Tensor):
        if labels_path is None:
            raise UserError(f"{path}: holds inputs only ({_described(held)}); give their labels with --labels FILE")
        inputs, labels = held, None
    else:
        raise DamagedFileError(f"{path}: holds {_described(held)}; give {TENSOR_FILE}")
    if labels is not None and labels_path is not None:
        raise UserError(f"--labels {labels_path}: {path} holds its own labels; give --labels only with inputs alone")
    if labels is None:
        labels_path = Path(labels_path)
        labels, path_of_labels = _load(labels_path, "a torch.save'd integer tensor of labels (N,)"), labels_path
    else:
        path_of_labels = path
    if not (isinstance(inputs, torch.Tensor) and inputs.is_floating_point() and inputs.dim() >= 2 and len(inputs)):
        raise DamagedFileError(f"{path}: its inputs are {_described(inputs)}; give a float tensor (N, ...), N > 0")
    integer = isinstance(labels, torch.Tensor) and not labels.is_floating_point() and not labels.is_complex()
    if not (integer and labels.dtype != torch.bool and labels.dim() == 1 and len(labels) == len(inputs)):
        raise DamagedFileError(
            f"{path_of_labels}: its labels are {_described(labels)}; give an integer tensor ({len(inputs)},), "
            "one class index per input"
        )
    if labels.min() < 0:
        raise DamagedFileError(f"{path_of_labels}: a label is {int(labels.min())}; class indices start at 0")
    return inputs.float(), labels.long()


def read_image_folder(
    root, image_size: tuple[int, ...] | None = None, mean=None, std=None, grayscale: bool = False
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images ``(N, channels, height, width)`` float32 in [0, 1] (3 channels, or 1 with ``grayscale``), resized to
    ``image_size`` (height, width; one number: a square) when given and then normalised by ``mean`` and ``std``
    (one value per channel, or one for all) when given; their labels ``(N,)`` int64 (the class folders sorted by
    name are 0, 1, ...); and the class names."""
    from PIL import UnidentifiedImageError
    from torchvision import datasets, transforms

    root = Path(root)
    if (mean is None) != (std is None):
        raise UserError("--mean and --std: give both or neither")
    channels = 1 if grayscale else 3
    for name, values in (("--mean", mean), ("--std", std)):
        if values is not None and len(values) not in (1, channels):
            raise UserError(f"{name}: {len(values)} values for images of {channels} channels; give 1 or {channels}")
    if std is not None and min(std) <= 0:
        raise UserError(f"--std: {','.join(map(str, std))} has a value that is not positive")
    steps = [transforms.Grayscale(1)] if grayscale else []
    if image_size is not None:
        size = (image_size[0], image_size[0]) if len(image_size) == 1 else tuple(image_size)
        steps.append(transforms.Resize(size))
    steps.append(transforms.ToTensor())
    steps += [transforms.Normalize(mean, std)] if mean is not None else []
    try:
        folder = datasets.ImageFolder(str(root), transform=transforms.Compose(steps))
    except FileNotFoundError as error:  # no class folder, or a class folder without images
        raise UserError(
            f"{root}: not an image folder ({str(error).splitlines()[0].rstrip('.')}); give a folder of class "
            "folders of images, root/<class>/<image>"
        ) from None
    images, labels = [], []
    for index, (file, _) in enumerate(folder.samples):
        try:
            image, label = folder[index]
        except (UnidentifiedImageError, OSError) as error:
            raise DamagedFileError(f"{file}: cannot read it as an image ({type(error).__name__})") from None
        if images and image.shape != images[0].shape:
            raise UserError(
                f"{file}: is {tuple(image.shape[1:])} (height, width) but {folder.samples[0][0]} is "
                f"{tuple(images[0].shape[1:])}; give --image-size to resize every image to one size"
            )
        images.append(image)
        labels.append(label)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), list(folder.classes)


def labelled_data(text: str, kind: str, params: dict, labels=None, **image_options) -> LabelledData:
    """The samples of ``--data`` ``text`` of :func:`data_kind` ``kind``: an image folder (read with
    ``image_options``, :func:`read_image_folder`'s) or a tensor file (``labels``: the file of its labels, if apart)
    is one split ``"data"``, its inputs also the ones alignment and corrections read; a data set is its train split
    (the first ``barrier.train_samples`` of ``params``) and its test split, its train inputs the ones read."""
    from lmcot.data import dataset_source, open_dataset

    if kind == "images":
        x, y, classes = read_image_folder(text, **image_options)
        return LabelledData({"data": (x, y)}, x, len(classes))
    if kind == "tensors":
        x, y = read_labelled_tensors(text, labels)
        return LabelledData({"data": (x, y)}, x, int(y.max()) + 1)
    data = open_dataset(dataset_source(text), params["prepare"])
    train = tuple(t[: params["barrier"]["train_samples"]] for t in data.split("train"))
    return LabelledData({"train": train, "test": data.split("test")}, data.x_train, data.num_classes)
