"""Verdicts on the seed papers' claims: computed from effects with t-intervals over independent pairs,
contradictions only in the paper's regime with enough pairs, and the regime read from the params."""

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmcot.analysis import (
    CONTRADICTED,
    NOT_APPLICABLE,
    SUPPORTED,
    UNDECIDED,
    combine,
    identical_methods,
)
from lmcot.config import read_yaml, validate
from lmcot.replication import (
    REPLICATIONS,
    Run,
    Setting,
    _choose,
    _inputs_text,
    _steps_setting,
    markdown,
    overfit_note,
    replicate,
    train_size,
    untrained_note,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "presets"))
from run import flatten, merged  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    """Every replication draws its figure; close them after each test."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def preset_params(name: str, **changes) -> dict:
    overrides = {**flatten(read_yaml(ROOT / f"presets/{name}.yaml")), **changes}
    return validate(merged(read_yaml(ROOT / "params.yaml"), overrides))


# --- combining parts ----------------------------------------------------------------------------------


def test_a_claim_made_of_parts_holds_only_if_every_applicable_part_does():
    assert combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine([SUPPORTED, UNDECIDED]) == UNDECIDED
    assert combine([SUPPORTED, CONTRADICTED, UNDECIDED]) == CONTRADICTED
    assert combine([SUPPORTED, NOT_APPLICABLE]) == SUPPORTED  # a part on unfit endpoints is left out
    assert combine([NOT_APPLICABLE, NOT_APPLICABLE]) == NOT_APPLICABLE
    assert combine([]) == UNDECIDED


def test_identical_methods_are_found_across_every_pair_and_configuration():
    def record(config, a, b, method, p0):
        return {"configuration": config, "seed_a": a, "seed_b": b, "method": method, "permutations": {"P0": p0}}

    records = [
        record("c1", 0, 1, "naive", [1, 0, 2]), record("c1", 0, 1, "ot_emd", [1, 0, 2]),
        record("c1", 0, 1, "cov", [0, 2, 1]), record("c1", 0, 1, "identity", [0, 1, 2]),
        record("c2", 0, 1, "naive", [2, 0, 1]), record("c2", 0, 1, "ot_emd", [2, 0, 1]),
        record("c2", 0, 1, "cov", [2, 0, 1]), record("c2", 0, 1, "identity", [0, 1, 2]),
    ]  # fmt: skip
    # cov agrees with naive in one configuration only, so it is not the same method
    assert identical_methods(records) == [["naive", "ot_emd"]]


# --- synthetic runs -----------------------------------------------------------------------------------

KEYS = {"dataset": "mnist10k", "arch": "mlp", "depth": 3, "width": 512}


def barrier_rows(midpoints: dict, barriers: dict | None = None, **keys) -> pd.DataFrame:
    """Rows of barriers.csv: ``midpoints[(lr or width, method)]`` lists one test-loss midpoint per pair (each
    pair of seeds 2k, 2k+1); ``barriers`` likewise gives loss barriers (on both splits). The error rows carry
    half of each value, so that a table read from the wrong metric shows it."""
    rows = []
    over = "lr" if "width" in keys else "width"
    for (value, method), values in midpoints.items():
        for k, mid in enumerate(values):
            barrier = (barriers or {}).get((value, method), values)[k]
            for split in ("train", "test"):
                for metric in ("loss", "error"):
                    scale = 1.0 if metric == "loss" else 0.5
                    rows.append(
                        {**keys, over: value, "seed_a": 2 * k, "seed_b": 2 * k + 1, "method": method, "split": split,
                         "metric": metric, "barrier": scale * barrier, "midpoint": scale * mid, "value_a": 0.1,
                         "value_b": 0.1}
                    )  # fmt: skip
    return pd.DataFrame(rows)


def dimension_rows(values: dict, lrs, keys, layers=("P0", "P1", "P2"), seeds=range(8)) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        [{**keys, "lr": lr, "seed": s, "layer": layer, "estimator": e, "value": v * (1 + 0.01 * rng.standard_normal())}
         for lr in lrs for s in seeds for layer in layers for e, v in values.items()]
    )  # fmt: skip


FERBACH_LRS = [1e-3, 1e-2, 0.1]
GOOD_DIMENSIONS = {"pr_weights": 300.0, "pr_cov": 3.0, "pr_activations": 2.0}


def ferbach_run(params, cov_gain=0.2, pairs=4, dims=GOOD_DIMENSIONS) -> Run:
    noise = [0.0, 0.01, -0.01, 0.02][:pairs]
    midpoints = {}
    for lr in FERBACH_LRS:
        midpoints[(lr, "naive_weight_matching")] = [1.0 + n for n in noise]
        midpoints[(lr, "cov_weight_matching")] = [1.0 - cov_gain + 2 * n for n in noise]
        midpoints[(lr, "activation_covariance")] = [1.0 - cov_gain + n for n in noise]
        midpoints[(lr, "identity")] = [2.0] * pairs
    keys = {**KEYS, "dataset": params["train"]["sweep"]["datasets"][0]}
    return Run(params, barrier_rows(midpoints, **keys), dimension_rows(dims, FERBACH_LRS, keys))


@pytest.fixture(scope="module")
def in_regime():
    """The full Ferbach preset on MNIST's own 60,000 images: the paper's regime in every core aspect."""
    return preset_params("ferbach2024_mnist", **{"train.sweep.datasets": ["mnist"], "fetch.datasets": []})


def verdicts(result) -> dict:
    return {claim.key: claim.verdict for claim in result.claims}


def test_ferbach_claims_supported_by_a_clear_effect(in_regime):
    result = replicate("ferbach2024", ferbach_run(in_regime))
    assert result.in_regime
    assert verdicts(result) == {
        "cov_weight_matching_midpoint_below_naive": SUPPORTED,
        "activation_covariance_midpoint_below_naive": SUPPORTED,
        "dimensions_naive_hundreds_cov_single_digits": SUPPORTED,
    }
    evidence = result.claims[0].evidence
    assert list(evidence["lr"]) == ["0.001", "0.01", "0.1"]
    assert evidence.iloc[-1]["verdict"].startswith("(no claim")  # 0.1 is the largest of the paper's grid
    assert evidence.iloc[0]["naive minus method, mean [95% interval]"].startswith("0.195 [")  # 0.2 - mean noise


def test_ferbach_claims_contradicted_only_in_the_papers_regime(in_regime):
    reversed_effect = ferbach_run(in_regime, cov_gain=-0.2, dims={**GOOD_DIMENSIONS, "pr_cov": 40.0})
    contradicted = replicate("ferbach2024", reversed_effect)
    assert set(verdicts(contradicted).values()) == {CONTRADICTED}
    assert contradicted.claims[0].reason == "of 2 learning rates below 0.1: 2 contradicted"
    quick = preset_params("ferbach2024_mnist_quick")  # 8,000 digits: 800 optimiser steps, not the paper's 6,000
    outside = replicate("ferbach2024", ferbach_run(quick, cov_gain=-0.2, dims={**GOOD_DIMENSIONS, "pr_cov": 40.0}))
    assert not outside.in_regime
    assert [s.aspect for s in outside.settings if s.core and not s.same] == ["optimiser steps"]
    assert set(verdicts(outside).values()) == {UNDECIDED}
    assert set(verdicts(replicate("ferbach2024", ferbach_run(quick))).values()) == {SUPPORTED}


def test_two_pairs_decide_nothing(in_regime):
    result = replicate("ferbach2024", ferbach_run(in_regime, cov_gain=-0.5, pairs=2))
    assert verdicts(result)["cov_weight_matching_midpoint_below_naive"] == UNDECIDED
    assert "fewer than 3" in result.claims[0].evidence.iloc[0]["verdict"]


def test_the_report_section_states_regime_claims_and_numbers(in_regime):
    result = replicate("ferbach2024", ferbach_run(in_regime))
    text = "\n".join(result.markdown({"ferbach2024": "figures/ferbach2024.png"}))
    assert re.search(r"\| optimiser steps +\| 6,000 \(50 epochs of 120 batches\) +\| 6,000 .* \| yes", text)
    assert "**Verdict: supported**" in text and "![ferbach2024](figures/ferbach2024.png)" in text
    main = result.tables[0][1]
    assert list(main.columns) == [
        "lr", "pairs", "endpoints' test accuracy", "endpoints' test loss", "midpoint: naive_weight_matching",
        "midpoint: cov_weight_matching", "midpoint: activation_covariance", "pr_weights", "pr_cov", "pr_activations",
    ]  # fmt: skip
    assert main["midpoint: naive_weight_matching"].tolist() == pytest.approx([1.005] * 3)
    assert main["pr_weights"].tolist() == pytest.approx([300.0] * 3, rel=0.01)
    assert result.metrics() == verdicts(result)


def test_identical_methods_are_reported_as_one(in_regime):
    run = ferbach_run(in_regime)
    run = Run(run.params, run.barriers, run.dimensions, [["naive_weight_matching", "ot_emd"]])
    result = replicate("ferbach2024", run)
    assert "midpoint: naive_weight_matching (= ot_emd)" in result.tables[0][1].columns


def ainsworth_run(params, barrier_at_width, pairs=3) -> Run:
    midpoints, barriers = {}, {}
    for width, (matched, unaligned) in barrier_at_width.items():
        noise = [0.0, 0.01, -0.01][:pairs]
        for method in ("weight_matching", "activation_matching"):
            midpoints[(width, method)] = [1.0] * pairs
            barriers[(width, method)] = [matched + n / 10 for n in noise]
        midpoints[(width, "identity")] = [2.0] * pairs
        barriers[(width, "identity")] = [unaligned + n for n in noise]
    keys = {"dataset": "mnist", "arch": "mlp", "depth": 3, "lr": 1e-3}
    return Run(params, barrier_rows(midpoints, barriers, **keys), pd.DataFrame())


def test_git_rebasin_claims():
    params = preset_params("ainsworth2023_mnist_mlp_width", **{"train.sweep.datasets": ["mnist"], "fetch.datasets": []})
    falling = ainsworth_run(params, {32: (0.4, 1.0), 128: (0.2, 1.0), 512: (0.02, 1.0)})
    result = replicate("ainsworth2023", falling)
    assert result.in_regime
    assert verdicts(result) == {"matched_barrier_near_zero": SUPPORTED, "matched_barrier_falls_with_width": SUPPORTED}
    # a clear barrier left at width 512, in the paper's regime, contradicts "near zero" ...
    rising = ainsworth_run(params, {32: (0.1, 1.0), 128: (0.3, 1.0), 512: (0.5, 1.0)})
    result = replicate("ainsworth2023", rising)
    assert verdicts(result)["matched_barrier_near_zero"] == CONTRADICTED
    # ... but the width study was made on CIFAR-10, so a rising barrier on MNIST cannot contradict it
    assert verdicts(result)["matched_barrier_falls_with_width"] == UNDECIDED
    widths = result.claims[1].evidence
    assert widths.iloc[0]["slope per doubling of width, mean [95% interval]"].startswith("0.100")


def test_a_run_without_what_a_replication_needs_says_so(in_regime):
    run = ferbach_run(in_regime)
    one_lr = Run(run.params, run.barriers[run.barriers["lr"] == 0.1], run.dimensions)
    result = replicate("ferbach2024", one_lr)
    assert [c.verdict for c in result.claims] == [UNDECIDED] and "two or more learning rates" in result.claims[0].text
    with pytest.raises(ValueError, match="unknown replication 'x'; valid: ferbach2024, ainsworth2023"):
        replicate("x", run)
    assert set(REPLICATIONS) == {"ferbach2024", "ainsworth2023"}


def test_training_set_sizes_follow_the_params():
    assert train_size(preset_params("ferbach2024_mnist_quick"), "mnist10k") == 8_000
    assert train_size(preset_params("ferbach2024_mnist_quick", **{"prepare.mnist10k.test_fraction": 0.15}),
                      "mnist10k") == 8_500  # fmt: skip
    assert train_size({"prepare": {}}, "mnist") == 60_000 and train_size({"prepare": {}}, "mnist1d") is None


def test_undertrained_endpoints_leave_a_learning_rate_out_of_the_claim(in_regime):
    """At lr 0.001 the endpoints have train accuracy 0.5 (below report.min_train_accuracy 0.9): that cell is not
    applicable and the claim rests on lr 0.01 alone; with every cell on unfit endpoints, the claim is not
    applicable."""
    run = ferbach_run(in_regime)
    barriers = run.barriers.copy()
    weak = (barriers["lr"] == 1e-3) & (barriers["metric"] == "error")
    barriers.loc[weak, ["value_a", "value_b"]] = 0.5
    params = {**in_regime, "report": {**in_regime["report"], "min_train_accuracy": 0.9}}
    result = replicate("ferbach2024", Run(params, barriers, run.dimensions))
    claim = result.claims[0]
    assert claim.verdict == SUPPORTED and claim.reason == "of 2 learning rates below 0.1: 1 not applicable, 1 supported"
    assert claim.evidence.iloc[0]["verdict"].startswith("not applicable: undertrained endpoints (w512 lr0.001")
    assert any("Undertrained endpoints" in note and "lr 0.001 (train accuracy 0.50)" in note for note in result.notes)
    barriers.loc[barriers["metric"] == "error", ["value_a", "value_b"]] = 0.5
    everywhere = replicate("ferbach2024", Run(params, barriers, run.dimensions))
    assert set(verdicts(everywhere).values()) == {NOT_APPLICABLE}


def test_every_cell_of_a_replication_is_adjusted_together(in_regime):
    """2 learning rates below 0.1 x 2 midpoint claims + 3 learning rates x 3 layers x 3 dimension parts: one Holm
    family of 31 cells, named in every tested cell's reason."""
    result = replicate("ferbach2024", ferbach_run(in_regime))
    reasons = [r for claim in result.claims for r in claim.evidence["verdict"] if not r.startswith("(no claim")]
    assert len(reasons) == 2 + 2 + 9
    assert all("Holm-adjusted over 31 tested cells" in r for r in reasons)


