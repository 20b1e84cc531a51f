"""Statistics the report draws its conclusions from: rank correlation with a bootstrap interval,
power-law slopes, and the pairing of each alignment method with the dimension that governs it."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

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
