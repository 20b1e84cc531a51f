"""Align the user's own networks: any model :func:`lmcot.spec_inference.infer_spec` handles, with no code of its own.

:func:`with_inferred_spec` gives a model the ``permutation_spec()`` every alignment method, :func:`permuted_copy`
and the barrier code call, read from its torch.fx graph. It returns a copy with the spec as an instance attribute:
the user's class is untouched and the state dict keeps the model's own keys, so permutations apply to its state
as they stand (and to a checkpoint saved from it). The copy also gets the ``hidden_activations(x)`` and
``layer_inputs(x)`` that the methods reading data call (:class:`ProducerOutputs`, :class:`LayerInputs`), read with
forward hooks on the modules the spec names.

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

from lmcot.errors import DamagedFileError, MissingFileError, UnsupportedModelError, UserError
from lmcot.models.base import _channels_last
from lmcot.permutation import PermutationSpec, incoming_matrices
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


def module_tensors(model: nn.Module, where: dict[str, tuple[str, str]], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per key of ``where`` (key -> ``(module, which)``: a module's qualified name in ``model`` and ``"input"`` or
    ``"output"``), that module's first input or its output in one forward pass of ``model`` on ``x``; a module run
    several times gives its tensors concatenated along the batch axis.

    Each tensor is cloned the moment a hook sees it (an input before the module runs, an output as soon as it is
    made): a later in-place op (``nn.ReLU(inplace=True)``, a residual ``out += identity``) would otherwise
    overwrite what was kept."""
    seen: dict[tuple[str, str], list[torch.Tensor]] = {place: [] for place in where.values()}

    def keep(place):
        if place[1] == "input":
            return lambda module, inputs: seen[place].append(inputs[0].detach().clone())
        return lambda module, inputs, output: seen[place].append(output.detach().clone())

    handles = []
    try:
        for name, which in seen:
            module = model.get_submodule(name)
            register = module.register_forward_pre_hook if which == "input" else module.register_forward_hook
            handles.append(register(keep((name, which))))
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return {key: torch.cat(seen[place]) for key, place in where.items()}


def stating_modules(model: nn.Module, spec: PermutationSpec) -> dict[str, str]:
    """Permutation name -> qualified name of the module that states it in its ``symmetry(prefix)`` (an attention's
    ``<module>.qk`` and ``<module>.vo``), for the permutations of ``spec`` named after no module of their own."""
    owners = {}
    for owner, module in model.named_modules():
        if callable(getattr(module, "symmetry", None)):
            owners |= {name: owner for name in module.symmetry(owner)[0].names if name in spec.axes}
    return owners


class ProducerOutputs:
    """``hidden_activations(x)`` of a model whose spec was inferred: per permutation, the ``(samples, units)``
    outputs of its producer, the Linear/Conv it is named after (the first in running order whose weight's axis 0
    it permutes). A Conv's ``(batch, channels, *spatial)`` outputs count each position as a sample
    (``(batch * positions, channels)``); a Linear's ``(..., units)``, each leading index. A permutation stated by a
    module (:func:`stating_modules`) gets what that module's ``hidden_activations(input, prefix)`` gives
    (:meth:`lmcot.models.transformer.SelfAttention.hidden_activations`); a module without one is refused.

    These are the producer's own outputs: the pre-activations where an activation (or a BatchNorm) follows,
    unlike lmcot's architectures, whose ``hidden_activations`` are post-activation. Held by the model as an
    instance attribute that refers to it, so a deepcopy of the model refers to the copy."""

    def __init__(self, model: nn.Module, names: list[str], owners: dict[str, str] | None = None):
        self.model, self.names, self.owners = model, list(names), dict(owners or {})

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for name, owner in self.owners.items():
            module = self.model.get_submodule(owner)
            if not callable(getattr(module, "hidden_activations", None)):
                raise UnsupportedModelError(
                    f"hidden activations (activation matching, activation covariance): permutation {name!r} is stated "
                    f"by {type(module).__name__} {owner!r}, which has no hidden_activations(x, prefix) giving its "
                    "units' activations; use a method that reads weights only (weight_matching)"
                )
        modules = dict(self.model.named_modules())
        for name in self.names:
            if name not in self.owners and name not in modules:
                raise UnsupportedModelError(
                    f"hidden activations (activation matching, activation covariance): permutation {name!r} is no "
                    "module's output (units inside nn.MultiheadAttention, or a section of a layer's outputs that a "
                    "split cuts), which hooks cannot read; use a method that reads weights only (weight_matching)"
                )
        where = {name: (self.owners[name], "input") if name in self.owners else (name, "output") for name in self.names}
        tensors, stated, acts = module_tensors(self.model, where, x), {}, {}
        for name in self.names:
            module = self.model.get_submodule(where[name][0])
            if name in self.owners:  # the module's inner permutations, from its input; once per module
                owner = self.owners[name]
                if owner not in stated:
                    with torch.no_grad():
                        stated[owner] = module.hidden_activations(tensors[name], owner)
                acts[name] = stated[owner][name]
            elif isinstance(module, nn.modules.conv._ConvNd):
                acts[name] = _channels_last(tensors[name])  # (batch, channels, *spatial)
            else:  # a Linear, or a module stating its symmetry whose output starts a stream: (..., units)
                acts[name] = tensors[name].reshape(-1, tensors[name].shape[-1])
        return acts