def test_ferbach_midpoints_are_read_on_the_test_split(in_regime):
    """The paper's figure is the midpoint test loss: a run where covariance-aware matching is better on the test
    split only supports the claim, and one where it is better on the train split only does not."""
    run = ferbach_run(in_regime)
    barriers = run.barriers.copy()
    cov = barriers["method"] == "cov_weight_matching"
    train = barriers["split"] == "train"
    worse_on_train = barriers.assign(midpoint=barriers["midpoint"].where(~(cov & train), barriers["midpoint"] + 0.4))
    result = replicate("ferbach2024", Run(run.params, worse_on_train, run.dimensions))
    assert verdicts(result)["cov_weight_matching_midpoint_below_naive"] == SUPPORTED
    worse_on_test = barriers.assign(midpoint=barriers["midpoint"].where(~(cov & ~train), barriers["midpoint"] + 0.4))
    result = replicate("ferbach2024", Run(run.params, worse_on_test, run.dimensions))
    assert verdicts(result)["cov_weight_matching_midpoint_below_naive"] == CONTRADICTED


def test_the_width_claim_counts_the_train_split_and_shows_the_test_split():
    """Barriers that fall with width on the train split and rise on the test split: supported (LMC is about the
    training loss); the test split's rows are shown but not counted."""
    params = preset_params("ainsworth2023_mnist_mlp_width", **{"train.sweep.datasets": ["mnist"], "fetch.datasets": []})
    run = ainsworth_run(params, {32: (0.4, 1.0), 128: (0.2, 1.0), 512: (0.02, 1.0)})
    barriers = run.barriers.copy()
    test = barriers["split"] == "test"
    barriers.loc[test, "barrier"] = (
        barriers.loc[test, "width"].map({32: 0.1, 128: 0.3, 512: 0.5}) + 0.01 * barriers.loc[test, "seed_a"]
    )
    result = replicate("ainsworth2023", Run(params, barriers, run.dimensions))
    claim = next(c for c in result.claims if c.key == "matched_barrier_falls_with_width")
    assert claim.verdict == SUPPORTED and claim.reason.startswith("of 2 methods (train split): 2 supported")
    shown = claim.evidence[claim.evidence["split"] == "test"]
    assert len(shown) == 2 and all(v.startswith(UNDECIDED) for v in shown["verdict"])  # rising: cannot contradict


