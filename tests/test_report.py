"""The report states what the numbers say, and its tables aggregate over pairs correctly."""

import itertools

import numpy as np
import pandas as pd
import pytest

from lmcot.report.markdown import alpha_h_verdicts, repair_section
from lmcot.report.metrics import count_leaves, headline_metrics
from lmcot.report.tables import (
    alpha_h_table,
    barycentre_origins,
    bias_comparison,
    fusion_summary,
    interval_table,
    method_by_width,
    start_table,
)


def fake_barriers(test_loss_barrier, correction="none"):
    """Barrier rows for 3 pairs, every path after ``correction``; ``test_loss_barrier[(width, method)]`` sets that
    cell's test loss barrier."""
    rows = []
    for (width, method), value in test_loss_barrier.items():
        for (seed_a, seed_b), split, metric in itertools.product(
            [(0, 1), (0, 2), (1, 2)], ["train", "test"], ["loss", "error"]
        ):
            barrier = value + 0.01 * seed_b if (split, metric) == ("test", "loss") else 0.0
            config = {"dataset": "mnist1d", "arch": "mlp", "depth": 2, "width": width, "lr": 0.05}
            pair = {"seed_a": seed_a, "seed_b": seed_b, "method": method, "correction": correction, "split": split,
                    "metric": metric}  # fmt: skip
            values = {"barrier": barrier, "midpoint": 1.0 + barrier, "max_minus_endpoint_mean": barrier}
            rows.append({**config, **pair, **values, "value_a": 1.0 + seed_a, "value_b": 1.0 + seed_b})
    return pd.DataFrame(rows)


def test_summary_is_the_mean_over_pairs_with_its_interval():
    table = interval_table(fake_barriers({(32, "identity"): 1.0}))
    row = table[(table["split"] == "test") & (table["metric"] == "loss")].iloc[0]
    assert row["barrier"] == pytest.approx(1.0 + 0.01 * (1 + 2 + 2) / 3) and row["pairs"] == 3
    # Student's t by hand: values 1.01, 1.02, 1.02; s = 0.01 / sqrt(3), se = 0.01 / 3, t_(0.975, 2) = 4.3027
    half = 4.302653 * 0.01 / 3
    assert (row["barrier_low"], row["barrier_high"]) == pytest.approx((row["barrier"] - half, row["barrier"] + half))


def test_the_summary_keeps_each_correction_apart_and_prints_it_after_the_method():
    rows = pd.concat([fake_barriers({(32, "identity"): 1.0}), fake_barriers({(32, "identity"): 0.5}, "repair")])
    table = interval_table(rows)
    test_loss = table[(table["split"] == "test") & (table["metric"] == "loss")].set_index("method")
    assert list(test_loss.index) == ["identity", "identity+repair"] and "correction" not in table
    assert test_loss.loc["identity+repair", "barrier"] == pytest.approx(0.5 + 0.01 * 5 / 3)
    assert test_loss.loc["identity", "pairs"] == test_loss.loc["identity+repair", "pairs"] == 3


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
    metrics = headline_metrics(barriers, overfit, findings, fusion)
    assert count_leaves(metrics) <= 30
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
    table = method_by_width(rows, overfit, {"identity": "identity"})
    assert list(table.columns) == ["method", "w32", "w512 †"]
    assert table.iloc[0]["w32"] == "0.000 / 1.017"  # train barrier 0 (fake rows), test mean over the 3 pairs


def test_bias_variants_are_compared_pair_by_pair():
    rows = fake_barriers({(32, "weight_matching"): 0.30, (32, "weight_matching_without_biases"): 0.20})
    table = bias_comparison(rows)
    test = table[table["split"] == "test"].iloc[0]
    assert (test["method"], test["variant"]) == ("weight_matching", "weight_matching_without_biases")
    assert test["barrier"] == pytest.approx(0.30 + 0.01 * 5 / 3) and test["pairs"] == 3
    # every pair differs by exactly 0.1: the interval has no width and the variant is lower
    assert test["method minus variant, mean [95% interval]"] == "0.100 [0.100, 0.100]"
    assert test["lower barrier"] == "variant"
    train = table[table["split"] == "train"].iloc[0]  # equal barriers (0) on the train split
    assert train["lower barrier"] == "not resolved"
    assert bias_comparison(fake_barriers({(32, "weight_matching"): 0.3})).empty


