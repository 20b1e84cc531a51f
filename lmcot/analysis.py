"""Statistics the report draws its conclusions from: means and slopes with bootstrap intervals, the
verdict a claim gets from them, rank correlation, power-law slopes, methods that computed the same
permutations, and the pairing of each alignment method with the dimension that governs it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

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


def paired_difference(rows: pd.DataFrame, value: str, method: str, baseline: str, keys: list[str]) -> pd.DataFrame:
    """Per pair of models (``keys`` plus seed_a, seed_b): ``value`` of ``baseline`` minus that of ``method``,
    as column ``effect`` (positive: ``method`` is lower). Empty if either method is missing."""
    wide = rows.pivot_table(index=[*keys, "seed_a", "seed_b"], columns="method", values=value)
    if method not in wide or baseline not in wide:
        return pd.DataFrame(columns=[*keys, "seed_a", "seed_b", "effect"])
    return (wide[baseline] - wide[method]).rename("effect").dropna().reset_index()


def identical_methods(alignments: list[dict]) -> list[list[str]]:
    """Groups of two or more methods whose permutations are identical in every pair of ``alignments`` (records
    of alignment.json files, each with seed_a, seed_b, method, permutations and, across files, the
    configuration), in first-seen order."""
    by_method: dict[str, dict] = {}
    for record in alignments:
        key = (record.get("configuration"), record["seed_a"], record["seed_b"])
        perms = tuple(sorted((name, tuple(p)) for name, p in record["permutations"].items()))
        by_method.setdefault(record["method"], {})[key] = perms
    groups: list[list[str]] = []
    for method, perms in by_method.items():
        for group in groups:
            if by_method[group[0]] == perms:
                group.append(method)
                break
        else:
            groups.append([method])
    return [g for g in groups if len(g) > 1]


# The participation ratio whose matrix each method's matching score is built on (Ferbach et al.):
# weight-based methods compare incoming weights (S = W^T W), the covariance-aware one W Sigma W^T,
# activation-based ones the activations' second moment.
METHOD_DIMENSION = {
    "weight_matching": "pr_weights",
    "naive_weight_matching": "pr_weights",
    "ot_emd": "pr_weights",
    "ot_sinkhorn": "pr_weights",
    "cov_weight_matching": "pr_cov",
    "activation_matching": "pr_activations",
    "activation_covariance": "pr_activations",
}


def spearman_with_ci(x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Spearman's rho of ``x`` and ``y`` and a percentile bootstrap interval (resampling pairs)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": float("nan"), "low": float("nan"), "high": float("nan"), "n": int(len(x))}
    rho = spearmanr(x, y).statistic
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            boots.append(spearmanr(x[i], y[i]).statistic)
    low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return {"rho": float(rho), "low": float(low), "high": float(high), "n": int(len(x))}


def loglog_slope(x, y) -> float:
    """Least-squares slope of ``log y`` against ``log x`` over the positive pairs (NaN if under 2)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if len(np.unique(x[keep])) < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def barrier_with_dimension(barriers: pd.DataFrame, dimensions: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Test loss barriers of every pair and method beside the dimension that governs the method.

    The dimension of a pair is the mean over hidden layers and over its two models of the method's
    participation ratio (:data:`METHOD_DIMENSION`). Methods without one (``identity``) are left out.
    """
    per_model = dimensions.groupby([*keys, "seed", "estimator"])["value"].mean().reset_index()
    rows = barriers[(barriers["split"] == "test") & (barriers["metric"] == "loss")]
    rows = rows[rows["method"].isin(METHOD_DIMENSION)].copy()
    rows["estimator"] = rows["method"].map(METHOD_DIMENSION)
    for side in ("a", "b"):
        renamed = per_model.rename(columns={"seed": f"seed_{side}", "value": f"dimension_{side}"})
        rows = rows.merge(renamed, on=[*keys, f"seed_{side}", "estimator"], how="left")
    rows["dimension"] = (rows["dimension_a"] + rows["dimension_b"]) / 2
    return rows.drop(columns=["dimension_a", "dimension_b"])
