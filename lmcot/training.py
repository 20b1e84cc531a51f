"""Training: one seed of one configuration, reproducibly, with data held in memory as tensors."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from lmcot.choices import OPTIMIZERS
from lmcot.data import Dataset
from lmcot.design import stream_seed
from lmcot.errors import UserError
from lmcot.evaluation import evaluate
from lmcot.io import atomic_path
from lmcot.models import build_model

if TYPE_CHECKING:
    from lmcot.config import Configuration

log = logging.getLogger(__name__)


class DivergedError(UserError, FloatingPointError):
    """A run whose train loss stopped being finite; the message names the run, seed and step."""


@dataclass(frozen=True)
class Recipe:
    """How to train: the ``train.recipe`` params plus the configuration's learning rate.

    The defaults are the study's (params.yaml ships the same values; tests/test_config.py checks that they
    agree), so ``Recipe(lr=0.05)`` in a notebook trains as ``dvc repro`` does."""

    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0005
    epochs: int = 20
    batch_size: int = 128
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    warmup_steps: int = 0  # a warm-up of this many optimiser steps instead of warmup_epochs

    def lr_factor(self, step: int, steps_per_epoch: int) -> float:
        """Multiplier of ``lr`` at optimiser step ``step``: linear warm-up over ``warmup_steps`` steps (or
        ``warmup_epochs`` epochs), then constant or cosine to 0 at the last step."""
        warmup = self.warmup_steps or round(self.warmup_epochs * steps_per_epoch)
        total = self.epochs * steps_per_epoch
        if step < warmup:
            return (step + 1) / warmup
        if self.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Checkpoint:
    """Where :func:`fit` saves its whole state every ``every`` epochs, and resumes from.

    ``key`` identifies the run (architecture, recipe, seeds, data); a checkpoint saved under another key,
    or one that cannot be read, is ignored with a warning and training starts afresh.
    """

    path: Path
    key: str
    every: int = 1

    def save(self, state: dict) -> None:
        with atomic_path(self.path) as tmp:  # a kill while saving leaves the previous checkpoint whole
            torch.save({"key": self.key, **state}, tmp)

    def load(self) -> dict | None:
        if not Path(self.path).exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # any damage: a checkpoint is only a shortcut
            log.warning("%s: cannot read the checkpoint (%s); training from the start", self.path, err)
            return None
        if state.get("key") != self.key:
            log.warning("%s: checkpoint of another run (params or data changed); training from the start", self.path)
            return None
        return state

    def remove(self) -> None:
        Path(self.path).unlink(missing_ok=True)


def make_optimizer(params, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``params``. SGD and Adam act element by element, so stacked
    parameters of several models are updated exactly as if each model had its own optimiser."""
    params = list(params)
    fused = {"fused": True}  # one kernel per tensor for the whole update (CPU and CUDA)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, **fused
        )
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay, **fused)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")


def _flip(stacked: torch.Tensor) -> torch.Tensor:
    """Swap the two axes of each model's matrix in a stack ``(seeds, a, b)``; other tensors pass."""
    return stacked.transpose(1, 2) if stacked.dim() == 3 else stacked


