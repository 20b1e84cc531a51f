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


def test_summary_is_the_mean_over_pairs_with_its_interval():
    table = report.interval_table(fake_barriers({(32, "identity"): 1.0}))
    row = table[(table["split"] == "test") & (table["metric"] == "loss")].iloc[0]
    assert row["barrier"] == pytest.approx(1.0 + 0.01 * (1 + 2 + 2) / 3) and row["pairs"] == 3
    assert 1.01 <= row["barrier_low"] <= row["barrier"] <= row["barrier_high"] <= 1.02


def full_run():
    """A default-sized sweep: 9 methods (3 of them one computation), 3 widths, 3 learning rates, 4 pairs."""
    from test_study import synthetic

    methods = ["identity", "weight_matching", "activation_matching", "naive_weight_matching", "cov_weight_matching",
               "activation_covariance", "ot_emd", "ot_sinkhorn", "barycenter"]  # fmt: skip
    base = synthetic(lambda m, w, lr, i: 1.0, widths=(32, 128, 512), lrs=(0.001, 0.005, 0.05),
                     pairs=[(0, 1), (2, 3), (4, 5), (6, 7)])  # fmt: skip
    base = base[base["method"] == "identity"]
    barriers = pd.concat([base.assign(method=m) for m in methods], ignore_index=True)
    fusion = pd.DataFrame(
        [{"dataset": "mnist1d", "arch": "mlp", "depth": 2, "width": w, "lr": lr, "kind": kind, "model": kind,
          "target_width": w, "fine_tuned": False, "train_accuracy": acc + 0.1, "test_accuracy": acc}
         for w in (32, 128, 512) for lr in (0.001, 0.005, 0.05)
         for kind, acc in (("input", 0.8), ("fused", 0.7), ("vanilla", 0.3))]
    )  # fmt: skip
    return barriers, fusion


def test_metrics_are_few_enough_to_compare_experiments():
    from lmcot.analysis import overfit_table
    from lmcot.study import study_findings

    barriers, fusion = full_run()
    overfit = overfit_table(barriers, 0.5)
    findings = study_findings(barriers, pd.DataFrame(), fusion, overfit)
    metrics = report.metrics(barriers, overfit, findings, fusion)
    assert report.count_leaves(metrics) <= 30
    assert metrics["fusion_gain"] == pytest.approx(0.4)
    assert metrics["endpoints"]["overfit"] == 0
    assert list(metrics["train"]) == ["unaligned", "weights", "data", "barycentre"]
    assert list(metrics)[:2] == ["train", "test"]  # the order dvc exp show prints them in
    assert metrics["claims"]["fusion"] == "+6 -0 /6"  # 3 learning rates x 2 splits, all supported
    assert max(len(f"{group}.{key}") for group, values in metrics.items() if isinstance(values, dict)
               for key in values) <= 22  # fmt: skip


def test_method_by_width_puts_train_and_test_side_by_side_and_marks_overfit_widths():
    rows = fake_barriers({(32, "identity"): 1.0, (512, "identity"): 0.5})
    overfit = pd.DataFrame({"width": [32, 512], "overfit": [False, True]})
    table = report.method_by_width(rows, overfit, {"identity": "identity"})
    assert list(table.columns) == ["method", "w32", "w512 †"]
    assert table.iloc[0]["w32"] == "0.000 / 1.017"  # train barrier 0 (fake rows), test mean over the 3 pairs


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
