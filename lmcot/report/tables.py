"""The report's compact tables (pandas DataFrames) and the full tables' summaries, from the pipeline's tables.

Each compact table answers one question of the report: method x width, method x learning rate, dimension x
learning rate, fusion, the barycentre's starts, biases in the matching score, the endpoints.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lmcot.analysis import (
    CONFIG_KEYS,
    CONTRADICTED,
    SUPPORTED,
    Cell,
    decide,
    mean_interval,
    method_label,
    paired_difference,
)
from lmcot.choices import NO_CORRECTION
from lmcot.replication import drop_fixed
from lmcot.study import STUDY_KEYS, method_order, path_order, study_label

DIMENSIONS = ("pr_weights", "pr_cov", "pr_activations")
PROBES = ("fused_start", "fused_alpha_h")  # fusion rows scored before fine-tuning only, in tables of their own
BIAS_VARIANTS = (
    ("weight_matching", "weight_matching_without_biases"),
    ("cov_weight_matching", "cov_weight_matching_with_biases"),
)


def config_label(row) -> str:
    return f"{row['dataset']} {row['arch']} d{row['depth']} w{row['width']} lr{row['lr']:g}"


def studies(table: pd.DataFrame):
    """``(label, rows)`` per study (data set, architecture, depth) of ``table``."""
    for key, rows in table.groupby(STUDY_KEYS, sort=True):
        yield study_label(dict(zip(STUDY_KEYS, key, strict=True))), rows


# --- full tables (CSV) ---------------------------------------------------------------------------------


def interval_table(barriers: pd.DataFrame) -> pd.DataFrame:
    """Every (configuration, method, correction, split, metric): mean barrier and midpoint over pairs with
    their Student-t intervals, for reports/tables/barriers_summary.csv; its ``method`` column prints the path
    as :func:`lmcot.analysis.method_label` does (``weight_matching+repair``)."""
    out = []
    for key, rows in barriers.groupby([*CONFIG_KEYS, "method", "correction", "split", "metric"], sort=True):
        *config, method, correction, split, metric = key
        record = {**dict(zip(CONFIG_KEYS, config, strict=True)), "method": method_label(method, correction)}
        record |= {"split": split, "metric": metric}
        for value in ("barrier", "midpoint", "max_minus_endpoint_mean"):
            estimate = mean_interval(rows[value])
            record |= {value: estimate.mean, f"{value}_low": estimate.low, f"{value}_high": estimate.high}
        out.append({**record, "pairs": len(rows)})
    return pd.DataFrame(out)


def dimension_table(dimensions: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of every dimension estimate: one row per (configuration, layer), one column per estimator."""
    table = dimensions.pivot_table(
        index=[*CONFIG_KEYS, "layer"], columns="estimator", values="value", aggfunc="mean", dropna=False
    )
    return table.reset_index().rename_axis(columns=None)


# --- barriers and dimensions ---------------------------------------------------------------------------


def _pair_cell(train: float, test: float) -> str:
    fmt = lambda v: "–" if pd.isna(v) else f"{v:.3f}"  # noqa: E731
    return f"{fmt(train)} / {fmt(test)}"


def method_by_width(rows: pd.DataFrame, overfit: pd.DataFrame, labels: dict) -> pd.DataFrame:
    """One learning rate of one study: mean loss barrier ``train / test`` per path (rows: a method, each
    corrected path after its method's, as ``label + correction``) and width (columns); a width whose endpoints
    are overfit is marked † in its header. ``labels``: method -> its name in the table."""
    loss = rows[rows["metric"] == "loss"]
    means = loss.groupby(["method", "correction", "width", "split"])["barrier"].mean()
    flagged = set(overfit.loc[overfit["overfit"], "width"]) if len(overfit) else set()
    out = []
    for method, correction in path_order(loss):
        label = labels.get(method, method)
        row = {"method": label if correction == NO_CORRECTION else f"{label} + {correction}"}
        for width in sorted(loss["width"].unique()):
            header = f"w{width}" + (" †" if width in flagged else "")
            cell = [means.get((method, correction, width, split)) for split in ("train", "test")]
            row[header] = _pair_cell(*cell)
        out.append(row)
    return pd.DataFrame(out)