# --- the small pieces, where params or runs are unusual -----------------------------------------------


def test_inputs_and_training_set_sizes_where_the_params_say_nothing(in_regime):
    assert _inputs_text({"prepare": {}}, "mnist") == ("standardised (mean 0, std 1 per channel)", False)
    assert _inputs_text({"prepare": {"mnist": {"standardise": False}}}, "mnist") == ("raw pixels in [0, 1]", True)
    assert train_size({"prepare": {}}, "fashion_mnist") == 60_000 and train_size({"prepare": {}}, "cifar10") == 50_000
    unknown = _steps_setting(in_regime, "mnist1d", 60_000, 500, 50)  # no training set size: never the paper's
    assert unknown == Setting("optimiser steps", "6,000", "unknown", False, True)


def test_a_replication_is_named_by_its_key_and_one_without_configurations_draws_nothing(in_regime):
    run = ferbach_run(in_regime)
    assert replicate("ferbach2024", run).key == "ferbach2024"
    one_lr = Run(run.params, run.barriers[run.barriers["lr"] == 0.1], run.dimensions)
    for key in ("ferbach2024", "ainsworth2023"):
        nothing = replicate(key, one_lr)
        assert (nothing.key, nothing.figures, nothing.claims[0].key) == (key, {}, key)
    params = preset_params("ainsworth2023_mnist_mlp_width", **{"train.sweep.datasets": ["mnist"], "fetch.datasets": []})
    assert replicate("ainsworth2023", ainsworth_run(params, {32: (0.4, 1.0), 512: (0.02, 1.0)})).key == "ainsworth2023"


