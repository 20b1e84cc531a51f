"""The claims every run checks: verdicts from synthetic tables whose answer is known."""

import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from lmcot.analysis import (
    CONTRADICTED,
    NOT_APPLICABLE,
    SUPPORTED,
    UNDECIDED,
    Estimate,
    holm,
    independent_pairs,
    overfit_table,
)
from lmcot.choices import NO_CORRECTION
from lmcot.study import (
    Finding,
    family,
    findings_records,
    findings_table,
    format_p,
    fusion_gain,
    method_colours,
    method_order,
    path_order,
    study_findings,
    tally,
    uncorrected,
)

PAIRS = [(0, 1), (2, 3), (4, 5)]


def synthetic(midpoint, barrier=None, widths=(32, 128), lrs=(0.01,), pairs=PAIRS, train_loss=0.2, test_loss=0.3):
    """Barrier rows of one study: ``midpoint(method, width, lr, pair_index)`` gives the midpoint loss on both
    splits, ``barrier(...)`` the barrier and max_minus_endpoint_mean (default: midpoint minus the endpoints')."""
    rows = []
    for width, lr, (i, pair), method, split in itertools.product(
        widths, lrs, enumerate(pairs), ("identity", "naive_weight_matching", "cov_weight_matching"), ("train", "test")
    ):
        end = train_loss if split == "train" else test_loss
        mid = midpoint(method, width, lr, i)
        bar = barrier(method, width, lr, i) if barrier else mid - end
        rows += [
            {"dataset": "mnist1d", "arch": "mlp", "depth": 2, "width": width, "lr": lr, "seed_a": pair[0],
             "seed_b": pair[1], "method": method, "correction": "none", "split": split, "metric": metric,
             "midpoint": mid, "barrier": bar,
             "max_minus_endpoint_mean": bar, "value_a": end, "value_b": end}
            for metric in ("loss", "error")
        ]  # fmt: skip
    return pd.DataFrame(rows)


def findings_of(barriers, max_gap=0.5, min_train_accuracy=0.0, optimizer="sgd", fusion=None):
    empty = pd.DataFrame()
    overfit = overfit_table(barriers, max_gap, min_train_accuracy)
    return study_findings(barriers, empty, empty if fusion is None else fusion, overfit, optimizer)


def verdict_of(findings, claim, split="train"):
    (finding,) = [f for f in findings if f.claim == claim and f.split == split]
    return finding


def test_covariance_matching_lower_in_every_pair_is_supported():
    table = synthetic(lambda m, w, lr, i: {"cov_weight_matching": 0.5}.get(m, 0.7) + 0.01 * i)
    finding = verdict_of(findings_of(table), "cov_beats_naive")
    assert finding.verdict == SUPPORTED
    assert (finding.estimate.mean, finding.estimate.low, finding.estimate.high) == pytest.approx((0.2, 0.2, 0.2))
    assert finding.estimate.n == 6  # 3 pairs at each of 2 widths


def test_covariance_matching_higher_in_every_pair_is_contradicted():
    table = synthetic(lambda m, w, lr, i: {"cov_weight_matching": 0.9}.get(m, 0.7) + 0.01 * i)
    assert verdict_of(findings_of(table), "cov_beats_naive").verdict == CONTRADICTED


def test_an_effect_of_either_sign_or_too_few_pairs_is_not_enough_evidence():
    mixed = synthetic(lambda m, w, lr, i: 0.7 + (0.1 * (-1) ** i if m == "cov_weight_matching" else 0))
    assert verdict_of(findings_of(mixed), "cov_beats_naive").verdict == UNDECIDED
    lower = lambda m, w, lr, i: {"cov_weight_matching": 0.5}.get(m, 0.7)  # noqa: E731
    few = synthetic(lower, widths=(32,), pairs=PAIRS[:2])
    finding = verdict_of(findings_of(few), "cov_beats_naive")
    assert finding.verdict == UNDECIDED and finding.estimate.n == 2 and "fewer than 3" in finding.reason


