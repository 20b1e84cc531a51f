"""The report states what the numbers say, and its tables aggregate over pairs correctly."""

import itertools

import pandas as pd
import pytest

from lmcot import report


def fake_barriers(test_loss_barrier):
    """Barrier rows for 3 pairs; ``test_loss_barrier[(width, method)]`` sets that cell's test loss barrier."""
    rows = []
    for (width, method), value in test_loss_barrier.items():
        for (seed_a, seed_b), split, metric in itertools.product(
            [(0, 1), (0, 2), (1, 2)], ["train", "test"], ["loss", "error"]
        ):
            barrier = value + 0.01 * seed_b if (split, metric) == ("test", "loss") else 0.0
            config = {"dataset": "mnist1d", "arch": "mlp", "depth": 2, "width": width, "lr": 0.05}
            pair = {"seed_a": seed_a, "seed_b": seed_b, "method": method, "split": split, "metric": metric}
            values = {"barrier": barrier, "midpoint": 1.0 + barrier, "max_minus_endpoint_mean": barrier}
            rows.append({**config, **pair, **values, "value_a": 1.0 + seed_a, "value_b": 1.0 + seed_b})
    return pd.DataFrame(rows)


def test_summary_is_mean_and_std_over_pairs():
    table = report.summary_table(fake_barriers({(32, "identity"): 1.0}), "test", "loss")
    assert table["mean"].item() == pytest.approx(1.0 + 0.01 * (1 + 2 + 2) / 3)
    assert table["pairs"].item() == 3


def test_endpoints_count_each_model_once():
    endpoints = report.endpoint_table(fake_barriers({(32, "identity"): 1.0}))
    assert endpoints["models"].item() == 3
    assert endpoints["test_loss"].item() == pytest.approx((1.0 + 2.0 + 3.0) / 3)


def test_findings_follow_the_numbers():
    good = fake_barriers(
        {(32, "identity"): 1.0, (32, "weight_matching"): 0.2, (512, "identity"): 0.8, (512, "weight_matching"): 0.1}
    )
    lines = report.findings(good, report.endpoint_table(good))
    assert any(
        "`weight_matching` gives a lower mean test loss barrier than `identity` in 2 of 2" in line for line in lines
    )
    bad = fake_barriers(
        {(32, "identity"): 1.0, (32, "weight_matching"): 0.2, (512, "identity"): 0.1, (512, "weight_matching"): 0.8}
    )
    lines = report.findings(bad, report.endpoint_table(bad))
    assert any("in 1 of 2 configurations; not in: mnist1d mlp d2 w512" in line for line in lines)
    assert any("with `weight_matching`, the mean test loss barrier does not fall" in line for line in lines)


def test_metric_keys_have_no_dots():
    metrics = report.metrics(fake_barriers({(32, "identity"): 1.0}))
    keys = list(metrics["test_loss_barrier"]["identity"])
    assert keys == ["mnist1d-mlp-d2-w32-lr0_05"]


def test_bias_variants_are_compared_pair_by_pair():
    rows = fake_barriers({(32, "weight_matching"): 0.30, (32, "weight_matching_without_biases"): 0.20})
    table = report.bias_comparison(rows)
    test = table[table["split"] == "test"].iloc[0]
    assert (test["method"], test["variant"]) == ("weight_matching", "weight_matching_without_biases")
    assert test["barrier"] == pytest.approx(0.30 + 0.01 * 5 / 3) and test["pairs"] == 3
    # every pair differs by exactly 0.1: the interval has no width and the variant is lower
    assert test["method minus variant, mean [95% interval]"] == "0.100 [0.100, 0.100]"
    assert test["lower barrier"] == "variant"
    train = table[table["split"] == "train"].iloc[0]  # equal barriers (0) on the train split
    assert train["lower barrier"] == "not resolved"
    assert report.bias_comparison(fake_barriers({(32, "weight_matching"): 0.3})).empty


def test_identical_methods_are_named_once_in_the_report():
    lines = report.identical_methods_lines([["naive_weight_matching", "ot_emd"]])
    assert len(lines) == 1 and "`naive_weight_matching` = `ot_emd`" in lines[0]
    assert report.identical_methods_lines([]) == []