def relabelled(run: Run, lrs: dict) -> Run:
    """``run`` with its learning rates renamed by ``lrs`` (old -> new) in barriers and dimensions alike."""
    return Run(run.params, run.barriers.assign(lr=run.barriers["lr"].map(lrs)),
               run.dimensions.assign(lr=run.dimensions["lr"].map(lrs)), run.identical)  # fmt: skip


def test_ferbach_needs_two_learning_rates_and_shows_those_above_its_grid_without_a_claim(in_regime):
    run = ferbach_run(in_regime)
    two = Run(run.params, run.barriers[run.barriers["lr"] != 0.1], run.dimensions[run.dimensions["lr"] != 0.1])
    assert verdicts(replicate("ferbach2024", two))["cov_weight_matching_midpoint_below_naive"] == SUPPORTED
    beyond = replicate("ferbach2024", relabelled(run, {1e-3: 0.01, 1e-2: 0.1, 0.1: 0.3}))
    evidence = beyond.claims[0].evidence
    assert list(evidence["lr"]) == ["0.01", "0.1", "0.3"]
    assert [v.startswith("(no claim") for v in evidence["verdict"]] == [False, True, True]
    none_below = replicate("ferbach2024", relabelled(two, {1e-3: 0.1, 1e-2: 0.3}))
    assert none_below.claims[0].reason == "no learning rates below 0.1 in this run"
    assert none_below.claims[0].verdict == UNDECIDED


