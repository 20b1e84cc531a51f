"""Statistics the report draws its conclusions from: means and slopes with Student-t intervals over
independent samples, Holm's adjustment over the claims a report decides, the verdict each claim gets,
methods that computed the same permutations, and the endpoints' fit.

Why Student's t: the effects are means (or slopes) over a few independent pairs of models (3 to 20). The
t-interval is exact for normally distributed effects at every n >= 2 and conservative for symmetric
heavier-tailed ones; the percentile bootstrap under-covers at these n (a true zero effect is called
significant on one side in about 10% of draws at n = 4), an exact sign-flip test cannot reach p < 0.05 below
n = 6, and neither survives a multiplicity adjustment at n below about 10. Strongly skewed effects break the
t-test and the sign-flip test alike at small n (see the README). ``tests/test_inference.py`` simulates the
false-verdict rates at every n the default study uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import stdtr, stdtrit  # Student's t cdf and its inverse (fast ufuncs)

from lmcot.choices import NO_CORRECTION

CONFIG_KEYS = ["dataset", "arch", "depth", "width", "lr"]  # the columns that name a configuration in results
SUPPORTED, CONTRADICTED, UNDECIDED = "supported", "contradicted", "not enough evidence"
NOT_APPLICABLE = "not applicable"  # endpoints or setting outside the claim's regime: no verdict, whatever the effect
MIN_SAMPLES = 3  # fewer independent samples (pairs, models) than this never decide a claim
LEVEL = 0.95  # of every interval; a family of verdicts is decided at family-wise error 1 - LEVEL (Holm)


@dataclass(frozen=True)
class Estimate:
    """An effect with its Student-t interval at ``LEVEL``: ``mean`` (or slope), ``low``, ``high``, from ``n``
    independent samples (pairs of models, or models); ``se`` its standard error and ``df`` the degrees of
    freedom of the t-distribution its interval and p-values use (NaN where ``n`` gives none)."""

    mean: float
    low: float
    high: float
    n: int
    se: float = float("nan")
    df: float = float("nan")

    def format(self, digits: int = 3) -> str:
        if not np.isfinite(self.mean):
            return "n/a"
        if self.n < 2 or not np.isfinite(self.low):
            return f"{self.mean:.{digits}f} (n = {self.n})"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    @property
    def testable(self) -> bool:
        """Enough samples for a verdict (:data:`MIN_SAMPLES`) and a finite standard error."""
        return self.n >= MIN_SAMPLES and np.isfinite(self.se) and np.isfinite(self.mean)

    def p_value(self, threshold: float = 0.0) -> float:
        """Two-sided p-value of the t-test that the true effect equals ``threshold`` (NaN if not testable)."""
        if not self.testable:
            return float("nan")
        gap = self.mean - threshold
        if self.se == 0:  # every sample equal: the effect is exactly known
            return 0.0 if gap != 0 else 1.0
        return float(2 * stdtr(self.df, -abs(gap) / self.se))

    def shifted(self, by: float, negate: bool = False) -> Estimate:
        """``estimate + by``, or ``-(estimate + by)`` with ``negate`` (so that a claim's side is positive)."""
        sign = -1 if negate else 1
        low, high = sorted((sign * (self.low + by), sign * (self.high + by)))
        return Estimate(sign * (self.mean + by), low, high, self.n, self.se, self.df)


def _interval(mean: float, se: float, df: float, n: int, level: float) -> Estimate:
    if se == 0:
        return Estimate(mean, mean, mean, n, 0.0, df)
    half = float(stdtrit(df, (1 + level) / 2)) * se
    return Estimate(mean, mean - half, mean + half, n, se, df)


def mean_interval(values, level: float = LEVEL) -> Estimate:
    """Mean of ``values`` (one per independent sample, e.g. the paired difference of two methods on one pair of
    models) with its Student-t interval ``mean -+ t_{(1 + level) / 2, n - 1} s / sqrt(n)``. NaNs are dropped;
    with one value there is no interval."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if len(x) == 1:
        return Estimate(float(x[0]), float("nan"), float("nan"), 1)
    se = float(x.std(ddof=1) / math.sqrt(len(x)))
    return _interval(float(x.mean()), se, len(x) - 1, len(x), level)


def slope_interval(x, y, level: float = LEVEL) -> Estimate:
    """Least-squares slope of ``y`` against ``x`` with an interval that allows each value of ``x`` its own
    variance (e.g. pairs of models at each width, whose barriers spread differently).

    The slope is a weighted sum of the group means, ``sum_k c_k ybar_k`` with ``c_k = n_k (x_k - xbar) / Sxx``;
    its variance is estimated as ``sum_k c_k^2 s_k^2 / n_k`` with Welch-Satterthwaite degrees of freedom. ``n``
    counts every sample (all independent); every value of ``x`` needs two samples, else there is no interval."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    levels = np.unique(x)
    if len(levels) < 2:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    groups = [y[x == v] for v in levels]
    sizes = np.array([len(g) for g in groups], dtype=float)
    centred = levels - x.mean()
    weights = sizes * centred / float(((x - x.mean()) ** 2).sum())
    slope = float(sum(w * g.mean() for w, g in zip(weights, groups, strict=True)))
    if sizes.min() < 2:
        return Estimate(slope, float("nan"), float("nan"), len(y))
    parts = np.array([w**2 * g.var(ddof=1) / len(g) for w, g in zip(weights, groups, strict=True)])
    variance = float(parts.sum())
    df = variance**2 / float((parts**2 / (sizes - 1)).sum()) if variance > 0 else float(len(y) - 2)
    return _interval(slope, math.sqrt(variance), df, len(y), level)


def t_bounds(values, level: float = LEVEL) -> tuple[float, float]:
    """``(low, high)`` of :func:`mean_interval`: the error bars of the report's figures (seaborn's ``errorbar``)."""
    estimate = mean_interval(values, level)
    return estimate.low, estimate.high


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of ``p_values``: a verdict is kept where the adjusted p is at most the
    family-wise error rate, valid under any dependence between the tests. NaNs stay NaN and are not counted."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    order = tested[np.argsort(p[tested], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out


@dataclass(frozen=True)
class Cell:
    """One question to decide: is ``estimate`` above ``threshold``? ``can_contradict``: an effect on the other
    side counts against the claim (False outside the regime of the paper the claim comes from); a non-empty
    ``not_applicable`` is why no verdict is possible (endpoints or setting outside the claim's regime)."""

    estimate: Estimate
    threshold: float = 0.0
    can_contradict: bool = True
    not_applicable: str = ""


@dataclass(frozen=True)
class Decision:
    """A cell's verdict and why; ``p`` and ``p_adjusted`` (Holm, over the ``family`` cells tested together) are
    NaN for a cell that was not tested."""

    verdict: str
    reason: str
    p: float = float("nan")
    p_adjusted: float = float("nan")
    family: int = 0


def decide(cells: list[Cell], alpha: float = 1 - LEVEL) -> list[Decision]:
    """The verdict of every cell, with Holm's adjustment over the cells that can be tested together.

    Not applicable: the cell says why. Not enough evidence: fewer than :data:`MIN_SAMPLES` samples, or an
    adjusted p above ``alpha``, or an effect on the other side where it cannot contradict the claim. Supported
    or contradicted: adjusted p at most ``alpha``, by the side of the threshold the effect lies on. The chance of
    any false verdict in the family is then at most ``alpha`` (each side about ``alpha / 2``).
    """
    raw = [c.estimate.p_value(c.threshold) if not c.not_applicable else float("nan") for c in cells]
    adjusted = holm(raw)
    family = int(np.isfinite(raw).sum())
    out = []
    for cell, p, q in zip(cells, raw, adjusted, strict=True):
        if cell.not_applicable:
            out.append(Decision(NOT_APPLICABLE, cell.not_applicable))
        elif not np.isfinite(p):
            n = cell.estimate.n
            out.append(Decision(UNDECIDED, f"n = {n}, fewer than {MIN_SAMPLES} independent samples: no verdict"))
        else:
            out.append(_tested(cell, p, q, family, alpha))
    return out


def _tested(cell: Cell, p: float, q: float, family: int, alpha: float) -> Decision:
    odds = f"p = {p:.2g}, Holm-adjusted over {family} tested cells {q:.2g}"
    if q > alpha:
        return Decision(UNDECIDED, f"{odds} > {alpha:g}", p, q, family)
    if cell.estimate.mean > cell.threshold:
        return Decision(SUPPORTED, f"{odds} <= {alpha:g}, on the claim's side", p, q, family)
    if cell.can_contradict:
        return Decision(CONTRADICTED, f"{odds} <= {alpha:g}, on the opposite side", p, q, family)
    why = f"{odds}: on the opposite side, but this run is outside the paper's regime, where it cannot contradict it"
    return Decision(UNDECIDED, why, p, q, family)


def combine(verdicts: list[str]) -> str:
    """One verdict for a claim made of parts that must all hold; parts that are not applicable are left out
    (if every part is: not applicable; no parts at all: not enough evidence)."""
    if verdicts and all(v == NOT_APPLICABLE for v in verdicts):
        return NOT_APPLICABLE
    verdicts = [v for v in verdicts if v != NOT_APPLICABLE]
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    return CONTRADICTED if CONTRADICTED in verdicts else UNDECIDED


def method_label(method: str, correction: str = NO_CORRECTION) -> str:
    """How a path is printed: the alignment ``method``, followed by ``+<correction>`` when the path was evaluated
    after a normalisation correction (``weight_matching+repair``). For display only: tables keep the two
    columns ``method`` and ``correction``."""
    return method if correction == NO_CORRECTION else f"{method}+{correction}"


def independent_pairs(rows: pd.DataFrame, keys: list[str] = CONFIG_KEYS) -> pd.DataFrame:
    """The rows of ``rows`` whose pair of models (seed_a, seed_b) shares no model with an earlier pair of the
    same configuration (``keys``), pairs taken in order of first appearance: with ``align.pairs: all`` (pairs
    that share models, so not independent) that leaves the disjoint pairs 1-2, 3-4, ...; with disjoint pairs,
    every row."""
    kept = []
    for _, group in rows.groupby(keys, sort=False):
        used, chosen = set(), set()
        for a, b in group[["seed_a", "seed_b"]].drop_duplicates().itertuples(index=False):
            if a not in used and b not in used:
                used |= {a, b}
                chosen.add((a, b))
        pairs = list(zip(group["seed_a"], group["seed_b"], strict=True))
        kept.append(group[[pair in chosen for pair in pairs]])
    return pd.concat(kept) if kept else rows


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


def endpoint_problems(overfit: pd.DataFrame, configs: pd.DataFrame, split: str) -> str:
    """Why the endpoints of ``configs`` (rows of configuration keys) put a cell on ``split`` out of any claim's
    regime: undertrained endpoints on every split, overfit ones on the test split ("" if neither)."""
    rows = overfit.merge(configs.drop_duplicates(), on=CONFIG_KEYS)
    names = lambda flagged: ", ".join(f"w{r.width} lr{r.lr:g}" for r in flagged.itertuples())  # noqa: E731
    if "undertrained" in rows and rows["undertrained"].any():
        flagged = rows[rows["undertrained"]]
        worst = flagged["train_accuracy"].min()
        return (
            f"undertrained endpoints ({names(flagged)}: mean train accuracy down to {worst:.2f}, below "
            "report.min_train_accuracy)"
        )
    if split == "test" and "overfit" in rows and rows["overfit"].any():
        flagged = rows[rows["overfit"]]
        gap = flagged["gap"].max()
        return f"overfit endpoints ({names(flagged)}: test loss up to {gap:.2f} nats above train, report.overfit_gap)"
    return ""