class StackedModels:
    """Several models of one architecture run as one: parameters stacked on a leading seed axis.

    ``stack(x)`` maps ``x`` of shape ``(seeds, batch, *input_shape)`` (or ``(batch, *input_shape)``
    with ``shared_input=True``) to logits ``(seeds, batch, classes)``, so each layer is one batched
    matmul over all seeds instead of one small matmul per seed: through the architecture's own
    ``stacked_forward`` where it has one, else through ``torch.func.vmap`` of its ``forward``.

    ``params`` are the leaf tensors to optimise. Matrices (``Linear`` weights, ``(out, in)`` per
    model) are stored transposed, ``(seeds, in, out)``: ``x @ W.T`` then reads them in their stored
    layout, and autograd writes their gradients contiguously instead of copying a transposed
    gradient at every step (a third of the step time at width 1024). Optimisers act element by
    element, so the layout changes nothing else.
    """

    def __init__(self, models: list[torch.nn.Module], device="cpu"):
        self.template = deepcopy(models[0]).to("meta")  # structure only; tensors come from the stack
        params, self.buffers = stack_module_state([m.to(device) for m in models])
        self.params = {k: _flip(v).contiguous().detach().requires_grad_() for k, v in params.items()}
        self.count = len(models)

    def _forward(self, params, buffers, x):
        return functional_call(self.template, (params, buffers), (x,))

    def __call__(self, x: torch.Tensor, shared_input: bool = False) -> torch.Tensor:
        params = {k: _flip(v) for k, v in self.params.items()}  # views in each model's own layout
        if hasattr(self.template, "stacked_forward") and not self.buffers:
            x = x.expand(self.count, *x.shape) if shared_input else x
            return self.template.stacked_forward(params, x)
        return vmap(self._forward, in_dims=(0, 0, None if shared_input else 0))(params, self.buffers, x)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> list[dict]:
        """Per model: mean cross-entropy (nats) and accuracy on ``(x, y)``, as :func:`evaluate` gives."""
        loss = torch.zeros(self.count, dtype=torch.float64, device=x.device)
        correct = torch.zeros(self.count, dtype=torch.int64, device=x.device)
        for start in range(0, len(x), batch_size):
            logits = self(x[start : start + batch_size], shared_input=True)
            target = y[start : start + batch_size].expand(self.count, -1)
            loss += F.cross_entropy(logits.transpose(1, 2), target, reduction="none").sum(1).double()
            correct += (logits.argmax(2) == target).sum(1)
        return [
            {"loss": lo / len(x), "accuracy": c / len(x)} for lo, c in zip(loss.tolist(), correct.tolist(), strict=True)
        ]

    def state(self) -> dict[str, torch.Tensor]:
        """Every trained tensor (parameters and buffers), for a checkpoint."""
        return {f"param.{k}": v.detach() for k, v in self.params.items()} | {
            f"buffer.{k}": v for k, v in self.buffers.items()
        }

    @torch.no_grad()
    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a :meth:`state` back in place (the optimiser keeps pointing at the same tensors)."""
        for k, v in self.params.items():
            v.copy_(state[f"param.{k}"])
        for k, v in self.buffers.items():
            v.copy_(state[f"buffer.{k}"])

    def unstack(self, build) -> list[torch.nn.Module]:
        """The models as separate CPU ``nn.Module``s; ``build()`` makes an empty one of the architecture."""
        models = []
        for s in range(self.count):
            model = build()
            state = {k: _flip(v)[s] for k, v in self.params.items()} | {k: v[s] for k, v in self.buffers.items()}
            model.load_state_dict({k: v.detach().cpu() for k, v in state.items()})
            models.append(model.eval())
        return models


class SeparateModels:
    """The :class:`StackedModels` interface over models kept apart, one forward pass each: for
    architectures with buffers updated in training (BatchNorm), which ``vmap`` cannot batch."""

    def __init__(self, models: list[torch.nn.Module], device="cpu"):
        self.models = [m.to(device) for m in models]
        self.params = {f"{i}.{k}": p for i, m in enumerate(self.models) for k, p in m.named_parameters()}
        self.count = len(models)

    def __call__(self, x: torch.Tensor, shared_input: bool = False) -> torch.Tensor:
        return torch.stack([m(x if shared_input else x[i]) for i, m in enumerate(self.models)])

    def train(self, mode: bool = True) -> None:
        for model in self.models:
            model.train(mode)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> list[dict]:
        self.train(False)
        results = [evaluate(m, x, y, batch_size) for m in self.models]
        self.train(True)
        return results

    def state(self) -> dict[str, torch.Tensor]:
        return {f"{i}.{k}": v.detach() for i, m in enumerate(self.models) for k, v in m.state_dict().items()}

    @torch.no_grad()
    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for i, m in enumerate(self.models):
            for k, v in m.state_dict().items():
                v.copy_(state[f"{i}.{k}"])

    def unstack(self, build=None) -> list[torch.nn.Module]:
        return [m.cpu().eval() for m in self.models]


def train_models(
    data: Dataset,
    arch: str,
    width: int,
    depth: int,
    recipe: Recipe,
    seeds: list[int],
    device="cpu",
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
    desc: str | None = None,
    heads: int | None = None,
    streams: list[int] | None = None,
) -> tuple[list[torch.nn.Module], list[list[dict]]]:
    """Train one model per seed, all at once; return the models and their histories.

    A history has one dict of train/test loss and accuracy per epoch: train figures are averages
    over the epoch's mini-batches, except in the last epoch, where both splits are evaluated. Seed ``s`` fixes the
    initialisation (``torch.manual_seed(s)`` before building) and the order of mini-batches
    (a generator seeded with ``s``), so each model is the one :func:`train_model` gives for ``s``
    alone, up to float round-off, and the same arguments give bit-identical weights on one machine.
    Raises :class:`DivergedError` (a ``FloatingPointError``) naming ``desc``, the seed and the first step whose
    loss is not finite. ``heads``: the attention heads of a transformer (``lmcot.models.build_model``).
    ``streams``: the seeds of the random streams, one per seed (default: the seeds themselves); ``seeds`` then
    only name the models in logs and errors.
    """
    streams = list(seeds) if streams is None else list(streams)
    models = []
    for stream in streams:
        torch.manual_seed(stream)
        models.append(build_model(arch, data.input_shape, data.num_classes, width, depth, heads))
    desc = desc or f"{arch} width {width}, {len(seeds)} seeds"
    return fit(models, data, recipe, seeds, device, progress, desc=desc, checkpoint=checkpoint, streams=streams)


def fit(
    models: list[torch.nn.Module],
    data: Dataset,
    recipe: Recipe,
    seeds: list[int],
    device="cpu",
    progress: bool = True,
    desc: str = "training",
    checkpoint: Checkpoint | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    streams: list[int] | None = None,
) -> tuple[list[torch.nn.Module], list[list[dict]]]:
    """Train ``models`` (of one architecture and size) by ``recipe``, model ``k`` drawing mini-batches
    in the order seeded by ``streams[k]`` (default: ``seeds[k]``; ``seeds`` name the models in logs); return
    the trained models (new objects on the CPU) and their histories (see :func:`train_models`). Used for
    training from scratch and for fine-tuning.

    With ``checkpoint``, the weights, optimiser state, mini-batch generators and histories are saved
    every ``checkpoint.every`` epochs, and a matching checkpoint found at the start is resumed from: the
    result is bit-identical to an uninterrupted run. ``on_epoch_end(epoch)`` is called after each epoch
    (1-based) and its checkpoint."""
    models = [deepcopy(m) for m in models]
    has_buffers = any(True for m in models for _ in m.buffers())
    stack = SeparateModels(models, device) if has_buffers else StackedModels(models, device)
    if has_buffers:
        stack.train(True)
    optimizer = make_optimizer(stack.params.values(), recipe)
    orders = [torch.Generator().manual_seed(stream) for stream in (seeds if streams is None else streams)]
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    n = len(x_train)
    histories = [[] for _ in seeds]
    step, start = 0, 0
    saved = checkpoint.load() if checkpoint else None
    if saved is not None:
        step, start, histories = _resume(saved, stack, optimizer, orders)
        log.info("%s: resuming from the checkpoint of epoch %d/%d (%s)", desc, start, recipe.epochs, checkpoint.path)
    epochs = tqdm(range(start, recipe.epochs), desc=desc, leave=False, disable=not progress, initial=start)
    for epoch in epochs:
        step, loss_sum, correct, first_bad_step = _train_epoch(stack, optimizer, orders, x_train, y_train, recipe, step)
        # train metrics are averaged over the epoch's mini-batches (no extra pass); test is evaluated
        train = [{"loss": lo / n, "accuracy": c / n} for lo, c in zip(loss_sum.tolist(), correct.tolist(), strict=True)]
        last_epoch = epoch + 1 == recipe.epochs
        train = stack.evaluate(x_train, y_train) if last_epoch else train  # exact final figures
        test = stack.evaluate(x_test, y_test)
        _record_epoch(histories, train, test, first_bad_step.tolist(), epoch, seeds, desc, recipe)
        epochs.set_postfix(
            train_loss=f"{max(t['loss'] for t in train):.3f}", test_acc=f"{min(t['accuracy'] for t in test):.3f}"
        )
        if checkpoint and (epoch + 1) % checkpoint.every == 0 and epoch + 1 < recipe.epochs:
            checkpoint.save(
                {
                    "models": stack.state(),
                    "optimizer": optimizer.state_dict(),
                    "generators": [g.get_state() for g in orders],
                }
                | {"step": step, "epoch": epoch + 1, "histories": histories}
            )
            log.debug("%s: checkpoint of epoch %d saved to %s", desc, epoch + 1, checkpoint.path)
        if on_epoch_end:
            on_epoch_end(epoch + 1)
    for seed, history in zip(seeds, histories, strict=True):
        log.info(
            "seed %d: train loss %.4f, test accuracy %.4f",
            seed,
            history[-1]["train_loss"],
            history[-1]["test_accuracy"],
        )
    return stack.unstack(lambda: deepcopy(models[0]).cpu()), histories


def _resume(saved: dict, stack, optimizer, orders) -> tuple[int, int, list[list[dict]]]:
    """Load a checkpoint's weights, optimiser state and mini-batch generators; return its step, epoch and
    histories."""
    stack.load_state(saved["models"])
    optimizer.load_state_dict(saved["optimizer"])
    for g, generator_state in zip(orders, saved["generators"], strict=True):
        g.set_state(generator_state)
    return saved["step"], saved["epoch"], saved["histories"]


def _train_epoch(stack, optimizer, orders, x_train, y_train, recipe: Recipe, step: int):
    """One epoch of every model, each over its own shuffled order of the samples. Returns the step after it,
    and per model (tensors of length ``len(orders)``) the summed train loss, the correct predictions and the
    first step whose loss was not finite (-1: none)."""
    n, count = len(x_train), len(orders)
    device = x_train.device
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    order = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(device)  # (seeds, n)
    loss_sum = torch.zeros(count, dtype=torch.float64, device=device)
    first_bad_step = torch.full((count,), -1, dtype=torch.int64, device=device)  # no sync per step
    correct = torch.zeros(count, dtype=torch.int64, device=device)
    for batch in order.split(recipe.batch_size, dim=1):  # (seeds, batch) sample indices
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr * recipe.lr_factor(step, steps_per_epoch)
        logits, target = stack(x_train[batch]), y_train[batch]
        losses = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view(count, -1)
        # sum over seeds of each seed's mean loss: each seed's gradient is its own loss's gradient
        loss = losses.mean(1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        batch_loss = losses.detach().sum(1).double()
        first_bad_step = torch.where(~batch_loss.isfinite() & (first_bad_step < 0), step, first_bad_step)
        step += 1
        loss_sum += batch_loss
        correct += (logits.detach().argmax(2) == target).sum(1)
    return step, loss_sum, correct, first_bad_step


def _record_epoch(histories, train, test, first_bad_steps, epoch: int, seeds, desc: str, recipe: Recipe) -> None:
    """Append each model's epoch metrics to its history, after checking that its loss stayed finite."""
    for seed, history, tr, te, bad in zip(seeds, histories, train, test, first_bad_steps, strict=True):
        _check_finite_loss(tr["loss"], bad, epoch, desc, recipe, seed)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": tr["loss"],
                "train_accuracy": tr["accuracy"],
                "test_loss": te["loss"],
                "test_accuracy": te["accuracy"],
            }
        )