def test_a_midpoint_cell_at_a_learning_rate_with_overfit_endpoints_is_not_applicable(in_regime):
    run = ferbach_run(in_regime)
    barriers = run.barriers.copy()
    at = (barriers["lr"] == 1e-3) & (barriers["metric"] == "loss")
    barriers.loc[at & (barriers["split"] == "train"), ["value_a", "value_b"]] = 0.05
    barriers.loc[at & (barriers["split"] == "test"), ["value_a", "value_b"]] = 1.2
    claim = replicate("ferbach2024", Run(run.params, barriers, run.dimensions)).claims[0]
    assert claim.evidence.iloc[0]["verdict"].startswith("not applicable: overfit endpoints (w512 lr0.001")
    assert claim.reason == "of 2 learning rates below 0.1: 1 not applicable, 1 supported"


def test_the_dimension_claim_names_the_part_that_fails_and_needs_all_three_estimators(in_regime):
    high_activations = replicate(
        "ferbach2024", ferbach_run(in_regime, dims={**GOOD_DIMENSIONS, "pr_activations": 10.5})
    )
    claim = high_activations.claims[-1]
    assert claim.verdict == CONTRADICTED and claim.evidence.iloc[0]["verdict"].startswith(
        "contradicted: pr_activations: p"
    )
    low_weights = replicate("ferbach2024", ferbach_run(in_regime, dims={**GOOD_DIMENSIONS, "pr_weights": 50.0}))
    assert low_weights.claims[-1].evidence.iloc[0]["verdict"].startswith("contradicted: pr_weights: p")
    run = ferbach_run(in_regime)
    two_estimators = run.dimensions[run.dimensions["estimator"] != "pr_activations"]
    keys = [c.key for c in replicate("ferbach2024", Run(run.params, run.barriers, two_estimators)).claims]
    assert "dimensions_naive_hundreds_cov_single_digits" not in keys
    backwards = Run(run.params, run.barriers, run.dimensions.iloc[::-1])
    evidence = replicate("ferbach2024", backwards).claims[-1].evidence
    assert list(zip(evidence["lr"], evidence["layer"], strict=True))[:4] == [
        ("0.001", "P0"), ("0.001", "P1"), ("0.001", "P2"), ("0.01", "P0")]  # fmt: skip


