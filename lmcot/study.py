"""The questions every run answers, each as claims with their evidence.

A claim is checked per study (data set, architecture, depth), learning rate and, where it is about LMC,
per split: the train loss is what LMC theory is about, the test loss what a user sees. Each check is a
:class:`Finding`: the effect (positive: the claim's direction), its Student-t interval over independent
samples (pairs of models, models or groups of fused models), n, and the verdict of
:func:`lmcot.analysis.decide`, which adjusts for every claim the run tests (Holm). A claim comes from a paper
and is judged only in that paper's regime (:class:`Regime`) and on trained endpoints: elsewhere its cell is
not applicable, with the reason.
Methods that computed the same permutations count once (:func:`lmcot.analysis.merge_identical`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lmcot.analysis import (
    CONFIG_KEYS,
    CONTRADICTED,
    NOT_APPLICABLE,
    SUPPORTED,
    Cell,
    Estimate,
    decide,
    endpoint_problems,
    independent_pairs,
    mean_interval,
    paired_difference,
    slope_interval,
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
class Regime:
    """Where a claim was made: the architectures, the optimiser and the learning rates (below ``below_lr``) of
    the paper it comes from (None: any); ``text`` says it in words. A cell outside is not applicable."""

    text: str
    archs: tuple[str, ...] | None = None
    optimizer: str | None = None
    below_lr: float | None = None

    def outside(self, arch: str, lr: float, optimizer: str | None) -> str:
        """Why a cell of ``arch`` trained by ``optimizer`` at ``lr`` is outside the regime ("" if it is inside)."""
        if self.archs is not None and arch not in self.archs:
            return f"outside the claim's regime ({self.text}): {arch}"
        if self.optimizer is not None and optimizer is not None and optimizer != self.optimizer:
            return f"outside the claim's regime ({self.text}): trained by {optimizer}"
        if self.below_lr is not None and lr >= self.below_lr:
            return f"outside the claim's regime ({self.text}): learning rate {lr:g}"
        return ""


TRAINED = Regime("trained networks")
FERBACH = Regime("SGD-trained MLPs at learning rates below 0.1", archs=("mlp",), optimizer="sgd", below_lr=0.1)


@dataclass(frozen=True)
class ClaimSpec:
    key: str
    question: str  # what the run asks, as a question
    text: str  # what is claimed, in one sentence
    effect: str  # what the effect measures; positive means the claim's direction
    unit: str  # of the effect, as the summary prints it
    source: str  # who claims it
    short: str  # its name among the DVC metrics
    regime: Regime = TRAINED
    splits: tuple[str, ...] = SPLITS
    samples: str = "pairs"  # what the independent samples behind its effect are


CLAIMS = {
    spec.key: spec
    for spec in (
        ClaimSpec(
            "alignment_lowers_barrier",
            "Does aligning the neurons lower the loss barrier?",
            f"Aligning the neurons (`{REFERENCE_METHOD}`) lowers the loss barrier below no alignment.",
            "identity's barrier minus the method's, nats (pairs of every width)",
            "nats",
            "Entezari et al. 2022; Ferbach et al. 2024",
            "aligned",
        ),
        ClaimSpec(
            "barrier_falls_with_width",
            "Does the barrier left after alignment fall as the networks get wider?",
            f"After alignment (`{REFERENCE_METHOD}`), the loss barrier falls as width grows.",
            "fall of `max_a L(a) - mean(L(0), L(1))` per doubling of width, nats (least-squares slope, negated; "
            "each width's pairs with their own variance)",
            "nats lower per doubling of width",
            "Ferbach et al. 2024, Theorem (barrier -> 0 with width)",
            "width",
        ),
        ClaimSpec(
            "repair_lowers_barrier",
            "Does REPAIR remove part of what is left?",
            f"REPAIR (each channel of the interpolated network rescaled to the interpolated endpoint statistics) "
            f"lowers the loss barrier after alignment (`{REFERENCE_METHOD}`).",
            "the aligned barrier minus the aligned barrier with REPAIR, nats (pairs of every width)",
            "nats",
            "Jordan et al. 2023 (networks without normalisation: variance collapse)",
            "repair",
            Regime("networks without normalisation layers", archs=("mlp", "cnn", "resnet")),
        ),
        ClaimSpec(
            "cov_beats_naive",
            "Does covariance-aware matching beat naive weight matching at small learning rates?",
            "Covariance-aware matching (`cov_weight_matching`) reaches a lower midpoint loss than naive weight "
            "matching.",
            "naive's loss at alpha = 1/2 minus the method's, nats (pairs of every width)",
            "nats",
            "Ferbach et al. 2024: at learning rates below 0.1 (MNIST MLP)",
            "cov",
            FERBACH,
        ),
        ClaimSpec(
            "activation_beats_naive",
            "Does activation-covariance matching beat naive weight matching at small learning rates?",
            "Activation-covariance matching (`activation_covariance`) reaches a lower midpoint loss than naive "
            "weight matching.",
            "naive's loss at alpha = 1/2 minus the method's, nats (pairs of every width)",
            "nats",
            "Ferbach et al. 2024: at learning rates below 0.1 (MNIST MLP)",
            "activation",
            FERBACH,
        ),
        ClaimSpec(
            "cov_dimension_below_weights",
            "Do the weights span fewer dimensions seen through the data than alone?",
            "Seen through the data (`W Sigma W^T`), each layer's weights have a lower effective dimension than "
            "the weights alone (`W^T W`).",
            "participation ratio of `W^T W` minus that of `W Sigma W^T`, mean over hidden layers (models of "
            "the widest width)",
            "dimensions",
            "Ferbach et al. 2024: hundreds against single digits at small learning rates",
            "dimension",
            FERBACH,
            splits=("",),
            samples="models",
        ),
        ClaimSpec(
            "fusion_beats_averaging",
            "Does Wasserstein-barycentre fusion beat averaging the weights?",
            "Fusing by Wasserstein barycentre gives a more accurate model than averaging the weights unaligned.",
            "accuracy of the fused model (input width, before fine-tuning) minus vanilla averaging's "
            "(disjoint groups of fused models, of every width)",
            "accuracy",
            "Akash, Li and Garcia Trillos 2022",
            "fusion",
            samples="groups of fused models",
        ),
    )
}


@dataclass(frozen=True)
class Finding:
    """One claim checked on one study, learning rate and split (``split`` is ``""`` for a claim about the
    weights): the effect, its verdict (:func:`lmcot.analysis.decide`, Holm over every tested finding of the run)
    and why; ``p`` and ``p_adjusted`` are NaN where nothing was tested."""

    claim: str
    study: str
    lr: float
    split: str
    estimate: Estimate
    verdict: str
    reason: str
    p: float = float("nan")
    p_adjusted: float = float("nan")
    by_width: tuple[tuple[int, float], ...] = ()  # the mean of the samples at each width (descriptive, not tested)

    def cell(self) -> str:
        """``supported: 0.123 [0.100, 0.150], n = 12, Holm p = 0.003``; a cell without a verdict says why in
        brief (the reason in full is in findings.csv)."""
        if self.estimate.n == 0:
            return "n/a"
        text = f"{self.estimate.format()}, n = {self.estimate.n}"
        if self.verdict == NOT_APPLICABLE:
            return f"*{NOT_APPLICABLE}* ({_brief(self.reason)}): {text}"
        if np.isfinite(self.p_adjusted):
            text += f", Holm p {format_p(self.p_adjusted)}"
        return f"**{self.verdict}**: {text}"


def format_p(p: float) -> str:
    """``< 0.001`` or ``= 0.042``."""
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _brief(reason: str) -> str:
    """The first words of a not-applicable reason: ``undertrained``, ``overfit`` or ``outside the regime``."""
    for word in ("undertrained", "overfit"):
        if word in reason:
            return f"{word} endpoints"
    return "outside the claim's regime"


def study_label(row) -> str:
    return f"{row['dataset']} {row['arch']} d{row['depth']}"


def _rows(table: pd.DataFrame, split: str, metric: str = "loss") -> pd.DataFrame:
    return table[(table["split"] == split) & (table["metric"] == metric)]


@dataclass(frozen=True)
class _Check:
    """A finding before the run's verdicts are decided together."""

    claim: str
    study: str
    lr: float
    split: str
    cell: Cell
    by_width: tuple[tuple[int, float], ...] = ()


