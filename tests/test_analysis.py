"""Methods that are one computation are found and counted once; overfit endpoints are flagged."""

import numpy as np
import pandas as pd
import pytest

from lmcot.analysis import (
    MethodGroup,
    endpoint_losses,
    independent_pairs,
    merge_identical,
    method_groups,
    method_label,
    overfit_table,
    paired_difference,
    slope_interval,
)


def record(method, config, pair, perm):
    return {"method": method, "configuration": config, "seed_a": pair[0], "seed_b": pair[1],
            "permutations": {"P0": perm, "P1": [0, 1, 2]}}  # fmt: skip


def alignments():
    """Two configurations of three pairs: ot_emd repeats naive everywhere, ot_sinkhorn in 5 of 6 pairs."""
    out = []
    for config in ("c1", "c2"):
        for i, pair in enumerate([(0, 1), (2, 3), (4, 5)]):
            perm = [[1, 0, 2], [2, 1, 0], [0, 2, 1]][i]
            out += [record("identity", config, pair, [0, 1, 2]), record("naive", config, pair, perm),
                    record("ot_emd", config, pair, perm),
                    record("ot_sinkhorn", config, pair, [0, 1, 2] if (config, i) == ("c2", 2) else perm)]  # fmt: skip
    return out


def test_methods_identical_in_every_pair_form_one_group_with_its_count():
    groups = method_groups(alignments(), ["identity", "naive", "ot_emd", "ot_sinkhorn"])
    assert [g.members for g in groups] == [("identity",), ("naive", "ot_emd"), ("ot_sinkhorn",)]
    assert groups[1].note() == "ot_emd = naive here: identical permutations in 6 of 6 pairs"
    assert groups[1].label == "naive (= ot_emd)" and groups[2].label == "ot_sinkhorn"
    three = MethodGroup(("naive", "ot_emd", "ot_sinkhorn"), 5, 6)
    assert three.note() == "ot_emd = ot_sinkhorn = naive here: identical permutations in 5 of 6 pairs"
    assert three.label == "naive (= ot_emd, ot_sinkhorn)"


def test_a_group_is_named_by_the_first_method_of_the_params():
    groups = method_groups(alignments(), ["ot_emd", "naive", "identity"])
    assert groups[0].members == ("ot_emd", "naive")


def test_merging_keeps_one_method_per_group_with_its_corrections():
    groups = [MethodGroup(("naive", "ot_emd"), 6, 6), MethodGroup(("identity",))]
    table = pd.DataFrame(
        {"method": ["naive", "ot_emd", "ot_emd", "naive", "identity"],
         "correction": ["none", "none", "repair", "repair", "none"]}
    )  # fmt: skip
    merged = merge_identical(table, groups)
    assert list(zip(merged["method"], merged["correction"], strict=True)) == [
        ("naive", "none"), ("naive", "repair"), ("identity", "none")
    ]  # fmt: skip


def test_a_path_is_printed_as_its_method_followed_by_its_correction():
    assert method_label("weight_matching", "none") == "weight_matching"
    assert method_label("weight_matching", "repair") == "weight_matching+repair"
    assert method_label("identity") == "identity"


def endpoint_rows(train_loss, test_loss):
    """Barrier rows of one configuration and one pair whose two models have the given losses."""
    rows = []
    for split, loss in (("train", train_loss), ("test", test_loss)):
        for metric, value in (("loss", loss), ("error", 0.25 if split == "train" else 0.5)):
            config = {"dataset": "d", "arch": "mlp", "depth": 2, "width": 8, "lr": 0.1}
            pair = {"seed_a": 0, "seed_b": 1, "method": "identity", "split": split, "metric": metric}
            rows.append({**config, **pair, "value_a": value, "value_b": value})
    return pd.DataFrame(rows)


def test_overfit_is_a_test_minus_train_loss_gap_above_the_threshold():
    table = overfit_table(endpoint_rows(0.1, 0.9), max_gap=0.5)
    row = table.iloc[0]
    assert (row["train_loss"], row["test_loss"], row["gap"]) == pytest.approx((0.1, 0.9, 0.8))
    assert (row["train_accuracy"], row["test_accuracy"], row["models"]) == pytest.approx((0.75, 0.5, 2))
    assert bool(row["overfit"])
    assert not overfit_table(endpoint_rows(0.1, 0.9), max_gap=0.8).iloc[0]["overfit"]  # the gap must exceed it
    # a ratio rule (test > 2 x train) would flag this well-fit pair; the gap rule does not
    assert not overfit_table(endpoint_rows(0.01, 0.03), max_gap=0.5).iloc[0]["overfit"]