def test_the_width_slope_is_fitted_on_the_unclamped_barrier():
    """The naive barrier halves per doubling from 0.4 (w32) to 0.1 (w128) with noise of +-0.01: the fall per
    doubling is 0.15; negative values (possible for a test loss) are kept, not clamped or dropped."""
    level = {32: 0.4, 64: 0.25, 128: 0.1, 256: -0.05}
    table = synthetic(lambda m, w, lr, i: 1.0, lambda m, w, lr, i: level[w] + 0.01 * (i - 1), widths=tuple(level))
    finding = verdict_of(findings_of(table), "barrier_falls_with_width", "test")
    assert finding.estimate.mean == pytest.approx(0.15) and finding.verdict == SUPPORTED
    assert finding.estimate.n == 12  # 3 pairs at each of 4 widths, all independent
    # by hand: log2 widths 5..8, weights c = 3 (x_k - 6.5) / 15 = (-0.3, -0.1, 0.1, 0.3); each width's variance
    # 1e-4 over 3 pairs: var = sum c^2 1e-4 / 3 = 0.2e-4 / 3; Welch-Satterthwaite df = var^2 / sum((c^2 1e-4 / 3)^2 / 2)
    variance = 0.2e-4 / 3
    df = variance**2 / sum((c**2 * 1e-4 / 3) ** 2 / 2 for c in (-0.3, -0.1, 0.1, 0.3))
    assert (finding.estimate.se, finding.estimate.df) == pytest.approx((variance**0.5, df))
    assert df == pytest.approx(4.878, abs=1e-3)
    rising = synthetic(lambda m, w, lr, i: 1.0, lambda m, w, lr, i: -level[w] + 0.01 * (i - 1), widths=tuple(level))
    assert verdict_of(findings_of(rising), "barrier_falls_with_width").verdict == CONTRADICTED


def test_uncorrected_keeps_the_paths_whose_correction_is_none():
    plain = synthetic(lambda m, w, lr, i: 1.0)
    repaired = plain.assign(correction="repair")
    both = pd.concat([plain, repaired, plain.assign(correction="reset")], ignore_index=True)
    kept = uncorrected(both)
    assert len(kept) == len(plain) and set(kept["correction"]) == {NO_CORRECTION} == {"none"}
    assert set(kept["method"]) == set(plain["method"])  # the method column names the alignment alone
    assert path_order(both)[:3] == [("identity", "none"), ("identity", "repair"), ("identity", "reset")]


def test_corrected_paths_enter_the_repair_claim_only():
    """REPAIR rows that rise with width change neither the width slope nor the other claims."""
    level = {32: 0.4, 64: 0.25, 128: 0.1}
    table = synthetic(lambda m, w, lr, i: 1.0, lambda m, w, lr, i: level[w] + 0.01 * (i - 1), widths=tuple(level))
    repaired = table.assign(correction="repair", barrier=-table["barrier"], midpoint=0.0)
    plain_findings = findings_of(table)
    both = findings_of(pd.concat([table, repaired], ignore_index=True))
    numbers = lambda findings: [(f.claim, f.split, f.estimate, f.verdict) for f in findings]  # noqa: E731
    # the same effects and verdicts (the Holm family grows by the REPAIR cells, so adjusted p-values differ)
    assert numbers([f for f in both if f.claim != "repair_lowers_barrier"]) == numbers(plain_findings)
    repair = verdict_of(both, "repair_lowers_barrier")
    assert repair.verdict == SUPPORTED and repair.estimate.n == 9  # 3 pairs x 3 widths, each twice its barrier


