"""What a study compares and where: the random stream of each model, the pairs of seeds, the groups of fused
models, and the points of a linear path.

Standard library only, so that the report imports them without torch.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence

from lmcot.choices import PAIRINGS


def stream_seed(configuration: str, seed: int, purpose: str = "train") -> int:
    """The seed of the random stream (initial weights, mini-batch order) that ``purpose`` uses for ``seed`` of
    the configuration named ``configuration``: a hash of the three, so that no two configurations (widths,
    learning rates, data sets) and no two purposes share a stream, while the same params always give the same
    weights. A 63-bit integer, as ``torch.manual_seed`` takes it."""
    digest = hashlib.sha256(f"{configuration}/{purpose}/seed{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def seed_groups(seeds: list[int], size: int, most: int) -> list[list[int]]:
    """Disjoint groups of ``size`` seeds in the order given (seeds 0-2, 3-5, ... for size 3), as many as ``seeds``
    holds but at most ``most``: models fused group by group, so that each group's result is an independent
    sample."""
    if size > len(seeds):
        raise ValueError(f"a group of {size} seeds needs {size} seeds, got {len(seeds)}")
    count = min(most, len(seeds) // size)
    return [list(seeds[i * size : (i + 1) * size]) for i in range(count)]


def seed_pairs(seeds: list[int], pairing: str = "all") -> list[tuple[int, int]]:
    """The pairs of models to compare: every pair of ``seeds`` (``all``), or ``disjoint`` pairs that share
    no model (seeds 1-2, 3-4, ... in the order given), whose results are independent samples."""
    if pairing == "all":
        return list(itertools.combinations(seeds, 2))
    if pairing == "disjoint":
        if len(seeds) % 2:
            raise ValueError(f"disjoint pairs need an even number of seeds, got {len(seeds)}")
        return list(zip(seeds[0::2], seeds[1::2], strict=True))
    raise ValueError(f"unknown pairing {pairing!r}; valid: {', '.join(PAIRINGS)}")


def evaluation_grid(alphas: Sequence[float]) -> list[float]:
    """The grid actually evaluated: ``alphas`` plus the endpoints 0 and 1 and the midpoint 1/2, sorted."""
    return sorted({float(a) for a in alphas} | {0.0, 0.5, 1.0})
