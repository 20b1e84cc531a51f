"""Loss landscape on the plane through three models (Akash, Li and Garcia Trillos 2022, Figure 1).

The plane through ``origin``, ``first`` and ``second`` (flattened state dicts, floating tensors only)
has the orthonormal basis ``e1 = (first - origin) / |first - origin|`` and ``e2``, the part of
``second - origin`` orthogonal to ``e1``, normalised. A point ``(x, y)`` is the model
``origin + x e1 + y e2``; coordinates are in the units of the parameters (Euclidean distance).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from lmcot.evaluation import evaluate


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