def test_train_and_test_are_checked_separately_and_overfit_test_cells_are_marked():
    # identity's barrier is higher on train only; on test the two are equal
    barrier = lambda m, w, lr, i: 0.3 + 0.01 * i if m == "identity" else 0.1 + 0.01 * i  # noqa: E731
    table = synthetic(lambda m, w, lr, i: 1.0, barrier, train_loss=0.1, test_loss=1.2)
    test_rows = (table["split"] == "test") & (table["method"] == "identity") & (table["metric"] == "loss")
    table.loc[test_rows, "barrier"] = 0.1 + 0.01 * (table.loc[test_rows, "seed_a"] // 2)
    findings = findings_of(table)
    assert verdict_of(findings, "alignment_lowers_barrier", "train").verdict == SUPPORTED
    test = verdict_of(findings, "alignment_lowers_barrier", "test")
    assert test.verdict == NOT_APPLICABLE and test.reason.startswith("overfit endpoints (w32 lr0.01, w128 lr0.01")
    assert "1.10 nats above train" in test.reason  # the gap, 1.1 nats > report.overfit_gap 0.5
    assert test.cell().startswith("*not applicable* (overfit endpoints): 0.000 [0.000, 0.000], n = 6")
    assert verdict_of(findings, "alignment_lowers_barrier", "train").cell().startswith("**supported**: 0.200")
    summary = findings_table(findings)
    assert list(summary.columns) == ["study", "claim", "split", "lr 0.01"]
    assert summary["claim"].tolist()[:2] == ["alignment_lowers_barrier", "alignment_lowers_barrier"]


def test_each_method_keeps_its_colour_whatever_else_was_run():
    few = method_colours(["identity", "cov_weight_matching"])
    many = method_colours(["barycenter", "weight_matching", "cov_weight_matching", "identity", "ot_emd"])
    assert few["cov_weight_matching"] == many["cov_weight_matching"] and few["identity"] == many["identity"]
    assert method_order(["barycenter", "cov_weight_matching", "identity", "weight_matching"]) == [
        "identity", "weight_matching", "cov_weight_matching", "barycenter"
    ]  # fmt: skip
    assert len(set(many.values())) == len(many)
    assert np.allclose(few["identity"], few["identity"])


def test_a_claim_is_judged_only_in_the_regime_of_the_paper_it_comes_from():
    """Ferbach et al. claim covariance-aware matching helps SGD-trained MLPs below learning rate 0.1: at 0.1, or
    trained by Adam, its cell is not applicable, whatever the effect; claims without that limit are judged."""
    better = lambda m, w, lr, i: {"cov_weight_matching": 0.5}.get(m, 0.7) + 0.01 * i  # noqa: E731
    findings = findings_of(synthetic(better, lrs=(0.01, 0.1)))
    cov = {f.lr: f for f in findings if f.claim == "cov_beats_naive" and f.split == "train"}
    assert cov[0.01].verdict == SUPPORTED
    assert cov[0.1].verdict == NOT_APPLICABLE and np.isnan(cov[0.1].p_adjusted)
    assert cov[0.1].reason == (
        "outside the claim's regime (SGD-trained MLPs at learning rates below 0.1): learning rate 0.1"
    )
    assert cov[0.1].estimate.mean == pytest.approx(0.2)  # the effect is still shown
    adam = findings_of(synthetic(better, lrs=(0.01,)), optimizer="adam")
    assert verdict_of(adam, "cov_beats_naive").reason.endswith("trained by adam")
    assert verdict_of(adam, "alignment_lowers_barrier").verdict != NOT_APPLICABLE


def test_undertrained_endpoints_make_every_cell_not_applicable_and_leave_the_holm_family():
    """Endpoints at train accuracy 0.8 (error 0.2) under report.min_train_accuracy 0.9: no verdict on any claim
    of that learning rate; the other learning rate's cells are adjusted among themselves only."""
    better = lambda m, w, lr, i: {"cov_weight_matching": 0.5}.get(m, 0.7) + 0.01 * i  # noqa: E731
    table = synthetic(better, lrs=(0.01, 0.05))
    trained = (table["lr"] == 0.05) & (table["metric"] == "error")
    table.loc[trained, ["value_a", "value_b"]] = 0.05
    findings = findings_of(table, min_train_accuracy=0.9)
    weak = [f for f in findings if f.lr == 0.01]
    assert weak and {f.verdict for f in weak} == {NOT_APPLICABLE}
    assert weak[0].reason == (
        "undertrained endpoints (w32 lr0.01, w128 lr0.01: mean train accuracy down to 0.80, below "
        "report.min_train_accuracy)"
    )
    tested = [f for f in findings if np.isfinite(f.p)]
    assert tested and all(f.lr == 0.05 for f in tested)
    assert [f.p_adjusted for f in tested] == pytest.approx(list(holm([f.p for f in tested])))
    assert all(f"over {len(tested)} tested cells" in f.reason for f in tested)


def test_pairs_that_share_models_enter_the_verdicts_as_a_disjoint_subset():
    """align.pairs: all gives pairs 0-1, 0-2, 1-2, 2-3, ...: only 0-1 and 2-3 are independent samples."""
    shared = [(0, 1), (0, 2), (1, 2), (2, 3), (1, 3)]
    table = synthetic(lambda m, w, lr, i: {"cov_weight_matching": 0.5}.get(m, 0.7) + 0.01 * i, pairs=shared)
    finding = verdict_of(findings_of(table), "cov_beats_naive")
    assert finding.estimate.n == 4  # 2 independent pairs at each of 2 widths
    kept = independent_pairs(table)
    assert sorted(set(zip(kept["seed_a"], kept["seed_b"], strict=True))) == [(0, 1), (2, 3)]


def test_fusion_is_judged_over_the_disjoint_groups_of_every_width():
    """Two groups of fused models at each of two widths: four independent gains of fused over vanilla averaging."""
    table = synthetic(lambda m, w, lr, i: 1.0)
    rows = []
    for width, group in itertools.product((32, 128), (0, 1)):
        config = {"dataset": "mnist1d", "arch": "mlp", "depth": 2, "width": width, "lr": 0.01, "group": group}
        for kind, accuracy in (("fused", 0.9 + 0.01 * group), ("vanilla", 0.5)):
            rows.append({**config, "kind": kind, "target_width": width, "fine_tuned": False,
                         "train_accuracy": accuracy, "test_accuracy": accuracy - 0.05})  # fmt: skip
    fusion = pd.DataFrame(rows)
    assert len(fusion_gain(fusion, "test")) == 4
    finding = verdict_of(findings_of(table, fusion=fusion), "fusion_beats_averaging")
    assert finding.estimate.n == 4 and finding.estimate.mean == pytest.approx(0.405)
    assert finding.by_width == ((32, pytest.approx(0.405)), (128, pytest.approx(0.405)))


def dimension_rows(gap_by_lr: dict, widths=(32, 128), seeds=range(4), layers=("P0", "P1")) -> pd.DataFrame:
    """dimensions.csv rows of one study: pr_weights 100 + the gap and pr_cov 100 at every width, except that the
    widest width's gap is ``gap_by_lr[lr]`` plus 0.1 per seed; narrower widths have the opposite gap."""
    rows = []
    for lr, gap in gap_by_lr.items():
        for width, seed, layer in itertools.product(widths, seeds, layers):
            g = gap + 0.1 * seed if width == max(widths) else -gap
            for estimator, value in (("pr_weights", 100.0 + g), ("pr_cov", 100.0), ("twonn", 5.0)):
                rows.append({"dataset": "mnist1d", "arch": "mlp", "depth": 2, "width": width, "lr": lr, "seed": seed,
                             "layer": layer, "estimator": estimator, "value": value})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_dimension_claim_is_judged_on_the_models_of_the_widest_width_per_learning_rate():
    table = synthetic(lambda m, w, lr, i: 1.0, lrs=(0.01, 0.05))
    dims = dimension_rows({0.01: 20.0, 0.05: -3.0})
    findings = study_findings(table, dims, pd.DataFrame(), overfit_table(table, 0.5), "sgd")
    cells = {f.lr: f for f in findings if f.claim == "cov_dimension_below_weights"}
    assert set(cells) == {0.01, 0.05} and {f.split for f in cells.values()} == {""}
    assert cells[0.01].estimate.mean == pytest.approx(20.15) and cells[0.01].estimate.n == 4  # 4 models of w128
    assert cells[0.01].verdict == SUPPORTED and cells[0.05].verdict == CONTRADICTED
    no_cov = dims[dims["estimator"] != "pr_cov"]
    assert not [f for f in study_findings(table, no_cov, pd.DataFrame(), overfit_table(table, 0.5)) if f.split == ""]


def test_findings_come_in_learning_rate_order_with_their_records_and_table():
    """Findings are grouped per study and learning rate in sorted order whatever the rows' order; each becomes a
    row of findings.csv with every number, and a cell of the summary table (empty where a claim is not checked)."""
    lower = lambda m, w, lr, i: {"cov_weight_matching": 0.5}.get(m, 0.7) + 0.01 * i  # noqa: E731
    table = synthetic(lower, lrs=(0.01, 0.05))
    backwards = table.iloc[::-1].reset_index(drop=True)
    assert backwards["lr"].iloc[0] == 0.05  # the rows start at the larger learning rate
    findings = findings_of(backwards)
    assert [f.lr for f in findings][:1] == [0.01] and [f.lr for f in findings][-1] == 0.05
    records = findings_records(findings)
    assert list(records.columns) == ["study", "claim", "lr", "split", "effect", "low", "high", "n", "df", "p",
                                     "p_holm", "verdict", "reason"]  # fmt: skip
    row = records[(records["claim"] == "cov_beats_naive") & (records["split"] == "train") & (records["lr"] == 0.01)]
    finding = next(f for f in findings if (f.claim, f.split, f.lr) == ("cov_beats_naive", "train", 0.01))
    assert row.iloc[0].tolist() == [finding.study, "cov_beats_naive", 0.01, "train", finding.estimate.mean,
                                    finding.estimate.low, finding.estimate.high, 6, 5, finding.p,
                                    finding.p_adjusted, SUPPORTED, finding.reason]  # fmt: skip
    one_lr_only = findings + [replace(findings[0], claim="fusion_beats_averaging", lr=0.01)]
    summary = findings_table(one_lr_only)
    fused = summary[summary["claim"] == "fusion_beats_averaging"].iloc[0]
    assert fused["lr 0.05"] == "" and fused["lr 0.01"].startswith("**")


def test_two_widths_are_enough_for_a_slope_and_every_pooled_effect_shows_each_width():
    table = synthetic(lambda m, w, lr, i: {"identity": 0.9}.get(m, 0.7) + 0.01 * i, widths=(32, 512))
    findings = findings_of(table)
    slope = verdict_of(findings, "barrier_falls_with_width")
    assert slope.estimate.n == 6 and len(slope.by_width) == 2
    assert verdict_of(findings, "alignment_lowers_barrier").by_width == ((32, pytest.approx(0.2)),
                                                                        (512, pytest.approx(0.2)))  # fmt: skip


def test_a_run_with_only_its_test_split_and_only_the_claims_methods_is_checked():
    two = synthetic(lambda m, w, lr, i: {"identity": 0.9}.get(m, 0.7) + 0.01 * i)
    two = two[two["method"].isin(["identity", "naive_weight_matching"]) & (two["split"] == "test")]
    findings = findings_of(two)
    assert {(f.claim, f.split) for f in findings} == {("alignment_lowers_barrier", "test"),
                                                     ("barrier_falls_with_width", "test")}  # fmt: skip


def test_a_tally_counts_every_verdict():
    lower = lambda m, w, lr, i: {"cov_weight_matching": 0.9}.get(m, 0.7) + 0.01 * i  # noqa: E731
    findings = findings_of(synthetic(lower, lrs=(0.01, 0.1)))
    assert tally(findings, "cov_beats_naive") == {"checks": 4, "supported": 0, "contradicted": 2, "not_applicable": 2}


def test_a_cell_names_why_it_has_no_verdict_in_brief_and_prints_adjusted_p_values():
    estimate = Estimate(0.2, 0.1, 0.3, 6, 0.04, 5)
    cell = lambda reason, verdict=NOT_APPLICABLE, q=float("nan"): Finding(  # noqa: E731
        "cov_beats_naive", "s", 0.01, "train", estimate, verdict, reason, 0.01, q
    ).cell()
    assert cell("undertrained endpoints (w32 lr0.01: ...)").startswith(
        "*not applicable* (undertrained endpoints): 0.200"
    )
    assert cell("overfit endpoints (w32 lr0.01: ...)").startswith("*not applicable* (overfit endpoints)")
    assert cell("outside the claim's regime (...)").startswith("*not applicable* (outside the claim's regime)")
    assert cell("", SUPPORTED, 0.0004) == "**supported**: 0.200 [0.100, 0.300], n = 6, Holm p < 0.001"
    assert cell("", SUPPORTED, 0.001) == "**supported**: 0.200 [0.100, 0.300], n = 6, Holm p = 0.001"
    assert cell("", UNDECIDED, 0.5) == "**not enough evidence**: 0.200 [0.100, 0.300], n = 6, Holm p = 0.500"
    empty = Finding("cov_beats_naive", "s", 0.01, "train", Estimate(float("nan"), float("nan"), float("nan"), 0),
                    UNDECIDED, "")  # fmt: skip
    assert empty.cell() == "n/a"
    single = Finding("cov_beats_naive", "s", 0.01, "train", Estimate(0.5, float("nan"), float("nan"), 1), UNDECIDED, "")
    assert single.cell() == "**not enough evidence**: 0.500 (n = 1), n = 1"
    assert format_p(0.0009) == "< 0.001" and format_p(0.001) == "= 0.001" and format_p(0.25) == "= 0.250"


def test_an_unknown_method_sorts_last_in_a_family_of_its_own_with_a_colour_of_its_own():
    import seaborn as sns

    assert family("my_method") == "other" and family("barycenter") == "barycentre"
    assert method_order(["my_method", "identity", "another"]) == ["identity", "another", "my_method"]
    colours = method_colours(["identity", "weight_matching", "my_method", "another"])
    assert colours["identity"] == sns.color_palette("Greys_r", 3)[0]
    assert colours["weight_matching"] == sns.color_palette("Blues_r", 7)[0]
    others = sns.color_palette("Purples_r", 4)
    assert (colours["another"], colours["my_method"]) == (others[2], others[3])  # by their place in method_order
    assert method_colours(["my_method"])["my_method"] == sns.color_palette("Purples_r", 2)[0]


def test_each_study_reads_its_own_fusion_and_dimension_rows():
    """Two studies (an MLP and a CNN) at one learning rate: each claim reads the rows of its own study, not the
    other's that share the learning rate; the dimension claim needs only the two participation ratios."""
    mlp = synthetic(lambda m, w, lr, i: 1.0)
    both = pd.concat([mlp, mlp.assign(arch="cnn")], ignore_index=True)
    rows = []
    for arch, gain in (("mlp", 0.3), ("cnn", -0.3)):
        for width, group in itertools.product((32, 128), (0, 1)):
            config = {"dataset": "mnist1d", "arch": arch, "depth": 2, "width": width, "lr": 0.01, "group": group}
            for kind, accuracy in (("fused", 0.5 + gain + 0.01 * group), ("vanilla", 0.5)):
                rows.append({**config, "kind": kind, "target_width": width, "fine_tuned": False,
                             "train_accuracy": accuracy, "test_accuracy": accuracy})  # fmt: skip
    dims = dimension_rows({0.01: 20.0})
    dims = pd.concat([dims[dims["estimator"] != "twonn"], dims.assign(arch="cnn", value=0.0)], ignore_index=True)
    findings = study_findings(both, dims, pd.DataFrame(rows), overfit_table(both, 0.5), "sgd")
    fused = {f.study: f for f in findings if f.claim == "fusion_beats_averaging" and f.split == "train"}
    assert fused["mnist1d mlp d2"].verdict == SUPPORTED and fused["mnist1d cnn d2"].verdict == CONTRADICTED
    (dimension,) = [f for f in findings if f.claim == "cov_dimension_below_weights" and f.study == "mnist1d mlp d2"]
    assert dimension.estimate.mean == pytest.approx(20.15)