def _check_finite_loss(train_loss: float, bad_step: int, epoch: int, desc: str, recipe: Recipe, seed: int) -> None:
    """Raise :class:`DivergedError` if a step of this epoch (``bad_step`` >= 0) or the epoch's loss was not finite."""
    if bad_step >= 0 or not math.isfinite(train_loss):
        at = f"step {bad_step} (epoch {epoch + 1})" if bad_step >= 0 else f"epoch {epoch + 1}"
        raise DivergedError(
            f"training diverged: {desc}, lr={recipe.lr}, seed={seed}: the train loss is not finite at "
            f"{at}; nothing of this configuration is saved. Lower the learning rate, or leave it out "
            "of the sweep; `dvc repro --keep-going` finishes the other configurations"
        )


def train_model(
    data: Dataset, arch: str, width: int, depth: int, recipe: Recipe, seed: int, device="cpu", progress: bool = True
) -> tuple[torch.nn.Module, list[dict]]:
    """Train one model (see :func:`train_models`); return it and its history."""
    models, histories = train_models(data, arch, width, depth, recipe, [seed], device, progress)
    return models[0], histories[0]


def run_key(config: Configuration, recipe: dict, seeds: list[int], device, data_sha256: str) -> str:
    """What the weights of ``config``'s seeds depend on, hashed: the :class:`Checkpoint` key of their training
    (the configuration, the ``train.recipe`` params, the seeds, the device and the data file's SHA-256)."""
    run = {**config.as_dict(), "recipe": recipe, "seeds": seeds, "device": str(device)}
    run["data"] = data_sha256
    return hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()


