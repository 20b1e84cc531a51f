"""The questions every run answers, each as claims with their evidence.

A claim is checked per study (data set, architecture, depth), learning rate and, where it is about LMC,
per split: the train loss is what LMC theory is about, the test loss what a user sees. Each check is a
:class:`Finding`: the effect (positive: the claim's direction), its bootstrap interval over independent
samples (pairs of models, models or configurations), n and the verdict of :func:`lmcot.analysis.verdict`.
Methods that computed the same permutations count once (:func:`lmcot.analysis.merge_identical`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lmcot.analysis import (
    CONFIG_KEYS,
    CONTRADICTED,
    SUPPORTED,
    Estimate,
    bootstrap_mean,
    bootstrap_slope,
    paired_difference,
    verdict,
)
from lmcot.choices import NO_CORRECTION

STUDY_KEYS = ["dataset", "arch", "depth"]  # a study: configurations that differ only in width and learning rate
SPLITS = ("train", "test")

# Families of alignment methods, in the order tables and legends list them: one hue family each, so that a
# method keeps its colour in every figure.
FAMILIES = {
    "no alignment": ("identity",),
    "weights": (
        "weight_matching",
        "weight_matching_without_biases",
        "naive_weight_matching",
        "ot_emd",
        "ot_sinkhorn",
    ),
    "data": ("cov_weight_matching", "cov_weight_matching_with_biases", "activation_matching", "activation_covariance"),
    "barycentre": ("barycenter",),
}
FAMILY_PALETTES = {"no alignment": "Greys_r", "weights": "Blues_r", "data": "Oranges_r", "barycentre": "Greens_r"}


def family(method: str) -> str:
    """The family of the alignment ``method`` (whatever correction its path was evaluated after)."""
    return next((name for name, members in FAMILIES.items() if method in members), "other")


def uncorrected(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``table`` whose path was evaluated as it is (``correction`` is ``none``: no BN reset, no
    REPAIR)."""
    return table[table["correction"] == NO_CORRECTION]


def _method_key(method: str) -> tuple:
    order = [m for members in FAMILIES.values() for m in members]
    return (order.index(method) if method in order else len(order), method)


def method_order(methods) -> list[str]:
    """``methods`` sorted by family, then in the family's listed order."""
    return sorted(set(methods), key=_method_key)


def path_order(table: pd.DataFrame) -> list[tuple[str, str]]:
    """The ``(method, correction)`` pairs of ``table`` in :func:`method_order`, each method's path as it is
    first, then its corrected paths by the correction's name."""
    pairs = set(zip(table["method"], table["correction"], strict=True))
    return sorted(pairs, key=lambda p: (*_method_key(p[0]), p[1] != NO_CORRECTION, p[1]))


def method_colours(methods) -> dict[str, tuple]:
    """A fixed colour per method: shades of its family's hue, assigned in :data:`FAMILIES` order so that the
    same method has the same colour in every figure whatever else was run."""
    import seaborn as sns

    colours = {}
    for name, members in FAMILIES.items():
        shades = sns.color_palette(FAMILY_PALETTES[name], len(members) + 2)
        colours.update({m: shades[i] for i, m in enumerate(members)})
    others = sns.color_palette("Purples_r", max(2, len(methods)))
    out = {}
    for i, method in enumerate(method_order(methods)):
        out[method] = colours.get(method, others[i % len(others)])
    return out


# --- the claims ---------------------------------------------------------------------------------------

# The method Ferbach et al.'s theorem is about: optimal transport between the neurons' incoming weights
# (with uniform masses and a squared-Euclidean cost, the LAP on inner products, naive_weight_matching).
REFERENCE_METHOD = "naive_weight_matching"


@dataclass(frozen=True)
class ClaimSpec:
    key: str
    text: str  # what is claimed, in one sentence
    effect: str  # what the effect measures; positive means the claim's direction
    source: str  # who claims it
    short: str  # its name among the DVC metrics
    splits: tuple[str, ...] = SPLITS


