"""The statistics behind the report's conclusions."""

import numpy as np
import pandas as pd
import pytest

from lmcot.analysis import barrier_with_dimension, loglog_slope, spearman_with_ci


def test_spearman_of_a_monotone_relation_is_one_with_a_tight_interval():
    x = np.arange(30.0)
    result = spearman_with_ci(x, np.exp(x / 10))
    assert result["rho"] == pytest.approx(1.0) and result["low"] == pytest.approx(1.0)


def test_spearman_interval_covers_zero_for_independent_noise():
    rng = np.random.default_rng(1)
    result = spearman_with_ci(rng.normal(size=40), rng.normal(size=40))
    assert result["low"] < 0 < result["high"]


def test_spearman_needs_variation():
    assert np.isnan(spearman_with_ci([1, 1, 1, 1], [1, 2, 3, 4])["rho"])


def test_loglog_slope_recovers_a_power_law():
    widths = np.array([32, 64, 128, 256, 512])
    assert loglog_slope(widths, 3.0 * widths ** (-0.25)) == pytest.approx(-0.25)
    assert np.isnan(loglog_slope([64, 64], [1.0, 2.0]))


def test_each_pair_gets_the_mean_dimension_of_its_two_models():
    keys = ["width"]
    dims = pd.DataFrame(
        [{"width": 8, "seed": s, "layer": layer, "estimator": "pr_cov", "value": v}
         for s, layer, v in [(0, "P0", 2.0), (0, "P1", 4.0), (1, "P0", 6.0), (1, "P1", 8.0)]]
    )  # fmt: skip
    barriers = pd.DataFrame(
        [{"width": 8, "seed_a": 0, "seed_b": 1, "method": m, "split": "test", "metric": "loss", "barrier": 0.1}
         for m in ("cov_weight_matching", "identity")]
    )  # fmt: skip
    out = barrier_with_dimension(barriers, dims, keys)
    assert list(out["method"]) == ["cov_weight_matching"]
    assert out["dimension"].item() == pytest.approx((3.0 + 7.0) / 2)