def method_by_lr(rows: pd.DataFrame, labels: dict) -> pd.DataFrame:
    """One study at its widest width: mean loss at alpha = 1/2 ``train / test`` per method (rows) and
    learning rate (columns), below the endpoints' own mean loss."""
    loss = rows[(rows["metric"] == "loss") & (rows["width"] == rows["width"].max())]
    means = loss.groupby(["method", "lr", "split"])["midpoint"].mean()
    ends = loss.drop_duplicates(["lr", "seed_a", "seed_b", "split"])
    ends = ((ends["value_a"] + ends["value_b"]) / 2).groupby([ends["lr"], ends["split"]]).mean()
    lrs = sorted(loss["lr"].unique())
    own = {f"lr {lr:g}": _pair_cell(ends.get((lr, "train")), ends.get((lr, "test"))) for lr in lrs}
    out = [{"method": "endpoints (their own loss)", **own}]
    for method in method_order(loss["method"]):
        cells = {
            f"lr {lr:g}": _pair_cell(means.get((method, lr, "train")), means.get((method, lr, "test"))) for lr in lrs
        }
        out.append({"method": labels.get(method, method), **cells})
    return pd.DataFrame(out)


def dimension_by_lr(dimensions: pd.DataFrame) -> pd.DataFrame:
    """Participation ratios at the widest width per learning rate: mean over models of the mean over
    hidden layers, with the 95% t-interval over models (undefined layers left out)."""
    widest = dimensions[(dimensions["width"] == dimensions["width"].max()) & dimensions["estimator"].isin(DIMENSIONS)]
    per_model = widest.groupby(["estimator", "lr", "seed"])["value"].mean().reset_index()
    out = []
    for estimator in [d for d in DIMENSIONS if d in set(per_model["estimator"])]:
        rows = per_model[per_model["estimator"] == estimator]
        cells = {f"lr {lr:g}": mean_interval(g["value"]).format(1) for lr, g in rows.groupby("lr", sort=True)}
        out.append({"estimator": estimator, **cells})
    return pd.DataFrame(out)


def bias_comparison(barriers: pd.DataFrame) -> pd.DataFrame:
    """Each matching method beside its variant with (or without) the biases in its score: loss barrier per
    configuration and split, and their paired difference over pairs with a 95% t-interval; which one is lower
    is decided over the whole table at once (Holm, :func:`lmcot.analysis.decide`)."""
    out, effects = [], []
    loss = barriers[barriers["metric"] == "loss"]
    for base, variant in BIAS_VARIANTS:
        if not {base, variant} <= set(loss["method"]):
            continue
        for key, rows in loss.groupby([*CONFIG_KEYS, "split"], sort=True):
            diff = paired_difference(rows, "barrier", variant, base, CONFIG_KEYS)
            if diff.empty:
                continue
            effect = mean_interval(diff["effect"])
            means = rows.groupby("method")["barrier"].mean()
            effects.append(effect)
            out.append(
                {"configuration": config_label(dict(zip(CONFIG_KEYS, key[:-1], strict=True))), "split": key[-1],
                 "method": base, "barrier": means[base], "variant": variant, "variant's barrier": means[variant],
                 "method minus variant, mean [95% interval]": effect.format(), "pairs": effect.n}
            )  # fmt: skip
    for row, decision in zip(out, decide([Cell(e) for e in effects]), strict=True):
        row["lower barrier"] = {SUPPORTED: "variant", CONTRADICTED: "method"}.get(decision.verdict, "not resolved")
    return pd.DataFrame(out)


def endpoint_table(overfit: pd.DataFrame) -> pd.DataFrame:
    table = overfit.copy()
    for column in ("overfit", "undertrained"):
        table[column] = table[column].map({True: "yes", False: ""})
    return drop_fixed(table, "lr")


# --- fusion (Akash, Li and Garcia Trillos) ---------------------------------------------------------------


def fusion_keys(table: pd.DataFrame) -> list[str]:
    """The columns that name one fusion: the configuration and, where fusion ran on groups of seeds, the group."""
    return [*CONFIG_KEYS, "group"] if "group" in table else CONFIG_KEYS