CLAIMS = {
    spec.key: spec
    for spec in (
        ClaimSpec(
            "alignment_lowers_barrier",
            f"Aligning the neurons (`{REFERENCE_METHOD}`) lowers the loss barrier below no alignment.",
            "identity's barrier minus the method's, nats (pairs of every width)",
            "Entezari et al. 2022; Ferbach et al. 2024",
            "aligned",
        ),
        ClaimSpec(
            "barrier_falls_with_width",
            f"After alignment (`{REFERENCE_METHOD}`), the loss barrier falls as width grows.",
            "fall of `max_a L(a) - mean(L(0), L(1))` per doubling of width, nats (least-squares slope, negated)",
            "Ferbach et al. 2024, Theorem (barrier -> 0 with width)",
            "width",
        ),
        ClaimSpec(
            "repair_lowers_barrier",
            f"REPAIR (each channel of the interpolated network rescaled to the interpolated endpoint statistics) "
            f"lowers the loss barrier after alignment (`{REFERENCE_METHOD}`).",
            "the aligned barrier minus the aligned barrier with REPAIR, nats (pairs of every width)",
            "Jordan et al. 2023 (networks without normalisation: variance collapse)",
            "repair",
        ),
        ClaimSpec(
            "cov_beats_naive",
            "Covariance-aware matching (`cov_weight_matching`) reaches a lower midpoint loss than naive weight "
            "matching.",
            "naive's loss at alpha = 1/2 minus the method's, nats (pairs of every width)",
            "Ferbach et al. 2024: at learning rates below 0.1 (MNIST MLP)",
            "cov",
        ),
        ClaimSpec(
            "activation_beats_naive",
            "Activation-covariance matching (`activation_covariance`) reaches a lower midpoint loss than naive "
            "weight matching.",
            "naive's loss at alpha = 1/2 minus the method's, nats (pairs of every width)",
            "Ferbach et al. 2024: at learning rates below 0.1 (MNIST MLP)",
            "activation",
        ),
        ClaimSpec(
            "cov_dimension_below_weights",
            "Seen through the data (`W Sigma W^T`), each layer's weights have a lower effective dimension than "
            "the weights alone (`W^T W`).",
            "participation ratio of `W^T W` minus that of `W Sigma W^T`, mean over hidden layers (models of "
            "the widest width)",
            "Ferbach et al. 2024: hundreds against single digits at small learning rates",
            "dimension",
            splits=("",),
        ),
        ClaimSpec(
            "fusion_beats_averaging",
            "Fusing by Wasserstein barycentre gives a more accurate model than averaging the weights unaligned.",
            "accuracy of the fused model (input width, before fine-tuning) minus vanilla averaging's "
            "(configurations of every width)",
            "Akash, Li and Garcia Trillos 2022",
            "fusion",
        ),
    )
}


@dataclass(frozen=True)
class Finding:
    """One claim checked on one study, learning rate and split (``split`` is ``""`` for a claim about the
    weights). ``overfit``, ``undertrained``: some endpoints behind it are (see :func:`lmcot.analysis.overfit_table`)."""

    claim: str
    study: str
    lr: float
    split: str
    estimate: Estimate
    verdict: str
    reason: str
    overfit: bool = False
    undertrained: bool = False

    def cell(self) -> str:
        """``supported: 0.123 [0.100, 0.150], n = 12``, marked † on the test split where endpoints are overfit
        and ‡ where they are undertrained."""
        mark = (" †" if self.overfit and self.split == "test" else "") + (" ‡" if self.undertrained else "")
        if self.estimate.n == 0:
            return "n/a"
        return f"**{self.verdict}**{mark}: {self.estimate.format()}, n = {self.estimate.n}"


def study_label(row) -> str:
    return f"{row['dataset']} {row['arch']} d{row['depth']}"


def _rows(table: pd.DataFrame, split: str, metric: str = "loss") -> pd.DataFrame:
    return table[(table["split"] == split) & (table["metric"] == metric)]


def _check(spec, study, lr, split, estimate, flags) -> Finding:
    # the study's own claims are tested in the regime the run defines; a paper's regime is the replications'
    outcome, why = verdict(estimate, in_regime=True)
    return Finding(spec.key, study, lr, split, estimate, outcome, why, *flags)


def study_findings(
    barriers: pd.DataFrame, dimensions: pd.DataFrame, fusion: pd.DataFrame, overfit: pd.DataFrame
) -> list[Finding]:
    """Every claim of :data:`CLAIMS` that the run can check, per study, learning rate and split.

    ``barriers``: rows of the barrier stage with identical methods merged; ``overfit``: the table of
    :func:`lmcot.analysis.overfit_table`. A claim whose methods or widths the run lacks is left out.
    """
    out = []
    endpoints = overfit.set_index(CONFIG_KEYS)
    for key, rows in barriers.groupby([*STUDY_KEYS, "lr"], sort=True):
        study, lr = study_label(dict(zip(STUDY_KEYS, key, strict=False))), key[-1]
        configs = pd.MultiIndex.from_frame(rows[CONFIG_KEYS].drop_duplicates())
        flags = tuple(
            bool(endpoints[column].reindex(configs).fillna(False).any()) if column in endpoints else False
            for column in ("overfit", "undertrained")
        )
        paths = set(zip(rows["method"], rows["correction"], strict=True))  # (method, correction)
        plain = NO_CORRECTION
        for split in SPLITS:
            loss = _rows(rows, split)
            if loss.empty:
                continue
            for claim, path, baseline, value in (
                ("alignment_lowers_barrier", (REFERENCE_METHOD, plain), ("identity", plain), "barrier"),
                ("repair_lowers_barrier", (REFERENCE_METHOD, "repair"), (REFERENCE_METHOD, plain), "barrier"),
                ("cov_beats_naive", ("cov_weight_matching", plain), (REFERENCE_METHOD, plain), "midpoint"),
                ("activation_beats_naive", ("activation_covariance", plain), (REFERENCE_METHOD, plain), "midpoint"),
            ):
                if {path, baseline} <= paths:
                    diff = paired_difference(loss, value, path, baseline, CONFIG_KEYS, by=["method", "correction"])
                    out.append(_check(CLAIMS[claim], study, lr, split, bootstrap_mean(diff["effect"]), flags))
            reference = uncorrected(loss)
            reference = reference[reference["method"] == REFERENCE_METHOD]
            if reference["width"].nunique() >= 2:
                slope = bootstrap_slope(np.log2(reference["width"]), reference["max_minus_endpoint_mean"])
                fall = Estimate(-slope.mean, -slope.high, -slope.low, slope.n)
                out.append(_check(CLAIMS["barrier_falls_with_width"], study, lr, split, fall, flags))
            out += _fusion_findings(fusion, key, study, split, flags)
        out += _dimension_findings(dimensions, key, study, flags)
    return out


