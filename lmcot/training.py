"""Training: one seed of one configuration, reproducibly, with data held in memory as tensors."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lmcot.data import Dataset
from lmcot.models import build_model

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class Recipe:
    """How to train: the ``train.recipe`` params plus the configuration's learning rate."""

    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 30
    batch_size: int = 128
    warmup_epochs: float = 0.0
    schedule: str = "cosine"

    def lr_factor(self, step: int, steps_per_epoch: int) -> float:
        """Multiplier of ``lr`` at optimiser step ``step``: linear warm-up, then constant or cosine to 0."""
        warmup = round(self.warmup_epochs * steps_per_epoch)
        total = self.epochs * steps_per_epoch
        if step < warmup:
            return (step + 1) / warmup
        if self.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> dict:
    """Mean cross-entropy (nats) and accuracy of ``model`` on ``(x, y)``."""
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
    return {"loss": loss / len(x), "accuracy": correct / len(x)}


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")


def train_model(
    data: Dataset, arch: str, width: int, depth: int, recipe: Recipe, seed: int, progress: bool = True
) -> tuple[torch.nn.Module, list[dict]]:
    """Train one model; return it and its history (one dict of train/test loss and accuracy per epoch).

    ``seed`` fixes both the initialisation and the order of mini-batches, so the same arguments give
    bit-identical weights on the same machine.
    """
    torch.manual_seed(seed)
    model = build_model(arch, data.input_shape, data.num_classes, width, depth)
    optimizer = make_optimizer(model, recipe)
    order = torch.Generator().manual_seed(seed)
    n = len(data.x_train)
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    history = []
    step = 0
    epochs = tqdm(range(recipe.epochs), desc=f"seed {seed}", leave=False, disable=not progress)
    for epoch in epochs:
        model.train()
        for batch in torch.randperm(n, generator=order).split(recipe.batch_size):
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * recipe.lr_factor(step, steps_per_epoch)
            loss = F.cross_entropy(model(data.x_train[batch]), data.y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        train, test = evaluate(model, data.x_train, data.y_train), evaluate(model, data.x_test, data.y_test)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": train["loss"],
                "train_accuracy": train["accuracy"],
                "test_loss": test["loss"],
                "test_accuracy": test["accuracy"],
            }
        )
        epochs.set_postfix(train_loss=f"{train['loss']:.3f}", test_acc=f"{test['accuracy']:.3f}")
        if not math.isfinite(train["loss"]):
            raise FloatingPointError(
                f"training diverged: arch={arch} width={width} depth={depth} lr={recipe.lr} seed={seed} "
                f"epoch={epoch + 1} has train loss {train['loss']}; lower the learning rate"
            )
    log.info("seed %d: train loss %.4f, test accuracy %.4f", seed, history[-1]["train_loss"], test["accuracy"])
    return model.eval(), history
