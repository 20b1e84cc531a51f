"""Loss landscape on the plane through three models (Akash, Li and Garcia Trillos 2022, Figure 1).

The plane through ``origin``, ``first`` and ``second`` (flattened state dicts, floating tensors only)
has the orthonormal basis ``e1 = (first - origin) / |first - origin|`` and ``e2``, the part of
``second - origin`` orthogonal to ``e1``, normalised. A point ``(x, y)`` is the model
``origin + x e1 + y e2``; coordinates are in the units of the parameters (Euclidean distance).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lmcot.align.methods import align
from lmcot.evaluation import evaluate
from lmcot.fusion import permutations_from_fusion, wasserstein_barycenter
from lmcot.permutation import apply_permutations

if TYPE_CHECKING:
    from lmcot.config import Configuration
    from lmcot.data import Dataset

log = logging.getLogger(__name__)


def flatten_state(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The floating tensors of ``state``, in order, as one float64 vector."""
    return torch.cat([v.detach().double().cpu().flatten() for v in state.values() if v.is_floating_point()])


def load_flat(model: torch.nn.Module, vector: torch.Tensor) -> None:
    """Write ``vector`` (from :func:`flatten_state` of a state of ``model``'s shape) into ``model``."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    expected = sum(t.numel() for t in tensors)
    if expected != len(vector):  # checked first, so that a wrong vector leaves the model as it was
        raise ValueError(f"vector has {len(vector)} values, the model's floating tensors {expected}")
    offset = 0
    with torch.no_grad():
        for tensor in tensors:
            tensor.copy_(vector[offset : offset + tensor.numel()].view_as(tensor))
            offset += tensor.numel()


def plane_basis(origin: torch.Tensor, first: torch.Tensor, second: torch.Tensor):
    """Orthonormal ``(e1, e2)`` of the plane and the ``(x, y)`` coordinates of the three points."""
    u, v = first - origin, second - origin
    if u.norm() == 0:
        raise ValueError("the first point equals the origin: the three points span no plane")
    e1 = u / u.norm()
    w = v - (v @ e1) * e1
    if w.norm() <= 1e-12 * v.norm().clamp_min(1e-300):
        raise ValueError("the three points are on one line: they span no plane")
    e2 = w / w.norm()
    points = {"origin": (0.0, 0.0), "first": (u.norm().item(), 0.0), "second": ((v @ e1).item(), (v @ e2).item())}
    return e1, e2, points


def grid_axes(points: Mapping[str, tuple[float, float]], grid_size: int, margin: float):
    """``grid_size`` evenly spaced x and y values covering the points, widened by ``margin`` times the
    larger extent on every side."""
    xy = np.array(list(points.values()))
    extent = max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1]))
    low, high = xy.min(0) - margin * extent, xy.max(0) + margin * extent
    return np.linspace(low[0], high[0], grid_size), np.linspace(low[1], high[1], grid_size)


@torch.no_grad()
def evaluate_plane(
    container: torch.nn.Module,
    origin: Mapping[str, torch.Tensor],
    first: Mapping[str, torch.Tensor],
    second: Mapping[str, torch.Tensor],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    grid_size: int = 15,
    margin: float = 0.3,
    batch_size: int = 4096,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Train loss (nats) and test error (1 - accuracy) at every point of a ``grid_size`` x
    ``grid_size`` grid on the plane through three states. ``container`` (a model of their
    architecture) is overwritten in place. Returns the grid rows ``{x, y, train_loss, test_error}``
    and the three points' coordinates."""
    vectors = [flatten_state(s) for s in (origin, first, second)]
    e1, e2, points = plane_basis(*vectors)
    xs, ys = grid_axes(points, grid_size, margin)
    device = next(iter(container.state_dict().values())).device
    container.load_state_dict(origin)  # integer buffers stay the origin's
    rows = []
    for x, y in tqdm([(x, y) for y in ys for x in xs], desc="plane", leave=False, disable=not progress):
        load_flat(container, (vectors[0] + x * e1 + y * e2).to(device))
        train_result, test_result = evaluate(container, *train, batch_size), evaluate(container, *test, batch_size)
        rows.append(
            {
                "x": float(x),
                "y": float(y),
                "train_loss": train_result["loss"],
                "test_error": 1 - test_result["accuracy"],
            }
        )
    return rows, points


@dataclass
class Planes:
    """The grid rows of every plane (plane.csv) and the coordinates of the models on them (plane_points.csv)."""

    grid: pd.DataFrame
    points: pd.DataFrame


def fusion_planes(model_1, model_2, ot: dict) -> dict[str, tuple[dict, dict, dict]]:
    """The two planes through model 1 and model 2, by name: "permutation" through model 2 permuted onto
    model 1 by the couplings of their Wasserstein barycentre (``ot``: its options), "fusion" through that
    barycentre. Each is ``(first, second, labels)``: the states beside model 1's and the three points' names.

    A model with attention heads, which the barycentre could split, is permuted by weight matching (heads matched
    as units) instead, and fused as the mean of model 1 and the permuted model 2 (the ``fuse`` stage's fusion of
    such models)."""
    state_2 = model_2.state_dict()
    if model_1.permutation_spec().groups:
        permuted_2 = apply_permutations(model_2.permutation_spec(), align("weight_matching", model_1, model_2), state_2)
        fused = {k: (v + permuted_2[k]) / 2 for k, v in model_1.state_dict().items()}
        fused_label = "weight-matching average"
    else:
        fusion = wasserstein_barycenter([model_1, model_2], model_1, **ot)
        permuted_2 = apply_permutations(model_2.permutation_spec(), permutations_from_fusion(fusion), state_2)
        fused, fused_label = fusion.state, "fused model"
    return {
        "permutation": (state_2, permuted_2, {"origin": "model 1", "first": "model 2", "second": "permuted model 2"}),
        "fusion": (state_2, fused, {"origin": "model 1", "first": "model 2", "second": fused_label}),
    }


def plane_tables(config: Configuration, model_1, model_2, data: Dataset, options: dict, ot: dict, device) -> Planes:
    """Train loss and test error on the planes of :func:`fusion_planes` through ``model_1`` and ``model_2`` (of
    ``config``, on the CPU), on ``data`` (on ``device``): the train split's first ``options["num_samples"]``
    samples and the whole test split, a grid of ``options["grid_size"]`` squared points widened by
    ``options["margin"]``. ``options`` are the ``plane`` params."""
    train = (data.x_train[: options["num_samples"]], data.y_train[: options["num_samples"]])
    test = (data.x_test, data.y_test)
    state_1 = model_1.state_dict()
    container = deepcopy(model_1).to(device)  # overwritten at every grid point
    grids, marks = [], []
    for plane, (first, second, labels) in fusion_planes(model_1, model_2, ot).items():
        first = {k: v.clone() for k, v in first.items()}
        second = {k: torch.as_tensor(v).clone() for k, v in second.items()}
        rows, points = evaluate_plane(
            container, state_1, first, second, train, test, options["grid_size"], options["margin"]
        )
        keys = {**config.as_dict(), "plane": plane}
        grids += [keys | row for row in rows]
        marks += [keys | {"point": labels[p], "x": x, "y": y} for p, (x, y) in points.items()]
        log.info("%s plane: %d points, train loss %.3f to %.3f", plane, len(rows),
                 min(r["train_loss"] for r in rows), max(r["train_loss"] for r in rows))  # fmt: skip
    return Planes(pd.DataFrame(grids), pd.DataFrame(marks))
