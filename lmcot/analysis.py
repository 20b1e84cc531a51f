"""Statistics the report draws its conclusions from: means and slopes with bootstrap intervals, the
verdict a claim gets from them, methods that computed the same permutations, and the endpoints' fit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lmcot.choices import NO_CORRECTION

CONFIG_KEYS = ["dataset", "arch", "depth", "width", "lr"]  # the columns that name a configuration in results
SUPPORTED, CONTRADICTED, UNDECIDED = "supported", "contradicted", "not enough evidence"
MIN_SAMPLES = 3  # fewer independent samples (pairs, models) than this never decide a claim
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """An effect with its bootstrap interval: ``mean`` (or slope), ``low`` and ``high`` at ``LEVEL``, from ``n``
    samples (pairs of models, or models)."""

    mean: float
    low: float
    high: float
    n: int

    def format(self, digits: int = 3) -> str:
        if not np.isfinite(self.mean):
            return "n/a"
        if self.n < 2 or not np.isfinite(self.low):
            return f"{self.mean:.{digits}f} (n = {self.n})"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap_mean(values, n_boot: int = 4000, level: float = LEVEL, seed: int = 0) -> Estimate:
    """Mean of ``values`` and its percentile bootstrap interval (resampling the values: one per independent
    sample, e.g. the paired difference of two methods on one pair of models). NaNs are dropped."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if len(x) == 1:
        return Estimate(float(x[0]), float("nan"), float("nan"), 1)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(float(x.mean()), float(low), float(high), len(x))


def bootstrap_slope(x, y, n_boot: int = 4000, level: float = LEVEL, seed: int = 0) -> Estimate:
    """Least-squares slope of ``y`` against ``x`` with a bootstrap interval that resamples the samples
    within each value of ``x`` (e.g. pairs of models at each width), so every ``x`` stays in every fit.
    ``n`` is the smallest number of samples at one ``x``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    levels = np.unique(x)
    if len(levels) < 2:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    groups = [y[x == v] for v in levels]
    n = min(len(g) for g in groups)
    slope = float(np.polyfit(x, y, 1)[0])
    if n < 2:
        return Estimate(slope, float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    slopes = []
    for _ in range(n_boot):
        ys = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
        xs = np.concatenate([np.full(len(g), v) for g, v in zip(groups, levels, strict=True)])
        slopes.append(np.polyfit(xs, ys, 1)[0])
    low, high = np.quantile(slopes, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(slope, float(low), float(high), n)


def verdict(effect: Estimate, in_regime: bool, threshold: float = 0.0) -> tuple[str, str]:
    """The verdict on a claim that ``effect`` exceeds ``threshold``, and why.

    Supported: the whole interval lies above the threshold. Contradicted: the whole interval lies below it,
    with at least :data:`MIN_SAMPLES` samples, in the claim's own regime. Anything else is not enough
    evidence, with the reason: too few samples, an interval that straddles the threshold, or an opposite
    effect found outside the regime the claim was made in.
    """
    if effect.n < MIN_SAMPLES or not np.isfinite(effect.low):
        return UNDECIDED, f"n = {effect.n}, fewer than {MIN_SAMPLES} independent samples"
    if effect.low > threshold:
        return SUPPORTED, f"the whole {LEVEL:.0%} interval is on the claim's side"
    if effect.high < threshold:
        if in_regime:
            return CONTRADICTED, f"the whole {LEVEL:.0%} interval is on the opposite side"
        return UNDECIDED, "the whole interval is on the opposite side, but this run is outside the paper's regime"
    return UNDECIDED, f"the {LEVEL:.0%} interval reaches both sides"


def combine(verdicts: list[str]) -> str:
    """One verdict for a claim made of parts that must all hold."""
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    return CONTRADICTED if CONTRADICTED in verdicts else UNDECIDED


def method_label(method: str, correction: str = NO_CORRECTION) -> str:
    """How a path is printed: the alignment ``method``, followed by ``+<correction>`` when the path was evaluated
    after a normalisation correction (``weight_matching+repair``). For display only: tables keep the two
    columns ``method`` and ``correction``."""
    return method if correction == NO_CORRECTION else f"{method}+{correction}"


def paired_difference(
    rows: pd.DataFrame, value: str, method, baseline, keys: list[str], by: str | list[str] = "method"
) -> pd.DataFrame:
    """Per pair of models (``keys`` plus seed_a, seed_b): ``value`` of ``baseline`` minus that of ``method``,
    as column ``effect`` (positive: ``method`` is lower). Empty if either method is missing. ``by``: the
    column(s) that ``method`` and ``baseline`` are values of (a list, such as ``["method", "correction"]``:
    ``method`` and ``baseline`` are tuples)."""
    wide = rows.pivot_table(index=[*keys, "seed_a", "seed_b"], columns=by, values=value)
    if method not in wide or baseline not in wide:
        return pd.DataFrame(columns=[*keys, "seed_a", "seed_b", "effect"])
    return (wide[baseline] - wide[method]).rename("effect").dropna().reset_index()


@dataclass(frozen=True)
class MethodGroup:
    """Methods that returned identical permutations in every pair both were run on: ``members`` (the first one
    names the group), ``identical`` of ``pairs`` pairs (configuration and pair of seeds) compared."""

    members: tuple[str, ...]
    identical: int = 0
    pairs: int = 0

    @property
    def name(self) -> str:
        return self.members[0]

    @property
    def label(self) -> str:
        """``naive_weight_matching (= ot_emd, ot_sinkhorn)``, or the method's name alone."""
        return self.name if len(self.members) == 1 else f"{self.name} (= {', '.join(self.members[1:])})"

    def note(self) -> str:
        others = " = ".join(self.members[1:])
        return f"{others} = {self.name} here: identical permutations in {self.identical} of {self.pairs} pairs"