def test_a_method_in_no_group_is_kept_and_a_method_seen_in_other_pairs_only_is_apart():
    groups = [MethodGroup(("naive", "ot_emd"), 6, 6)]
    table = pd.DataFrame({"method": ["naive", "ot_emd", "mine"], "correction": ["none"] * 3})
    assert merge_identical(table, groups)["method"].tolist() == ["naive", "mine"]
    # ot_sinkhorn ran on pairs of c1 only, naive on c2 only: no pair in common, so not one computation
    records = [record("naive", "c2", (0, 1), [1, 0, 2]), record("ot_sinkhorn", "c1", (0, 1), [1, 0, 2])]
    groups = method_groups(records)
    assert [g.members for g in groups] == [("naive",), ("ot_sinkhorn",)]
    assert [(g.identical, g.pairs) for g in groups] == [(0, 0), (0, 0)]


def test_a_slope_leaves_out_samples_with_no_value_and_needs_two_widths():
    estimate = slope_interval([0.0, 0.0, 1.0, 1.0, np.nan, 1.0], [1.0, 1.2, 0.5, 0.7, 9.0, np.nan])
    assert estimate.n == 4 and estimate.mean == pytest.approx(-0.5)
    one = slope_interval([1.0, 1.0], [1.0, 2.0])
    assert one.n == 0 and all(np.isnan(v) for v in (one.mean, one.low, one.high))
    single = slope_interval([0.0, 1.0, 1.0], [1.0, 2.0, 2.5])  # one sample at x = 0: a slope, no interval
    assert (single.mean, single.n) == (pytest.approx(1.25), 3) and np.isnan(single.low) and np.isnan(single.high)
    two = slope_interval([0.0, 0.0, 1.0, 1.0], [1.0, 1.2, 0.5, 0.7])  # two samples at each x are enough
    assert np.isfinite(two.low) and two.df == pytest.approx(2.0)  # Welch with equal variances: 1 + 1
    exact = slope_interval([0.0, 0.0, 1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    assert (exact.mean, exact.low, exact.high, exact.se, exact.df) == (1.0, 1.0, 1.0, 0.0, 4.0)  # no spread: n - 2


def test_pairs_are_kept_only_while_they_share_no_model_with_a_kept_one():
    rows = pd.DataFrame({"dataset": "d", "arch": "mlp", "depth": 2, "width": 8, "lr": 0.1,
                         "seed_a": [0, 2, 1, 4], "seed_b": [1, 3, 4, 5]})  # fmt: skip
    kept = independent_pairs(rows)
    assert list(zip(kept["seed_a"], kept["seed_b"], strict=True)) == [(0, 1), (2, 3), (4, 5)]  # 1-4 reuses seed 1
    assert independent_pairs(rows.iloc[:0]).empty


def test_endpoints_of_a_run_on_one_split_leave_the_other_splits_columns_empty():
    train_only = endpoint_rows(0.1, 0.9)
    train_only = train_only[train_only["split"] == "train"]
    models = endpoint_losses(train_only)
    assert models["test_loss"].isna().all() and models["test_error"].isna().all()
    assert models["test_loss"].dtype == float  # numeric NaN: tables print it as empty, not as "None"
    table = overfit_table(train_only, 0.5)
    assert not table["overfit"].any() and table["train_accuracy"].tolist() == [0.75]


def test_a_paired_difference_without_one_of_its_methods_is_empty_with_its_columns():
    rows = endpoint_rows(0.1, 0.9).assign(barrier=1.0)
    empty = paired_difference(rows, "barrier", "weight_matching", "identity", ["dataset", "width"])
    assert empty.empty and list(empty.columns) == ["dataset", "width", "seed_a", "seed_b", "effect"]


def test_disjoint_pairs_keep_the_configurations_in_the_order_of_the_rows():
    rows = pd.DataFrame({"dataset": "d", "arch": "mlp", "depth": 2, "width": [128, 128, 32, 32], "lr": 0.1,
                         "seed_a": [0, 0, 0, 2], "seed_b": [1, 2, 1, 3]})  # fmt: skip
    kept = independent_pairs(rows)
    assert kept.index.tolist() == [0, 2, 3]  # width 128 first, as in the rows; its pair 0-2 reuses seed 0