class LayerInputs:
    """``layer_inputs(x)`` of a model whose spec was inferred: per permutation, the ``(samples, fan_in)`` inputs of
    the one Linear or 2-D Conv whose weight is its units' incoming matrix (:func:`layer_input_modules`), columns
    in the order of ``weight.flatten(1)`` (a Conv's: the unfolded ``(batch * positions, in_channels * kernel)``
    patches); a permutation stated by a module with a ``layer_inputs(input, prefix)`` gets what that gives
    (:meth:`lmcot.models.transformer.SelfAttention.layer_inputs`). Where some permutation has neither, calling it
    raises a :class:`UnsupportedModelError` saying which and why."""

    def __init__(self, model: nn.Module, modules: dict[str, str] | None, refusal: str | None = None):
        self.model, self.modules, self.refusal = model, modules, refusal

    def __call__(self, x: torch.Tensor, with_state: bool = False) -> dict[str, torch.Tensor]:
        if with_state:  # covariance matching's fixed point for units that read themselves through a square weight
            raise UnsupportedModelError(
                "layer inputs with the units' own outputs (covariance-aware matching of units that read themselves "
                "through a square weight): hooks give a layer's input, not that state; use recurrent_iterations=0 "
                "or weight_matching"
            )
        if self.refusal is not None:
            raise UnsupportedModelError(
                f"layer inputs (covariance-aware matching): {self.refusal}; use a method that does not read them"
            )
        inputs = module_tensors(self.model, {name: (owner, "input") for name, owner in self.modules.items()}, x)
        columns, stated = {}, {}
        for name, h in inputs.items():
            owner = self.modules[name]
            layer = self.model.get_submodule(owner)
            if isinstance(layer, nn.Linear):
                columns[name] = h.reshape(-1, h.shape[-1])
            elif isinstance(layer, nn.Conv2d):
                patches = nn.functional.unfold(h, layer.kernel_size, padding=layer.padding, stride=layer.stride)
                columns[name] = patches.transpose(1, 2).flatten(0, 1)
            else:  # a module stating its symmetry: its inner permutations' inputs, once per module
                if owner not in stated:
                    with torch.no_grad():
                        stated[owner] = layer.layer_inputs(h, owner)
                columns[name] = stated[owner][name]
        return columns


def layer_input_modules(model: nn.Module, spec: PermutationSpec) -> tuple[dict[str, str] | None, str | None]:
    """Per permutation, the qualified name of the module whose weight is the one incoming matrix of its units
    (:func:`lmcot.permutation.incoming_matrices`, with the permutations before it in spec order solved): a Linear,
    or a Conv2d of dilation 1, one group, numeric zero padding; for a permutation stated by a module with its own
    ``layer_inputs(x, prefix)`` (:func:`stating_modules`), that module. Returns ``(names, None)``, or
    ``(None, why)`` naming the first permutation that has neither."""
    state, modules, owners = model.state_dict(), {}, stating_modules(model, spec)
    for i, name in enumerate(spec.names):
        try:
            matrices = incoming_matrices(spec, name, state, spec.names[:i])
        except ValueError as error:
            return None, f"permutation {name!r}: {error}"
        if name in owners and callable(getattr(model.get_submodule(owners[name]), "layer_inputs", None)):
            modules[name] = owners[name]  # the module says what its units read
            continue
        if len(matrices) != 1:
            return None, (
                f"permutation {name!r} has {len(matrices)} incoming weight matrices ({', '.join(matrices)}), "
                "not one layer's: the layers writing to it see different inputs"
            )
        owner, _, attribute = matrices[0].rpartition(".")
        layer = model.get_submodule(owner) if attribute == "weight" else None
        conv = isinstance(layer, nn.Conv2d)
        if not (isinstance(layer, nn.Linear) or conv):
            return None, f"permutation {name!r}: its incoming matrix {matrices[0]!r} is not a Linear or Conv2d weight"
        if conv and not (
            layer.dilation == (1, 1)
            and layer.groups == 1
            and layer.padding_mode == "zeros"
            and isinstance(layer.padding, tuple)
        ):
            return None, (
                f"permutation {name!r}: Conv2d {owner!r} has dilation {layer.dilation}, {layer.groups} groups, "
                f"padding {layer.padding!r} ({layer.padding_mode}); only dilation 1, one group and numeric zero "
                "padding are unfolded"
            )
        modules[name] = owner
    return modules, None


def with_inferred_spec(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose ``permutation_spec()`` returns the spec inferred from its graph on
    ``example_input`` (a batch of inputs), with ``hidden_activations(x)`` (:class:`ProducerOutputs`) and
    ``layer_inputs(x)`` (:class:`LayerInputs`). Raises :class:`lmcot.spec_inference.SpecInferenceError` naming
    the node the inference cannot reason about."""
    model = copy.deepcopy(model).eval()
    spec = infer_spec(model, example_input)
    # instance attributes: deepcopies (permuted_copy) keep them, referring to the copy
    model.permutation_spec = InferredSpec(spec)
    model.hidden_activations = ProducerOutputs(model, spec.names, stating_modules(model, spec))
    model.layer_inputs = LayerInputs(model, *layer_input_modules(model, spec))
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
        found = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
    except Exception:  # any unpickling failure: not a tensor file
        tensor, found = None, "nothing that torch.load reads"
    if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape[1:]) != tuple(shape) or len(tensor) == 0:
        raise DamagedFileError(
            f"{path}: holds {found}, not a tensor of inputs (samples, {', '.join(map(str, shape))}) "
            "saved with torch.save"
        )
    return tensor.float()


def infer_num_classes(state: dict[str, torch.Tensor]) -> int:
    """The rows of the state dict's last weight of a Linear or Conv (two or more axes): the classifier's outputs in
    torchvision's models (SqueezeNet's is a 1 x 1 convolution)."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() >= 2]
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
    model.load_state_dict(state)  # strict: every key was checked above


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