def method_groups(alignments: list[dict], methods: list[str] | None = None) -> list[MethodGroup]:
    """Every method of ``alignments`` in a group with those that returned exactly its permutations in every
    pair (configuration, seed_a, seed_b) both were run on. ``alignments``: records of alignment.json files,
    each with seed_a, seed_b, method, permutations and, across files, the configuration. Groups come in the
    order of ``methods`` (default: first seen), each named by its first member."""
    by_method: dict[str, dict] = {}
    for record in alignments:
        key = (record.get("configuration"), record["seed_a"], record["seed_b"])
        perms = tuple(sorted((name, tuple(p)) for name, p in record["permutations"].items()))
        by_method.setdefault(record["method"], {})[key] = perms
    order = [m for m in (methods or by_method) if m in by_method]
    groups: list[list[str]] = []
    counts: dict[str, tuple[int, int]] = {}
    for method in order:
        for group in groups:
            first = by_method[group[0]]
            common = first.keys() & by_method[method].keys()
            same = sum(first[k] == by_method[method][k] for k in common)
            if common and same == len(common):
                group.append(method)
                counts[group[0]] = (same, len(common))  # the pairs behind the group's latest member
                break
        else:
            groups.append([method])
    return [MethodGroup(tuple(g), *counts.get(g[0], (0, 0))) for g in groups]


def identical_methods(alignments: list[dict]) -> list[list[str]]:
    """The groups of :func:`method_groups` with two or more members."""
    return [list(g.members) for g in method_groups(alignments) if len(g.members) > 1]


def representative(groups: list[MethodGroup]) -> dict[str, str]:
    """Method -> the name of its group."""
    return {m: g.name for g in groups for m in g.members}


def merge_identical(table: pd.DataFrame, groups: list[MethodGroup]) -> pd.DataFrame:
    """``table`` (with a ``method`` column) without the rows of methods that repeat their group's first member,
    so that one computation is counted once (the rows of every ``correction`` of a method follow the method)."""
    names = representative(groups)
    return table[table["method"].map(lambda m: names.get(m, m) == m)]


def endpoint_losses(barriers: pd.DataFrame) -> pd.DataFrame:
    """Every trained model's loss and error on each split: one row per configuration and seed, with columns
    ``train_loss, test_loss, train_error, test_error`` (NaN for a split the barrier stage did not evaluate)."""
    rows = barriers.drop_duplicates([*CONFIG_KEYS, "seed_a", "seed_b", "split", "metric"])
    sides = [
        rows[[*CONFIG_KEYS, f"seed_{s}", "split", "metric", f"value_{s}"]].set_axis(
            [*CONFIG_KEYS, "seed", "split", "metric", "value"], axis=1
        )
        for s in ("a", "b")
    ]
    both = pd.concat(sides).drop_duplicates([*CONFIG_KEYS, "seed", "split", "metric"])
    wide = both.pivot_table(index=[*CONFIG_KEYS, "seed"], columns=["split", "metric"], values="value")
    wide.columns = [f"{split}_{metric}" for split, metric in wide.columns]
    for column in ("train_loss", "test_loss", "train_error", "test_error"):
        if column not in wide:
            wide[column] = np.nan
    return wide.reset_index()


def overfit_table(barriers: pd.DataFrame, max_gap: float, min_train_accuracy: float = 0.0) -> pd.DataFrame:
    """Per configuration: the endpoints' mean train and test loss (nats) and accuracy, the generalisation gap
    (test minus train loss), ``overfit`` (the gap exceeds ``max_gap``: a test-loss barrier can then be zero
    only because the midpoint is less over-confident than the endpoints; LMC theory is about the train loss)
    and ``undertrained`` (train accuracy below ``min_train_accuracy``: the networks are still near their
    initialisation)."""
    models = endpoint_losses(barriers)
    table = models.groupby(CONFIG_KEYS)[["train_loss", "test_loss", "train_error", "test_error"]].mean()
    table["models"] = models.groupby(CONFIG_KEYS)["seed"].nunique()
    table["gap"] = table["test_loss"] - table["train_loss"]
    table["overfit"] = table["gap"] > max_gap
    table["train_accuracy"], table["test_accuracy"] = 1 - table["train_error"], 1 - table["test_error"]
    table["undertrained"] = table["train_accuracy"] < min_train_accuracy
    columns = ["models", "train_loss", "test_loss", "gap", "overfit", "train_accuracy", "test_accuracy", "undertrained"]
    return table[columns].reset_index()