def first_group(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the first group of fused models of each configuration (all rows where there are no groups)."""
    return table[table["group"] == table["group"].min()] if "group" in table and len(table) else table


def fusion_summary(fusion: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy before fine-tuning per configuration (rows) and kind of model (columns), mean over the groups
    of fused models: the input models' mean, vanilla averaging, one-shot OT fusion (mean over its anchors), the
    fused model at each target width (as a multiple of the input width), the output ensemble, the worst and best
    anchor of one-shot fusion (means over groups) and the range over the barycentre's starts at the input
    width."""
    rows = fusion[~fusion["fine_tuned"].astype(bool) & ~fusion["kind"].isin(PROBES)].copy()
    rows["column"] = rows.apply(
        lambda r: f"fused x{r['target_width'] / r['width']:g}" if r["kind"] == "fused" else
        ("inputs (mean)" if r["kind"] == "input" else r["kind"].replace("_", " ")), axis=1,
    )  # fmt: skip
    table = rows.pivot_table(index=CONFIG_KEYS, columns="column", values="test_accuracy", aggfunc="mean")
    first = ["inputs (mean)", "vanilla", "one shot"]
    fused = sorted((c for c in table.columns if c.startswith("fused x")), key=lambda c: float(c[len("fused x") :]))
    columns = [c for c in first if c in table] + fused + [c for c in table if c not in first and c not in fused]
    table = table[columns]
    anchors = rows[rows["kind"] == "one_shot"].groupby(fusion_keys(rows))["test_accuracy"]
    if anchors.ngroups and anchors.size().max() > 1:  # one-shot fusion from each model: worst to best anchor
        spread = pd.DataFrame({"low": anchors.min(), "high": anchors.max()}).groupby(CONFIG_KEYS).mean()
        low, high = spread["low"].map("{:.3f}".format), spread["high"].map("{:.3f}".format)
        table["one shot anchors"] = (low + "–" + high).reindex(table.index)
    starts = fusion[fusion["kind"] == "fused_start"].groupby(CONFIG_KEYS)["test_accuracy"]
    if len(starts):
        table["over starts"] = (starts.min().map("{:.3f}".format) + "–" + starts.max().map("{:.3f}".format)).reindex(
            table.index
        )
    return drop_fixed(table.reset_index().rename_axis(columns=None), "lr")


def start_table(fusion: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (rows) and start of the barycentre at the input width (columns), for the first group of
    fused models: the barycentre cost at its last iteration summed over layers, and the fused model's test
    accuracy before fine-tuning; ``*`` marks the lowest cost."""
    starts, costs = first_group(fusion[fusion["kind"] == "fused_start"]), first_group(costs)
    if starts.empty or costs.empty:
        return pd.DataFrame()
    at_width = costs[costs["target_width"] == costs["width"]]
    last = at_width.sort_values("iteration").groupby([*CONFIG_KEYS, "start", "layer"])["cost"].last()
    total = last.groupby([*CONFIG_KEYS, "start"]).sum()
    accuracy = starts.set_index([*CONFIG_KEYS, "start"])["test_accuracy"]
    out = []
    for key, group in total.groupby(CONFIG_KEYS, sort=True):
        lowest = group.idxmin()[-1]
        row = dict(zip(CONFIG_KEYS, key, strict=True))
        for index, cost in group.items():
            start = index[-1]
            mark = " *" if start == lowest else ""
            row[f"start {start}"] = f"{cost:.4g}{mark} / {accuracy.get(index, np.nan):.3f}"
        out.append(row)
    table = pd.DataFrame(out)
    order = [c for c in table if c not in CONFIG_KEYS]
    order = sorted(order, key=lambda c: (c != "start mean", c))
    return drop_fixed(table[[*CONFIG_KEYS, *order]], "lr")


def barycentre_origins(fusion: pd.DataFrame) -> dict:
    """Counts over the fusions (configurations and groups of seeds) of the fused model at the input width:
    ``fusions``; ``mean`` and ``model``, those whose kept start was the models' mean or a model; ``one_shot``,
    those that are one-shot OT fusion from one of their models up to the order of the units (column
    ``equals_one_shot``)."""
    fused = fusion[(fusion["kind"] == "fused") & (fusion["target_width"] == fusion["width"]) & ~fusion["fine_tuned"]]
    if fused.empty or "start" not in fused:
        return {"fusions": 0, "mean": 0, "model": 0, "one_shot": 0}
    equal = fused["equals_one_shot"].fillna("") if "equals_one_shot" in fused else pd.Series("", fused.index)
    return {
        "fusions": len(fused),
        "mean": int((fused["start"] == "mean").sum()),
        "model": int((fused["start"] != "mean").sum()),
        "one_shot": int((equal != "").sum()),
    }


def alpha_h_table(fusion: pd.DataFrame) -> pd.DataFrame:
    """Recurrent models: test accuracy before fine-tuning of the fusion at each weight ``alpha_h`` of the
    hidden-to-hidden cost (columns), beside vanilla averaging and the input models' mean (means over groups of
    fused models)."""
    probes = fusion[fusion["kind"] == "fused_alpha_h"]
    if probes.empty:
        return pd.DataFrame()
    before = fusion[~fusion["fine_tuned"].astype(bool)]
    table = probes.pivot_table(index=CONFIG_KEYS, columns="alpha_h", values="test_accuracy")
    table.columns = [f"alpha_h {a:g}" for a in table.columns]
    vanilla = before[before["kind"] == "vanilla"].groupby(CONFIG_KEYS)["test_accuracy"].mean()
    table.insert(0, "vanilla", vanilla.reindex(table.index))
    inputs = before[before["kind"] == "input"].groupby(CONFIG_KEYS)["test_accuracy"].mean()
    table.insert(0, "inputs (mean)", inputs.reindex(table.index))
    return drop_fixed(table.reset_index().rename_axis(columns=None), "lr")