@pytest.fixture(scope="module")
def git_rebasin_params():
    return preset_params("ainsworth2023_mnist_mlp_width", **{"train.sweep.datasets": ["mnist"], "fetch.datasets": []})


def test_the_near_zero_claim_without_weight_matching_rests_on_activation_matching(git_rebasin_params):
    run = ainsworth_run(git_rebasin_params, {32: (0.4, 1.0), 512: (0.02, 1.0)})
    no_wm = Run(run.params, run.barriers[run.barriers["method"] != "weight_matching"], run.dimensions)
    evidence = replicate("ainsworth2023", no_wm).claims[0].evidence
    assert list(zip(evidence["method"], evidence["split"], strict=True)) == [
        ("activation_matching", "train"), ("activation_matching", "test")]  # fmt: skip
    b = run.barriers
    no_wm_on_train = Run(run.params, b[(b["method"] != "weight_matching") | (b["split"] != "train")], run.dimensions)
    evidence = replicate("ainsworth2023", no_wm_on_train).claims[0].evidence
    assert list(zip(evidence["method"], evidence["split"], strict=True)) == [
        ("weight_matching", "test"), ("activation_matching", "train"), ("activation_matching", "test")]  # fmt: skip


def test_a_run_on_the_test_split_only_shows_no_table_of_endpoint_train_losses(in_regime):
    run = ferbach_run(in_regime)
    test_only = Run(run.params, run.barriers[run.barriers["split"] == "test"], run.dimensions)
    result = replicate("ferbach2024", test_only)
    assert not any(caption.startswith("Endpoint models") for caption, _ in result.tables)
    assert len(result.tables) == 3 and not any("Undertrained" in note for note in result.notes)


def test_a_matched_barrier_no_lower_than_the_unaligned_one_is_named_in_the_reason(git_rebasin_params):
    run = ainsworth_run(git_rebasin_params, {32: (0.4, 1.0), 512: (1.0, 1.0)})
    evidence = replicate("ainsworth2023", run).claims[0].evidence
    assert evidence.iloc[0]["verdict"].startswith("contradicted: lower: p")


def test_the_width_claim_with_two_widths_a_split_missing_at_one_and_overfit_endpoints(git_rebasin_params):
    run = ainsworth_run(git_rebasin_params, {32: (0.4, 1.0), 512: (0.02, 1.0)})
    falls = next(c for c in replicate("ainsworth2023", run).claims if c.key == "matched_barrier_falls_with_width")
    assert falls.verdict == SUPPORTED and len(falls.evidence) == 4  # two widths are enough for a slope
    b = run.barriers
    gap = (b["method"] == "weight_matching") & (b["split"] == "train") & (b["width"] == 32)
    falls = replicate("ainsworth2023", Run(run.params, b[~gap], run.dimensions)).claims[1]
    assert list(zip(falls.evidence["method"], falls.evidence["split"], strict=True)) == [
        ("weight_matching", "test"), ("activation_matching", "train"), ("activation_matching", "test")]  # fmt: skip
    overfit = b.copy()
    wide = (overfit["width"] == 512) & (overfit["metric"] == "loss")
    overfit.loc[wide & (overfit["split"] == "test"), ["value_a", "value_b"]] = 1.2
    falls = replicate("ainsworth2023", Run(run.params, overfit, run.dimensions)).claims[1]
    by_split = dict(zip(falls.evidence["split"], falls.evidence["verdict"], strict=False))
    assert by_split["test"].startswith("not applicable: overfit endpoints (w512 lr0.001")
    assert by_split["train"].startswith(SUPPORTED)


