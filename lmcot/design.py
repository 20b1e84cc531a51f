"""What a study compares and where: the pairs of seeds, and the points of a linear path.

Standard library only, so that the report imports them without torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from lmcot.choices import PAIRINGS


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