def test_corrected_paths_stay_out_of_the_metrics_and_get_a_claim_of_their_own():
    from lmcot.analysis import overfit_table
    from lmcot.study import REFERENCE_METHOD, study_findings, tally

    barriers, fusion = full_run()
    repaired = barriers[barriers["method"] == REFERENCE_METHOD].assign(correction="repair")
    repaired = repaired.assign(barrier=repaired["barrier"] - 0.25)  # REPAIR lowers every barrier by 0.25
    everything = pd.concat([barriers, repaired], ignore_index=True)
    overfit = overfit_table(everything, 0.5)
    findings = study_findings(everything, pd.DataFrame(), fusion, overfit)
    counts = tally(findings, "repair_lowers_barrier")
    assert (counts["supported"], counts["contradicted"], counts["checks"]) == (6, 0, 6)
    effect = next(f for f in findings if f.claim == "repair_lowers_barrier").estimate
    assert effect.mean == pytest.approx(0.25)
    plain = headline_metrics(barriers, overfit, findings, fusion)
    assert headline_metrics(everything, overfit, findings, fusion)["train"] == plain["train"]
    assert headline_metrics(everything, overfit, findings, fusion)["claims"]["repair"] == "+6 -0 /6"


def test_repair_section_puts_each_method_beside_its_corrected_path():
    plain, corrected = fake_barriers({(32, "identity"): 1.0}), fake_barriers({(32, "identity"): 0.5}, "repair")
    config = {"dataset": "mnist1d", "arch": "mlp", "depth": 2, "width": 32, "lr": 0.05}
    lines = repair_section(plain, corrected, pd.DataFrame([{**config, "overfit": False}]), {})
    table = "\n".join(lines)
    assert table.index("| identity  ") < table.index("| identity + repair")
    assert "0.000 / 0.517" in table and "0.000 / 1.017" in table
    assert repair_section(plain, corrected.iloc[:0], pd.DataFrame(), {}) == []


def fusion_rows(starts, costs_by_start, chosen="seed 1", equals=""):
    """fuse-stage rows of one configuration: test accuracy per start, the fused model (from ``chosen``, equal to
    one-shot fusion from ``equals``), vanilla averaging and one-shot fusion from seeds 0 and 1 (accuracy 0.4 and
    0.7); and its cost rows (2 layers, 2 iterations each)."""
    config = {"dataset": "mnist1d", "arch": "mlp", "depth": 2, "width": 32, "lr": 0.05}
    rows = [{**config, "kind": "fused_start", "model": f"start: {s}", "target_width": 32, "fine_tuned": False,
             "start": s, "test_accuracy": acc} for s, acc in starts.items()]  # fmt: skip
    rows += [
        {**config, "kind": "fused", "model": "fused (width 32)", "target_width": 32, "fine_tuned": False,
         "start": chosen, "test_accuracy": starts[chosen], "equals_one_shot": equals},
        {**config, "kind": "vanilla", "model": "vanilla average", "target_width": 32, "fine_tuned": False,
         "test_accuracy": 0.2},
    ]  # fmt: skip
    rows += [
        {**config, "kind": "one_shot", "model": f"one-shot OT fusion (anchor seed {seed})", "anchor": f"seed {seed}",
         "target_width": 32, "fine_tuned": False, "test_accuracy": accuracy}
        for seed, accuracy in ((0, 0.4), (1, 0.7))
    ]  # fmt: skip
    costs = [{**config, "target_width": 32, "start": s, "layer": layer, "iteration": it, "cost": c * (3 - it)}
             for s, c in costs_by_start.items() for layer in ("P0", "P1") for it in (1, 2)]  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(costs)


def test_start_table_sums_the_last_iteration_over_layers_and_marks_the_lowest():
    fusion, costs = fusion_rows(
        {"mean": 0.3, "seed 0": 0.5, "seed 1": 0.6}, {"mean": 2.0, "seed 0": 1.5, "seed 1": 1.0}
    )
    table = start_table(fusion, costs)
    assert list(table.columns) == ["lr", "start mean", "start seed 0", "start seed 1"]  # fixed ones dropped
    # last iteration: cost * 1 per layer, 2 layers
    assert table.iloc[0].tolist()[1:] == ["4 / 0.300", "3 / 0.500", "2 * / 0.600"]
    small = start_table(*fusion_rows({"mean": 0.3, "seed 1": 0.6}, {"mean": 0.000356171, "seed 1": 0.5}))
    assert small.iloc[0]["start mean"] == "0.0007123 * / 0.300"  # 4 significant digits, however small
    assert barycentre_origins(fusion) == {"fusions": 1, "mean": 0, "model": 1, "one_shot": 0}
    equal, _ = fusion_rows({"mean": 0.3, "seed 0": 0.5}, {"mean": 2.0, "seed 0": 1.0}, "mean", equals="seed 0")
    assert barycentre_origins(equal) == {"fusions": 1, "mean": 1, "model": 0, "one_shot": 1}
    summary = fusion_summary(fusion)
    assert summary.iloc[0]["over starts"] == "0.300–0.600" and "fused start" not in summary
    assert summary.iloc[0]["one shot"] == pytest.approx(0.55) and summary.iloc[0]["one shot anchors"] == "0.400–0.700"


