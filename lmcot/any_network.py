"""Align the user's own networks: any model :func:`lmcot.spec_inference.infer_spec` handles, with no code of its own.

:func:`with_inferred_spec` gives a model the ``permutation_spec()`` every alignment method, :func:`permuted_copy`
and the barrier code call, read from its torch.fx graph. It returns a copy with the spec as an instance attribute:
the user's class is untouched and the state dict keeps the model's own keys, so permutations apply to its state
as they stand (and to a checkpoint saved from it).

:func:`load_network` builds such a model from a file: a plain PyTorch state dict (``torch.save(model.state_dict())``)
loaded into an architecture named by ``arch`` (a torchvision model name, or ``"package.module:function"`` that
returns the model), or an lmcot model file (``arch`` None). Every failure is a :class:`lmcot.errors.UserError`
whose one-line message names the file or the architecture and says what would be valid.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import torch
from torch import nn

from lmcot.errors import DamagedFileError, MissingFileError, UserError
from lmcot.permutation import PermutationSpec
from lmcot.spec_inference import infer_spec

NESTED_KEYS = ("state_dict", "model_state_dict", "model")  # where training scripts often keep the weights


class UnknownArchitectureError(UserError, ValueError):
    """``arch`` names neither a torchvision model nor an importable ``package.module:function``."""


class InferredSpec:
    """The ``permutation_spec()`` of a model whose spec was inferred: returns the same spec each call."""

    def __init__(self, spec: PermutationSpec):
        self.spec = spec

    def __call__(self) -> PermutationSpec:
        return self.spec


def with_inferred_spec(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose ``permutation_spec()`` returns the spec inferred from its graph on
    ``example_input`` (a batch of inputs). Raises :class:`lmcot.spec_inference.SpecInferenceError` naming the node
    the inference cannot reason about."""
    model = copy.deepcopy(model).eval()
    spec = infer_spec(model, example_input)
    model.permutation_spec = InferredSpec(spec)  # an instance attribute: deepcopies (permuted_copy) keep it
    return model


def with_spec(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """``model`` (in eval mode) if it has its own ``permutation_spec()`` (lmcot's architectures), else
    :func:`with_inferred_spec`."""
    if callable(getattr(model, "permutation_spec", None)):
        return model.eval()
    return with_inferred_spec(model, example_input)


def build_architecture(arch: str, num_classes: int | None = None) -> nn.Module:
    """An untrained model of architecture ``arch``: a torchvision model name (``resnet18``; built with
    ``weights=None`` and ``num_classes`` when given) or ``"package.module:function"`` (called with no arguments)."""
    if ":" in arch:
        module_name, _, function_name = arch.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError, ValueError) as error:
            raise UnknownArchitectureError(
                f"arch {arch!r}: cannot import {function_name!r} from module {module_name!r} ({error}); "
                "give an importable 'package.module:function' that returns the model"
            ) from None
        try:
            model = function()
        except TypeError as error:  # it needs arguments: the user gives a function that takes none
            raise UnknownArchitectureError(
                f"arch {arch!r}: calling it with no arguments failed ({error}); give a function that builds the model"
            ) from None
        if not isinstance(model, nn.Module):
            raise UnknownArchitectureError(f"arch {arch!r}: returned {type(model).__name__}, not a torch.nn.Module")
        return model
    import torchvision.models

    names = torchvision.models.list_models(module=torchvision.models)  # the classification models
    if arch not in names:
        raise UnknownArchitectureError(
            f"unknown arch {arch!r}: valid are 'package.module:function' or a torchvision model: {', '.join(names)}"
        )
    options = {} if num_classes is None else {"num_classes": num_classes}
    return torchvision.models.get_model(arch, weights=None, **options)


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The tensors of a plain PyTorch checkpoint at ``path``: a state dict, or a dict holding one under
    ``state_dict``, ``model_state_dict`` or ``model``; a ``module.`` prefix on every key (DataParallel) is dropped."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file; give a state dict saved with torch.save(model.state_dict())")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unpickling failure: the file is not a plain checkpoint
        first = str(error).strip().split(". ")[0].splitlines()[0] if str(error).strip() else type(error).__name__
        raise DamagedFileError(
            f"{path}: cannot read it as a PyTorch state dict ({first.rstrip('.')}): not a torch.save file, or it "
            "pickles objects other than tensors; give a file saved with torch.save(model.state_dict())"
        ) from None
    if isinstance(state, dict):
        for key in NESTED_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DamagedFileError(
            f"{path}: holds {type(state).__name__}, not a state dict of tensors; "
            "give a file saved with torch.save(model.state_dict())"
        )
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def read_tensor(path, shape: tuple[int, ...]) -> torch.Tensor:
    """A float tensor ``(samples, *shape)`` saved with ``torch.save`` at ``path`` (inputs for alignment)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file; give a tensor of inputs saved with torch.save")
    try:
        tensor = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # any unpickling failure: not a tensor file
        tensor = None
    if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape[1:]) != tuple(shape) or len(tensor) == 0:
        found = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise DamagedFileError(
            f"{path}: holds {found}, not a tensor of inputs (samples, {', '.join(map(str, shape))}) "
            "saved with torch.save"
        )
    return tensor.float()


def infer_num_classes(state: dict[str, torch.Tensor]) -> int:
    """The rows of the state dict's last matrix: the classifier's outputs in torchvision's models."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    if not matrices:
        raise ValueError("no matrix in the state dict")
    return matrices[-1].shape[0]


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], path, arch: str) -> None:
    """Load ``state`` (all keys, matching shapes) into ``model``; else one line naming the file, the
    architecture and the first keys that do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in own.items() if k in state and
              state[k].shape != v.shape]  # fmt: skip
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape (file vs model)", shapes)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {what}: {', '.join(keys[:3])}{more}")
    if problems:
        raise DamagedFileError(
            f"{path}: the state dict does not fit arch {arch!r} ({'; '.join(problems)}); "
            "give the architecture the checkpoint was saved from"
        )
    model.load_state_dict(state, strict=True)


def load_network(path_or_module, arch: str | None = None, num_classes: int | None = None) -> nn.Module:
    """The model at ``path_or_module`` in eval mode (a module is returned as it is, in eval mode).

    With ``arch``: a plain state dict file (:func:`read_state_dict`) loaded into :func:`build_architecture`'s
    model; a torchvision model gets ``num_classes`` (default: the rows of the state dict's last matrix). Without:
    an lmcot model file (weights or sidecar path, :func:`lmcot.model_files.load_model`).
    """
    if isinstance(path_or_module, nn.Module):
        return path_or_module.eval()
    if arch is None:
        from lmcot.model_files import load_model

        if Path(path_or_module).suffix not in (".safetensors", ".json"):
            raise UnknownArchitectureError(
                f"{path_or_module}: not an lmcot model file (.safetensors with its .json sidecar); "
                "for a plain state dict give its arch (a torchvision model name or 'package.module:function')"
            )
        return load_model(path_or_module)
    state = read_state_dict(path_or_module)
    if num_classes is None and ":" not in arch:
        try:
            num_classes = infer_num_classes(state)
        except ValueError:
            num_classes = None
    model = build_architecture(arch, num_classes)
    load_state_into(model, state, path_or_module, arch)
    return model.eval()