def _select(table: pd.DataFrame, key) -> pd.DataFrame:
    if table is None or table.empty:
        return pd.DataFrame()
    mask = np.ones(len(table), dtype=bool)
    for column, value in zip([*STUDY_KEYS, "lr"], key, strict=True):
        mask &= (table[column] == value).to_numpy()
    return table[mask]


def fusion_gain(fusion: pd.DataFrame, split: str) -> pd.Series:
    """Per configuration: accuracy on ``split`` of the fused model at the input width minus that of vanilla
    averaging, both before fine-tuning (configurations without both are left out)."""
    rows = fusion[~fusion["fine_tuned"].astype(bool)]
    column = f"{split}_accuracy"
    fused = rows[(rows["kind"] == "fused") & (rows["target_width"] == rows["width"])]
    vanilla = rows[rows["kind"] == "vanilla"]
    return (fused.groupby(CONFIG_KEYS)[column].mean() - vanilla.groupby(CONFIG_KEYS)[column].mean()).dropna()


def _fusion_findings(fusion, key, study, split, flags) -> list[Finding]:
    rows = _select(fusion, key)
    gains = fusion_gain(rows, split) if len(rows) else pd.Series(dtype=float)
    if gains.empty:
        return []
    return [_check(CLAIMS["fusion_beats_averaging"], study, key[-1], split, bootstrap_mean(gains), flags)]


def _dimension_findings(dimensions, key, study, flags) -> list[Finding]:
    rows = _select(dimensions, key)
    if rows.empty:
        return []
    widest = rows[rows["width"] == rows["width"].max()]
    wide = widest.pivot_table(index=["seed", "layer"], columns="estimator", values="value")
    if not {"pr_weights", "pr_cov"} <= set(wide.columns):
        return []
    per_model = (wide["pr_weights"] - wide["pr_cov"]).groupby("seed").mean()  # NaN (undefined) layers left out
    spec = CLAIMS["cov_dimension_below_weights"]
    return [_check(spec, study, key[-1], "", bootstrap_mean(per_model), (False, flags[1]))]


def findings_table(findings: list[Finding]) -> pd.DataFrame:
    """The summary: one row per study, claim and split, one column per learning rate (a :meth:`Finding.cell`)."""
    if not findings:
        return pd.DataFrame()
    rows = pd.DataFrame(
        [
            {"study": f.study, "order": list(CLAIMS).index(f.claim), "claim": f.claim, "split": f.split,
             "lr": f"lr {f.lr:g}", "cell": f.cell()}
            for f in findings
        ]
    )  # fmt: skip
    lrs = sorted({f.lr for f in findings})
    table = rows.pivot_table(index=["study", "order", "claim", "split"], columns="lr", values="cell", aggfunc="first")
    table = table[[f"lr {lr:g}" for lr in lrs]].reset_index().drop(columns="order").rename_axis(columns=None)
    return table.fillna("")


def findings_records(findings: list[Finding]) -> pd.DataFrame:
    """Every finding as a row of numbers, for reports/tables/findings.csv."""
    return pd.DataFrame(
        [
            {"study": f.study, "claim": f.claim, "lr": f.lr, "split": f.split, "effect": f.estimate.mean,
             "low": f.estimate.low, "high": f.estimate.high, "n": f.estimate.n, "verdict": f.verdict,
             "reason": f.reason, "overfit_endpoints": f.overfit, "undertrained_endpoints": f.undertrained}
            for f in findings
        ]
    )  # fmt: skip


def tally(findings: list[Finding], claim: str) -> dict[str, int]:
    """How many checks of ``claim`` are supported and contradicted (the rest: not enough evidence)."""
    verdicts = [f.verdict for f in findings if f.claim == claim]
    return {
        "checks": len(verdicts),
        "supported": verdicts.count(SUPPORTED),
        "contradicted": verdicts.count(CONTRADICTED),
    }