def test_alpha_h_ablation_says_whether_the_best_fusion_beats_averaging_and_by_how_much():
    config = {"dataset": "mnist1d", "arch": "lstm", "depth": 1, "width": 32, "lr": 0.05}
    rows = [
        {
            **config,
            "kind": "fused_alpha_h",
            "model": f"alpha_h = {a:g}",
            "target_width": 32,
            "fine_tuned": False,
            "alpha_h": a,
            "test_accuracy": acc,
        }
        for a, acc in ((0.0, 0.15), (1.0, 0.25))
    ]
    rows += [{**config, "kind": "vanilla", "model": "vanilla average", "target_width": 32, "fine_tuned": False,
              "test_accuracy": 0.2},
             {**config, "kind": "input", "model": "seed 0", "target_width": 32, "fine_tuned": False,
              "test_accuracy": 0.8}]  # fmt: skip
    table = alpha_h_table(pd.DataFrame(rows))
    assert list(table.columns) == ["lr", "inputs (mean)", "vanilla", "alpha_h 0", "alpha_h 1"]
    (line,) = alpha_h_verdicts(table.assign(arch="lstm"))
    assert "alpha_h = 1, 0.250) beats vanilla averaging (0.200) by +0.050" in line
    worse = pd.DataFrame(rows).assign(test_accuracy=lambda t: t["test_accuracy"].where(t["kind"] != "vanilla", 0.3))
    (line,) = alpha_h_verdicts(alpha_h_table(worse))
    assert "does not beat vanilla averaging (0.300) by -0.050" in line


def test_plane_figure_names_give_width_and_learning_rate_with_or_without_heads():
    from lmcot.report.markdown import _width_lr

    assert _width_lr("plane_mnist1d-vit-d2-w64-h4-lr0.001") == (64, 0.001)
    assert _width_lr("plane_mnist1d-mlp-d2-w512-lr0.05") == (512, 0.05)
    assert _width_lr("plane_digits-mlp-d2-w8-lr1e-05") == (8, 1e-05)


def test_the_summary_answers_each_question_in_a_sentence_with_its_evidence_before_any_table():
    from pathlib import Path

    from lmcot.analysis import overfit_table
    from lmcot.config import load_params
    from lmcot.report.summary import summary_section
    from lmcot.study import findings_table, study_findings

    barriers, fusion = full_run()
    rng = np.random.default_rng(0)
    fusion = fusion.assign(test_accuracy=fusion["test_accuracy"] + 0.01 * rng.standard_normal(len(fusion)))
    overfit = overfit_table(barriers, 0.5, 0.5)
    findings = study_findings(barriers, pd.DataFrame(), fusion, overfit, "sgd")
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    lines = summary_section(params, [], overfit, findings, findings_table(findings), [])
    text = "\n".join(lines)
    first_table = next(i for i, line in enumerate(lines) if line.startswith("|"))
    questions = [i for i, line in enumerate(lines) if line.startswith("**") and ". Does" in line]
    assert questions and max(questions) < first_table  # every answer before any table
    # numbered among the questions the run can answer: here no dimensions, so fusion is the fifth
    fused = lines.index("**5. Does Wasserstein-barycentre fusion beat averaging the weights?** "
                        "(Akash, Li and Garcia Trillos 2022)")  # fmt: skip
    assert lines[fused + 2] == (
        "*Yes*, in every cell where it applies (6 of 6): Fusing by Wasserstein barycentre gives a more accurate "
        "model than averaging the weights unaligned."
    )
    evidence = [line for line in lines[fused + 3 :] if line.startswith("- ")][:6]
    assert evidence[0] == (
        "- lr 0.001, train split: +0.400 accuracy [0.400, 0.400], n = 3 groups of fused models (by width: "
        "w32 +0.400; w128 +0.400; w512 +0.400), Holm-adjusted p < 0.001: **supported**."
    )  # fused 0.8 minus vanilla 0.4 on the train split, one group per width
    # the identity everywhere: no effect, so the alignment question has no verdict anywhere
    assert "**1. Does aligning the neurons lower the loss barrier?**" in text
    assert "*Not enough evidence* in any of the 6 cells where it applies." in text
    assert "Holm's method over the" in text and "cells tested in this run" in text