@dataclass
class TrainedSeed:
    """One trained seed: the model, its sidecar's configuration (what rebuilds it, as
    :func:`lmcot.model_files.save_model` takes it) and its last epoch's figures."""

    seed: int
    model: torch.nn.Module
    sidecar: dict
    metrics: dict


@dataclass
class TrainedConfiguration:
    """Every seed of a configuration, and the per-epoch history rows of all of them (a ``seed`` column first)."""

    seeds: list[TrainedSeed]
    history: list[dict]


def train_configuration(
    config: Configuration, data: Dataset, recipe: dict, seeds: list[int], device="cpu", checkpoint=None
) -> TrainedConfiguration:
    """Train every seed of ``config`` together (:func:`train_models`) by the ``train.recipe`` params ``recipe``
    at the configuration's learning rate, saving to and resuming from ``checkpoint`` if given.

    Seed ``s`` trains from the random stream :func:`lmcot.design.stream_seed` derives from the configuration's
    name and ``s``: seed 0 of two widths or two learning rates shares neither initial weights nor mini-batch
    order, so models of different configurations are independent samples."""
    full_recipe = Recipe(lr=float(config.lr), **recipe)
    streams = [stream_seed(config.name, seed) for seed in seeds]
    log.info("%s: training seeds %s together with %s", config.name, seeds, full_recipe)
    models, histories = train_models(
        data,
        config.arch,
        config.width,
        config.depth,
        full_recipe,
        seeds,
        device,
        checkpoint=checkpoint,
        desc=config.name,
        heads=config.heads,
        streams=streams,
    )
    trained, rows = [], []
    for seed, stream, model, history in zip(seeds, streams, models, histories, strict=True):
        sidecar = {
            **config.as_dict(),
            "seed": seed,
            "stream_seed": stream,
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "recipe": recipe,
        }
        final = {k: v for k, v in history[-1].items() if k != "epoch"}
        trained.append(TrainedSeed(seed, model, sidecar, final))
        rows += [{"seed": seed, **row} for row in history]
    return TrainedConfiguration(trained, rows)