def _by_width(values: pd.Series, widths) -> tuple[tuple[int, float], ...]:
    """The mean of ``values`` at each of ``widths`` (aligned with them), as ``((width, mean), ...)``."""
    means = pd.Series(np.asarray(values, dtype=float)).groupby(np.asarray(widths)).mean()
    return tuple((int(w), float(m)) for w, m in means.items())


def study_findings(
    barriers: pd.DataFrame,
    dimensions: pd.DataFrame,
    fusion: pd.DataFrame,
    overfit: pd.DataFrame,
    optimizer: str | None = None,
) -> list[Finding]:
    """Every claim of :data:`CLAIMS` that the run can check, per study, learning rate and split, decided
    together (:func:`lmcot.analysis.decide`: Holm's adjustment over every tested cell).

    ``barriers``: rows of the barrier stage with identical methods merged; ``overfit``: the table of
    :func:`lmcot.analysis.overfit_table`; ``optimizer``: ``train.recipe.optimizer`` (for the claims' regimes).
    Only independent pairs enter (:func:`lmcot.analysis.independent_pairs`). A cell whose endpoints are
    undertrained (or overfit, on the test split) or outside its claim's regime is not applicable. A claim whose
    methods or widths the run lacks is left out.
    """
    checks = []
    barriers = independent_pairs(barriers) if len(barriers) else barriers
    for key, rows in barriers.groupby([*STUDY_KEYS, "lr"], sort=True):
        study, lr, arch = study_label(dict(zip(STUDY_KEYS, key, strict=False))), key[-1], key[1]
        configs = rows[CONFIG_KEYS].drop_duplicates()

        def check(spec, split, estimate, by_width=(), study=study, lr=lr, arch=arch, configs=configs):
            why = endpoint_problems(overfit, configs, split) or spec.regime.outside(arch, lr, optimizer)
            checks.append(_Check(spec.key, study, lr, split, Cell(estimate, not_applicable=why), by_width))

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
                    check(CLAIMS[claim], split, mean_interval(diff["effect"]), _by_width(diff["effect"], diff["width"]))
            reference = uncorrected(loss)
            reference = reference[reference["method"] == REFERENCE_METHOD]
            if reference["width"].nunique() >= 2:
                barrier = reference["max_minus_endpoint_mean"]
                slope = slope_interval(np.log2(reference["width"]), barrier)
                fall = slope.shifted(0.0, negate=True)
                check(CLAIMS["barrier_falls_with_width"], split, fall, _by_width(barrier, reference["width"]))
            if (gains := _fusion_gains(fusion, key, split)) is not None:
                widths = gains.index.get_level_values("width")
                check(
                    CLAIMS["fusion_beats_averaging"], split, mean_interval(gains), _by_width(gains.to_numpy(), widths)
                )
        if (per_model := _dimension_gaps(dimensions, key)) is not None:
            check(CLAIMS["cov_dimension_below_weights"], "", mean_interval(per_model))
    decisions = decide([c.cell for c in checks])
    return [
        Finding(c.claim, c.study, c.lr, c.split, c.cell.estimate, d.verdict, d.reason, d.p, d.p_adjusted, c.by_width)
        for c, d in zip(checks, decisions, strict=True)
    ]