def test_each_replication_reads_only_the_configurations_it_chose(in_regime, git_rebasin_params):
    """Git Re-Basin prefers Adam's rate 1e-3 to 1e-4 (which sorts first); Ferbach et al. the 3x512 MLP to a
    3x256 one at the same learning rates. The other configuration's pairs never enter the chosen one's cells."""
    run = ainsworth_run(git_rebasin_params, {32: (0.4, 1.0), 512: (0.02, 1.0)})
    slow = run.barriers.assign(lr=1e-4, barrier=run.barriers["barrier"] + 5)
    result = replicate("ainsworth2023", Run(run.params, pd.concat([slow, run.barriers]), run.dimensions))
    assert result.notes[-1].startswith("Configuration used: mnist mlp-d3 at learning rate 0.001,")
    assert result.claims[0].evidence["pairs"].tolist() == [3, 3, 3, 3]
    assert verdicts(result)["matched_barrier_near_zero"] == SUPPORTED  # the other rate's barriers +5 left out
    run = ferbach_run(in_regime)
    narrower = run.barriers.assign(width=256, midpoint=run.barriers["midpoint"] + 5)
    result = replicate("ferbach2024", Run(run.params, pd.concat([narrower, run.barriers]), run.dimensions))
    assert result.claims[0].evidence["pairs"].tolist() == [4, 4, 4]
    assert result.tables[0][1]["pairs"].tolist() == [4, 4, 4]


def test_a_tie_between_configurations_goes_the_same_way_whatever_the_rows_order():
    configs = pd.DataFrame({"dataset": "mnist1d", "arch": "mlp", "depth": 2, "width": [128, 128, 256, 256],
                            "lr": [0.01, 0.1, 0.01, 0.1]})  # fmt: skip
    for rows in (configs, configs.iloc[::-1]):
        assert _choose(rows, "lr", lambda c: (True,))["width"].unique().tolist() == [128]


def test_small_texts_list_every_item():
    identical = Run({}, pd.DataFrame(), pd.DataFrame(), [["naive_weight_matching", "ot_emd", "ot_sinkhorn"]])
    assert identical.method_label("ot_emd") == "ot_emd (= naive_weight_matching, ot_sinkhorn)"
    assert markdown(pd.DataFrame({"lr": [1e-5], "loss": [0.25]})).splitlines()[-1].split("|")[1:3] == [
        " 1e-05 ", " 0.250  "]  # fmt: skip
    barriers = barrier_rows({(lr, "identity"): [1.0] * 3 for lr in (1e-3, 1e-2, 0.1)}, **KEYS)
    weak = barriers["lr"] < 0.1
    barriers.loc[weak & (barriers["split"] == "test") & (barriers["metric"] == "loss"), ["value_a", "value_b"]] = 1.2
    barriers.loc[weak & (barriers["metric"] == "error"), ["value_a", "value_b"]] = 0.4
    _, notes = overfit_note(barriers, "lr", 0.5)
    assert "at lr 0.001, lr 0.01: there" in notes[0]
    assert (
        "at lr 0.001 (train accuracy 0.60), lr 0.01 (train accuracy 0.60): the"
        in untrained_note(barriers, "lr", 0.9)[0]
    )
    test_only = barriers[barriers["split"] == "test"]
    table, notes = overfit_note(test_only, "lr", 0.5)
    assert table.empty and notes == []


def test_a_run_outside_the_regime_in_several_aspects_names_them_all(in_regime):
    params = {**in_regime, "prepare": {**in_regime["prepare"], "mnist": {**in_regime["prepare"]["mnist"],
                                                                        "standardise": True}}}  # fmt: skip
    params["train"] = {**params["train"], "recipe": {**params["train"]["recipe"], "batch_size": 250}}
    text = "\n".join(replicate("ferbach2024", ferbach_run(params)).markdown({}))
    assert "(it differs in inputs, batch, epochs, optimiser steps)" in text