def _select(table: pd.DataFrame, key) -> pd.DataFrame:
    if table is None or table.empty:
        return pd.DataFrame()
    mask = np.ones(len(table), dtype=bool)
    for column, value in zip([*STUDY_KEYS, "lr"], key, strict=True):
        mask &= (table[column] == value).to_numpy()
    return table[mask]


def fusion_gain(fusion: pd.DataFrame, split: str) -> pd.Series:
    """Per configuration and group of fused models (``group``: disjoint groups of seeds, each fused on its own):
    accuracy on ``split`` of the fused model at the input width minus that of vanilla averaging, both before
    fine-tuning (groups without both are left out)."""
    rows = fusion[~fusion["fine_tuned"].astype(bool)]
    keys = [*CONFIG_KEYS, "group"] if "group" in rows else CONFIG_KEYS
    column = f"{split}_accuracy"
    fused = rows[(rows["kind"] == "fused") & (rows["target_width"] == rows["width"])]
    vanilla = rows[rows["kind"] == "vanilla"]
    return (fused.groupby(keys)[column].mean() - vanilla.groupby(keys)[column].mean()).dropna()


def _fusion_gains(fusion, key, split) -> pd.Series | None:
    rows = _select(fusion, key)
    gains = fusion_gain(rows, split) if len(rows) else pd.Series(dtype=float)
    return None if gains.empty else gains


def _dimension_gaps(dimensions, key) -> pd.Series | None:
    """Per model of the widest width: participation ratio of the weights minus the covariance-aware one, mean
    over hidden layers (undefined layers left out)."""
    rows = _select(dimensions, key)
    if rows.empty:
        return None
    widest = rows[rows["width"] == rows["width"].max()]
    wide = widest.pivot_table(index=["seed", "layer"], columns="estimator", values="value")
    if not {"pr_weights", "pr_cov"} <= set(wide.columns):
        return None
    return (wide["pr_weights"] - wide["pr_cov"]).groupby("seed").mean()


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
             "low": f.estimate.low, "high": f.estimate.high, "n": f.estimate.n, "df": f.estimate.df, "p": f.p,
             "p_holm": f.p_adjusted, "verdict": f.verdict, "reason": f.reason}
            for f in findings
        ]
    )  # fmt: skip


def tally(findings: list[Finding], claim: str) -> dict[str, int]:
    """How many checks of ``claim`` there are, and how many are supported, contradicted and not applicable (the
    rest: not enough evidence)."""
    verdicts = [f.verdict for f in findings if f.claim == claim]
    return {
        "checks": len(verdicts),
        "supported": verdicts.count(SUPPORTED),
        "contradicted": verdicts.count(CONTRADICTED),
        "not_applicable": verdicts.count(NOT_APPLICABLE),
    }
