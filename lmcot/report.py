"""Summaries, figures and the written report, from the tables of the pipeline (no file paths here).

The report leads with a summary (what was run, the headline figure, the verdict on each claim of
:mod:`lmcot.study`), then answers one question per section with one compact table: method x width,
method x learning rate, dimension x learning rate, fusion. Full tables go to CSV files.
"""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from lmcot.analysis import (  # noqa: E402
    CONFIG_KEYS,
    CONTRADICTED,
    LEVEL,
    MIN_SAMPLES,
    SUPPORTED,
    UNDECIDED,
    bootstrap_mean,
    paired_difference,
    verdict,
)
from lmcot.design import seed_pairs  # noqa: E402
from lmcot.replication import drop_fixed  # noqa: E402
from lmcot.replication import markdown as markdown_table  # noqa: E402
from lmcot.study import (  # noqa: E402
    CLAIMS,
    FAMILIES,
    STUDY_KEYS,
    family,
    fusion_gain,
    method_colours,
    method_order,
    study_label,
    tally,
    uncorrected,
)

MAX_LINES = 8  # methods per panel; more are split into one panel row per family
DIMENSIONS = ("pr_weights", "pr_cov", "pr_activations")


def config_label(row) -> str:
    return f"{row['dataset']} {row['arch']} d{row['depth']} w{row['width']} lr{row['lr']:g}"


def interval_table(barriers: pd.DataFrame) -> pd.DataFrame:
    """Every (configuration, method, split, metric): mean barrier and midpoint over pairs with their
    bootstrap intervals, for reports/tables/barriers_summary.csv."""
    out = []
    for key, rows in barriers.groupby([*CONFIG_KEYS, "method", "split", "metric"], sort=True):
        record = dict(zip([*CONFIG_KEYS, "method", "split", "metric"], key, strict=True))
        for value in ("barrier", "midpoint", "max_minus_endpoint_mean"):
            estimate = bootstrap_mean(rows[value])
            record |= {value: estimate.mean, f"{value}_low": estimate.low, f"{value}_high": estimate.high}
        out.append({**record, "pairs": len(rows)})
    return pd.DataFrame(out)


def studies(table: pd.DataFrame):
    """``(label, rows)`` per study (data set, architecture, depth) of ``table``."""
    for key, rows in table.groupby(STUDY_KEYS, sort=True):
        yield study_label(dict(zip(STUDY_KEYS, key, strict=True))), rows


def slug(label: str) -> str:
    return label.replace(" ", "-")


# --- figures -----------------------------------------------------------------------------------------


def _method_facets(data: pd.DataFrame, row: str | None):
    """Rows of panels: ``row`` alone, or ``row`` and the method's family when there are more than
    :data:`MAX_LINES` methods (so that no panel has more lines than that)."""
    if data["method"].nunique() <= MAX_LINES:
        return data, row
    data = data.assign(family=data["method"].map(family))
    if row is None:
        return data, "family"
    return data.assign(panel_row=data[row].astype(str) + ", " + data["family"]), "panel_row"


def _lr_title(grid) -> None:
    for ax in grid.axes.flat:
        ax.set_title(ax.get_title().replace("lr = ", "learning rate ").replace("split = ", ""), fontsize=9)


def barrier_vs_width_figure(barriers: pd.DataFrame, dpi: int = 110):
    """The headline: loss barrier against width (log 2), one line per method (mean over pairs, band: 95%
    bootstrap interval), panels: split (rows) x learning rate (columns)."""
    data = barriers[barriers["metric"] == "loss"].copy()
    data, row = _method_facets(data, "split")
    methods = method_order(data["method"])
    grid = sns.relplot(
        data=data, x="width", y="barrier", hue="method", hue_order=methods, palette=method_colours(methods),
        row=row, col="lr", kind="line", marker="o", errorbar=("ci", 95), height=2.8, aspect=1.15,
        facet_kws={"sharey": "row", "margin_titles": False},
    )  # fmt: skip
    for ax in grid.axes.flat:
        ax.set_xscale("log", base=2)
        ax.axhline(0, color="grey", lw=0.8)
    _lr_title(grid)
    grid.set_axis_labels("hidden units per layer", "loss barrier (nats)")
    grid.figure.suptitle("Loss barrier after alignment against width (rows: split; band: 95% interval)", y=1.02)
    grid.figure.set_dpi(dpi)
    return grid.figure


def interpolation_figure(curves: pd.DataFrame, dpi: int = 110):
    """Loss along the linear path at the widest width, one line per method, panels: split x learning rate."""
    data = curves[(curves["metric"] == "loss") & (curves["width"] == curves["width"].max())].copy()
    data, row = _method_facets(data, "split")
    methods = method_order(data["method"])
    grid = sns.relplot(
        data=data, x="alpha", y="value", hue="method", hue_order=methods, palette=method_colours(methods),
        row=row, col="lr", kind="line", errorbar=("ci", 95), height=2.6, aspect=1.2,
        facet_kws={"sharey": False},
    )  # fmt: skip
    _lr_title(grid)
    grid.set_axis_labels("alpha (0: model A, 1: aligned model B)", "loss (nats)")
    grid.figure.suptitle(f"Loss along the linear path, width {int(data['width'].max())}", y=1.02)
    grid.figure.set_dpi(dpi)
    return grid.figure


def midpoint_vs_lr_figure(barriers: pd.DataFrame, dpi: int = 110):
    """Loss at alpha = 1/2 against learning rate at the widest width, one line per method and the
    endpoints' own mean loss (black, dashed); panels: split."""
    data = barriers[(barriers["metric"] == "loss") & (barriers["width"] == barriers["width"].max())].copy()
    data["value"] = data["midpoint"]
    ends = data.drop_duplicates([*CONFIG_KEYS, "seed_a", "seed_b", "split"]).copy()
    ends["value"] = (ends["value_a"] + ends["value_b"]) / 2
    data, row = _method_facets(data, None)
    methods = method_order(data["method"])
    grid = sns.relplot(
        data=data, x="lr", y="value", hue="method", hue_order=methods, palette=method_colours(methods),
        col="split", row=row, kind="line", marker="o", errorbar=("ci", 95), height=3, aspect=1.2,
        facet_kws={"sharey": False},
    )  # fmt: skip
    panels = grid.axes_dict.items() if row else ((("", k), v) for k, v in grid.axes_dict.items())
    for (_, split), ax in panels:
        mean = ends[ends["split"] == split].groupby("lr")["value"].mean()
        (own,) = ax.plot(mean.index, mean.values, color="black", ls="--", lw=1, label="endpoints' own loss")
    grid.axes.flat[0].legend(handles=[own], fontsize=8, loc="upper right")
    _lr_axis(grid, data["lr"].unique())
    grid.set_titles("{col_name} split" if row is None else "{row_name}, {col_name} split")
    grid.set_axis_labels("learning rate", "loss at alpha = 1/2 (nats)")
    grid.figure.suptitle(f"Midpoint loss against learning rate, width {int(data['width'].max())}", y=1.03)
    grid.figure.set_dpi(dpi)
    return grid.figure


def dimension_vs_lr_figure(dimensions: pd.DataFrame, dpi: int = 110):
    """Participation ratios (mean over hidden layers per model) against learning rate, one line per width,
    panels: the three matrices. Undefined estimates (NaN) are left out."""
    data = dimensions[dimensions["estimator"].isin(DIMENSIONS)]
    data = data.groupby([*CONFIG_KEYS, "seed", "estimator"])["value"].mean().reset_index().dropna()
    widths = sorted(data["width"].unique())
    grid = sns.relplot(
        data=data, x="lr", y="value", hue="width", hue_order=widths, palette="viridis", col="estimator",
        col_order=[d for d in DIMENSIONS if d in set(data["estimator"])], kind="line", marker="o",
        errorbar=("ci", 95), height=3, aspect=1.1, facet_kws={"sharey": False},
    )  # fmt: skip
    _lr_axis(grid, data["lr"].unique())
    for ax in grid.axes.flat:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    grid.set_titles("{col_name}")
    grid.set_axis_labels("learning rate", "participation ratio (mean over layers)")
    grid.figure.suptitle("Effective dimension of the weights against learning rate", y=1.03)
    grid.figure.set_dpi(dpi)
    return grid.figure


def _lr_axis(grid, lrs) -> None:
    """Log-scaled learning-rate axes labelled at the swept values only."""
    for ax in grid.axes.flat:
        ax.set_xscale("log")
        ax.set_xticks(sorted(lrs), [f"{lr:g}" for lr in sorted(lrs)])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def close(figure) -> None:
    plt.close(figure)


# --- tables ------------------------------------------------------------------------------------------


def _pair_cell(train: float, test: float) -> str:
    fmt = lambda v: "–" if pd.isna(v) else f"{v:.3f}"  # noqa: E731
    return f"{fmt(train)} / {fmt(test)}"


def method_by_width(rows: pd.DataFrame, overfit: pd.DataFrame, labels: dict) -> pd.DataFrame:
    """One learning rate of one study: mean loss barrier ``train / test`` per method (rows) and width
    (columns); a width whose endpoints are overfit is marked † in its header."""
    loss = rows[rows["metric"] == "loss"]
    means = loss.groupby(["method", "width", "split"])["barrier"].mean()
    flagged = set(overfit.loc[overfit["overfit"], "width"]) if len(overfit) else set()
    out = []
    for method in method_order(loss["method"]):
        row = {"method": labels.get(method, method)}
        for width in sorted(loss["width"].unique()):
            header = f"w{width}" + (" †" if width in flagged else "")
            row[header] = _pair_cell(means.get((method, width, "train")), means.get((method, width, "test")))
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
    hidden layers, with the 95% bootstrap interval over models (undefined layers left out)."""
    widest = dimensions[(dimensions["width"] == dimensions["width"].max()) & dimensions["estimator"].isin(DIMENSIONS)]
    per_model = widest.groupby(["estimator", "lr", "seed"])["value"].mean().reset_index()
    out = []
    for estimator in [d for d in DIMENSIONS if d in set(per_model["estimator"])]:
        rows = per_model[per_model["estimator"] == estimator]
        cells = {f"lr {lr:g}": bootstrap_mean(g["value"]).format(1) for lr, g in rows.groupby("lr", sort=True)}
        out.append({"estimator": estimator, **cells})
    return pd.DataFrame(out)


def dimension_table(dimensions: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of every dimension estimate: one row per (configuration, layer), one column per estimator."""
    table = dimensions.pivot_table(
        index=[*CONFIG_KEYS, "layer"], columns="estimator", values="value", aggfunc="mean", dropna=False
    )
    return table.reset_index().rename_axis(columns=None)


def undefined_estimates(dimensions: pd.DataFrame) -> list[str]:
    """One line per estimator and reason for the estimates that are undefined (NaN)."""
    bad = dimensions[~np.isfinite(dimensions["value"])]
    if bad.empty:
        return []
    notes = bad["note"].fillna("") if "note" in bad else pd.Series("", index=bad.index)
    lines = []
    for note, rows in bad.assign(note=notes).groupby("note"):
        where = sorted({f"{r['arch']} w{r['width']} {r['layer']}" for _, r in rows.iterrows()})
        estimators = ", ".join(f"`{e}`" for e in sorted(set(rows["estimator"])))
        lines.append(f"- {estimators} on {', '.join(where)}: {note or 'no reason recorded'}.")
    return lines


PROBES = ("fused_start", "fused_alpha_h")  # fusion rows scored before fine-tuning only, in tables of their own


def fusion_summary(fusion: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy before fine-tuning per configuration (rows) and kind of model (columns): the input
    models' mean, vanilla averaging, one-shot OT fusion, the fused model at each target width (as a multiple
    of the input width), the output ensemble, and the range over the barycentre's starts at the input width."""
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
    starts = fusion[fusion["kind"] == "fused_start"].groupby(CONFIG_KEYS)["test_accuracy"]
    if len(starts):
        table["over starts"] = (starts.min().map("{:.3f}".format) + "–" + starts.max().map("{:.3f}".format)).reindex(
            table.index
        )
    return drop_fixed(table.reset_index().rename_axis(columns=None), "lr")


def start_table(fusion: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (rows) and start of the barycentre at the input width (columns): the barycentre cost
    at its last iteration summed over layers, and the fused model's test accuracy before fine-tuning;
    ``*`` marks the lowest cost."""
    starts = fusion[fusion["kind"] == "fused_start"]
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
            row[f"start {start}"] = f"{cost:.4f}{mark} / {accuracy.get(index, np.nan):.3f}"
        out.append(row)
    table = pd.DataFrame(out)
    order = [c for c in table if c not in CONFIG_KEYS]
    order = sorted(order, key=lambda c: (c != "start mean", c))
    return drop_fixed(table[[*CONFIG_KEYS, *order]], "lr")


def lowest_cost_starts(fusion: pd.DataFrame, costs: pd.DataFrame) -> dict:
    """Counts over configurations of the fused model at the input width: ``configurations``; ``model``,
    those whose lowest-cost start was a model (not the mean); ``stopped``, those of them where every layer's
    barycentre stopped after its first update (no coupling changed: one-shot OT fusion anchored at that
    model); ``anchor``, those of these whose start was the one-shot baseline's anchor."""
    fused = fusion[(fusion["kind"] == "fused") & (fusion["target_width"] == fusion["width"]) & ~fusion["fine_tuned"]]
    if fused.empty or "start" not in fused:
        return {"configurations": 0, "model": 0, "stopped": 0, "anchor": 0}
    fused = fused.set_index(CONFIG_KEYS)["start"]
    anchors = fusion[fusion["kind"] == "one_shot"].drop_duplicates(CONFIG_KEYS).set_index(CONFIG_KEYS)["model"]
    anchor = anchors.str.extract(r"anchor (seed \d+)")[0].reindex(fused.index)
    at_width = costs[costs["target_width"] == costs["width"]] if len(costs) else costs
    updates = at_width.groupby([*CONFIG_KEYS, "start"])["iteration"].max() if len(at_width) else pd.Series()
    stopped = pd.Series(
        [fused[key] != "mean" and updates.get((*key, fused[key]), np.inf) <= 2 for key in fused.index], fused.index
    )
    return {
        "configurations": len(fused),
        "model": int((fused != "mean").sum()),
        "stopped": int(stopped.sum()),
        "anchor": int((stopped & (fused == anchor)).sum()),
    }


def alpha_h_table(fusion: pd.DataFrame) -> pd.DataFrame:
    """Recurrent models: test accuracy before fine-tuning of the fusion at each weight ``alpha_h`` of the
    hidden-to-hidden cost (columns), beside vanilla averaging and the input models' mean."""
    probes = fusion[fusion["kind"] == "fused_alpha_h"]
    if probes.empty:
        return pd.DataFrame()
    before = fusion[~fusion["fine_tuned"].astype(bool)].set_index(CONFIG_KEYS)
    table = probes.pivot_table(index=CONFIG_KEYS, columns="alpha_h", values="test_accuracy")
    table.columns = [f"alpha_h {a:g}" for a in table.columns]
    table.insert(0, "vanilla", before[before["kind"] == "vanilla"]["test_accuracy"].reindex(table.index))
    inputs = before[before["kind"] == "input"].groupby(CONFIG_KEYS)["test_accuracy"].mean()
    table.insert(0, "inputs (mean)", inputs.reindex(table.index))
    return drop_fixed(table.reset_index().rename_axis(columns=None), "lr")


def alpha_h_verdicts(table: pd.DataFrame) -> list[str]:
    """One line per recurrent configuration: does the best fused model beat vanilla averaging, and by how much."""
    lines = []
    for row in table.to_dict("records"):
        fused = {k: v for k, v in row.items() if k.startswith("alpha_h ")}
        best = max(fused, key=fused.get)
        gap = fused[best] - row["vanilla"]
        name = " ".join(str(row[k]) for k in CONFIG_KEYS if k in row)
        verdict = "beats" if gap > 0 else "does not beat"
        lines.append(
            f"- {name}: the best fused model ({best.replace('alpha_h ', 'alpha_h = ')}, {fused[best]:.3f}) "
            f"{verdict} vanilla averaging ({row['vanilla']:.3f}) by {gap:+.3f} before fine-tuning (one fusion "
            f"each, no interval); the input models average {row['inputs (mean)']:.3f}."
        )
    return lines


def endpoint_table(overfit: pd.DataFrame) -> pd.DataFrame:
    table = overfit.copy()
    for column in ("overfit", "undertrained"):
        table[column] = table[column].map({True: "yes", False: ""})
    return drop_fixed(table, "lr")


# --- metrics -------------------------------------------------------------------------------------------


FAMILY_KEYS = {"no alignment": "unaligned", "weights": "weights", "data": "data", "barycentre": "barycentre"}


def metrics(barriers: pd.DataFrame, overfit: pd.DataFrame, findings: list, fusion: pd.DataFrame) -> dict:
    """The few headline numbers compared across experiments, in the order ``dvc exp show`` prints them and
    with short names so that they fit a terminal: the mean loss barrier per method family on ``train`` and
    ``test``; the ``endpoints`` (mean losses, test accuracy, overfit and undertrained configurations); each
    claim's tally (``"+4 -2 /6"``: supported, contradicted, checks; :data:`lmcot.study.CLAIMS`); fusion's
    test-accuracy gain over averaging. Per-configuration numbers live in reports/tables/."""
    out = {}
    plain = uncorrected(barriers)
    loss = plain[plain["metric"] == "loss"].assign(family=lambda t: t["method"].map(family))
    for split in sorted(set(loss["split"]), reverse=True):
        means = loss[loss["split"] == split].groupby("family")["barrier"].mean()
        out[split] = {key: round(float(means[name]), 4) for name, key in FAMILY_KEYS.items() if name in means}
    out["endpoints"] = {
        "train_loss": round(float(overfit["train_loss"].mean()), 4),
        "test_loss": round(float(overfit["test_loss"].mean()), 4),
        "test_acc": round(float(overfit["test_accuracy"].mean()), 4),
        "overfit": int(overfit["overfit"].sum()),
        "undertrained": int(overfit["undertrained"].sum()),
    }
    out["claims"] = {}
    for claim, spec in CLAIMS.items():
        counts = tally(findings, claim)
        if counts["checks"]:
            out["claims"][spec.short] = f"+{counts['supported']} -{counts['contradicted']} /{counts['checks']}"
    gains = fusion_gain(fusion, "test")
    if len(gains):
        out["fusion_gain"] = round(float(gains.mean()), 4)
    return out


def count_leaves(tree) -> int:
    """Number of leaf values of a nested dict (the columns ``dvc exp show`` prints)."""
    return sum(count_leaves(v) for v in tree.values()) if isinstance(tree, dict) else 1


# --- the report ------------------------------------------------------------------------------------------


def _what_was_run(params: dict, groups: list, n_pairs: int) -> list[str]:
    sweep, recipe = params["train"]["sweep"], params["train"]["recipe"]
    seeds = params["train"]["seeds"]
    warmup = (
        f"{recipe['warmup_steps']} warm-up steps"
        if recipe["warmup_steps"]
        else f"{recipe['warmup_epochs']:g} warm-up epoch{'' if recipe['warmup_epochs'] == 1 else 's'}"
    )
    inputs = {d: "standardised" if params["prepare"][d].get("standardise", True) else "raw" for d in sweep["datasets"]}
    disjoint = params["align"]["pairs"] == "disjoint"
    families = "; ".join(
        f"{name}: {', '.join(g.label for g in groups if family(g.name) == name)}"
        for name in FAMILIES
        if any(family(g.name) == name for g in groups)
    )
    merged = [g.note() for g in groups if len(g.members) > 1]
    return [
        f"**What was run.** {', '.join(f'{d} ({inputs[d]} inputs)' for d in sweep['datasets'])}; models "
        f"{', '.join(sweep['models'])}; learning rates {', '.join(f'{lr:g}' for lr in sweep['lrs'])}; "
        f"{len(seeds)} seeds per configuration, so {n_pairs} {'disjoint (independent) ' if disjoint else ''}pairs "
        f"each{'' if disjoint else ' (sharing models, so the intervals are optimistic)'}. {recipe['optimizer']} "
        f"(momentum {recipe['momentum']}, weight decay {recipe['weight_decay']}), {recipe['epochs']} epochs of batch "
        f"{recipe['batch_size']}, {warmup}, {recipe['schedule']} schedule.",
        "",
        f"**Alignment methods** by family: {families}."
        + (f" Merged because they are one computation: {'; '.join(merged)}." if merged else ""),
        "",
    ]


def endpoints_line(overfit: pd.DataFrame, max_gap: float, min_accuracy: float) -> list[str]:
    """The summary's paragraph on the endpoints: which configurations are overfit or undertrained."""
    over, under = overfit[overfit["overfit"]], overfit[overfit["undertrained"]]
    text = f"**Endpoints.** Test minus train loss above `report.overfit_gap` = {max_gap:g} nats (overfit, †): " + (
        f"{len(over)} of {len(overfit)} configurations ({', '.join(config_label(r) for _, r in over.iterrows())}); "
        "there a small test-loss barrier can come from a midpoint that is less over-confident than the "
        "endpoints rather than from connectivity, so read the train split, which LMC theory is about."
        if len(over)
        else "none."
    )
    text += f" Train accuracy below `report.min_train_accuracy` = {min_accuracy:g} (undertrained, ‡): " + (
        f"{len(under)} of {len(overfit)} ({', '.join(config_label(r) for _, r in under.iterrows())}); there the "
        "methods compare networks still near their initialisation."
        if len(under)
        else "none."
    )
    return [text, ""]


def _claims_section(findings: list, table: pd.DataFrame) -> list[str]:
    if table.empty:
        return ["No claim could be checked on this sweep (it needs the methods and widths each claim names).", ""]
    parts = [
        f"**Claims.** Each cell: the verdict, the effect (positive: the claim's direction) with its {LEVEL:.0%} "
        f"bootstrap interval over independent samples, and n. *{SUPPORTED}*: the whole interval is on the claim's "
        f"side; *{CONTRADICTED}*: the whole interval is on the other side; *{UNDECIDED}*: anything else, or "
        f"n < {MIN_SAMPLES}. † marks test-split effects that rest on overfit endpoints, ‡ effects that rest on "
        "undertrained ones (see Endpoints). The claims "
        "are this run's own; whether a paper is replicated in its own regime is for the presets' replications.",
        "",
        markdown_table(table.drop(columns="study") if table["study"].nunique() == 1 else table),
        "",
    ]
    for key, spec in CLAIMS.items():
        if any(f.claim == key for f in findings):
            parts.append(f"- `{key}`: {spec.text} Effect: {spec.effect}. Source: {spec.source}.")
    return [*parts, ""]


def write_markdown(
    params: dict,
    *,
    barriers: pd.DataFrame,
    corrected: pd.DataFrame,
    dimensions: pd.DataFrame,
    fusion: pd.DataFrame,
    fusion_costs: pd.DataFrame,
    overfit: pd.DataFrame,
    groups: list,
    findings: list,
    findings_summary: pd.DataFrame,
    figures: dict,
    grid,
    replications=(),
    tables: dict,
) -> str:
    """The report. ``barriers``: rows with identical methods merged, paths evaluated as they are;
    ``corrected``: the same after a normalisation correction (``method+repair``); ``groups``: the method groups
    (:func:`lmcot.analysis.method_groups`); ``figures``: name -> path relative to the report (a figure per
    study is named ``<kind>/<study>``); ``tables``: CSV name -> path; ``replications``: markdown lines of each
    replication section."""
    n_pairs = len(seed_pairs(params["train"]["seeds"], params["align"]["pairs"]))
    labels = {g.name: g.label for g in groups}
    overfit_line = endpoints_line(overfit, params["report"]["overfit_gap"], params["report"]["min_train_accuracy"])
    parts = [
        "# Linear mode connectivity report",
        "",
        "Generated by `dvc repro` (stage `report`) from this run's outputs. The summary comes first; each later "
        "section answers one question with one table; the full tables are CSV files (last section).",
        "",
        "## Summary",
        "",
        *_what_was_run(params, groups, n_pairs),
        *overfit_line,
    ]
    parts += [f"![{name}]({path})\n" for name, path in figures.items() if name.startswith("barrier_vs_width")]
    parts += _claims_section(findings, findings_summary)
    if replications:
        parts += ["## Replications of the seed papers", ""]
        for lines in replications:
            parts += lines
    parts += [
        "## Are aligned networks linearly connected, more so when wider? (method x width)",
        "",
        f"Mean loss barrier over pairs, `train / test` (nats): `max_a [L(a) - ((1 - a) L(0) + a L(1))]` over the "
        f"{len(grid)} points of alpha {', '.join(f'{a:g}' for a in grid)} (a peak between them is missed). A barrier "
        "is at least 0 (alpha = 0 is on the grid): a test barrier of 0 means no bump, not a dip. Each mean's 95% "
        "interval over pairs is in `tables/barriers_summary.csv`; the claims above give the paired effects.",
        "",
    ]
    for label, rows in studies(barriers):
        for lr, at_lr in rows.groupby("lr", sort=True):
            over = overfit.merge(at_lr[[*STUDY_KEYS, "lr"]].drop_duplicates())
            parts += [
                f"**{label}, learning rate {lr:g}**",
                "",
                markdown_table(method_by_width(at_lr, over, labels)),
                "",
            ]
    parts += repair_section(barriers, corrected, overfit, labels)
    parts += [f"![{name}]({path})\n" for name, path in figures.items() if name.startswith("interpolation")]
    parts += [
        "## Which matching helps at which learning rate? (method x learning rate)",
        "",
        "Mean loss at the midpoint of the path (alpha = 1/2) at the widest width, `train / test` (nats); the first "
        "row is the endpoints' own mean loss. Ferbach et al.'s comparison; the `cov_beats_naive` and "
        "`activation_beats_naive` claims above give its paired differences, with intervals, over every width.",
        "",
    ]
    for label, rows in studies(barriers):
        parts += [f"**{label}**", "", markdown_table(method_by_lr(rows, labels)), ""]
    parts += [f"![{name}]({path})\n" for name, path in figures.items() if name.startswith("midpoint_vs_lr")]
    parts += bias_section(barriers)
    if len(dimensions):
        parts += [
            "## How many dimensions do the weights span? (dimension x learning rate)",
            "",
            "Participation ratio `tr(S)^2 / tr(S^2)` of `S = W^T W` (`pr_weights`), `W Sigma W^T` (`pr_cov`) and "
            "`E[a a^T]` (`pr_activations`) at the widest width: mean over models of the mean over hidden layers, "
            "[95% interval over models]. PCA, TwoNN, MLE and Wasserstein-rate estimates are in "
            "`tables/dimensions_summary.csv`.",
            "",
        ]
        for label, rows in studies(dimensions):
            parts += [f"**{label}**", "", markdown_table(dimension_by_lr(rows)), ""]
        undefined = undefined_estimates(dimensions)
        if undefined:
            parts += ["Undefined estimates (NaN, left out of every mean and claim):", "", *undefined, ""]
        parts += [f"![{name}]({path})\n" for name, path in figures.items() if name.startswith("dimension_vs_lr")]
    planes = {k: v for k, v in figures.items() if k.startswith("plane")}
    parts += fusion_markdown(fusion, fusion_costs, planes, params["fuse"]["ot"]["solver"])
    parts += ["## Endpoints", "", markdown_table(endpoint_table(overfit)), ""]
    parts += ["## Full tables", ""]
    parts += [f"- [{name}]({path})" for name, path in tables.items()]
    return "\n".join([*parts, ""])


def repair_section(barriers: pd.DataFrame, corrected: pd.DataFrame, overfit: pd.DataFrame, labels: dict) -> list[str]:
    """Barriers with and without the normalisation corrections (REPAIR, BN reset), per study and learning
    rate: each method's row followed by its corrected rows."""
    if corrected.empty:
        return []
    parts = [
        "## Does REPAIR remove the rest of the barrier? (method x width, with and without corrections)",
        "",
        "Mean loss barrier over pairs, `train / test` (nats), of each path as it is and after `+repair` (REPAIR, "
        "Jordan et al. 2023: every permuted layer's channels of the interpolated network rescaled and shifted to "
        "the interpolation of the endpoints' mean and standard deviation on `barrier.norm_samples` training "
        "samples; at the BatchNorm layers of a BatchNorm network) or `+reset` (BatchNorm statistics "
        "recomputed). The claim `repair_lowers_barrier` above gives the paired effect.",
        "",
    ]
    both = pd.concat([barriers, corrected], ignore_index=True)
    names = {**labels}
    for method in set(corrected["method"]):
        base, _, correction = method.partition("+")
        names[method] = f"{labels.get(base, base)} + {correction}"
    for label, rows in studies(both):
        configs = rows[STUDY_KEYS].drop_duplicates()
        if corrected.merge(configs).empty:
            continue
        for lr, at_lr in rows.groupby("lr", sort=True):
            over = overfit.merge(at_lr[[*STUDY_KEYS, "lr"]].drop_duplicates())
            parts += [f"**{label}, learning rate {lr:g}**", "", markdown_table(method_by_width(at_lr, over, names)), ""]
    return parts


def bias_section(barriers: pd.DataFrame) -> list[str]:
    biases = bias_comparison(barriers)
    if biases.empty:
        return []
    return [
        "## Biases in the matching score",
        "",
        "Loss barrier (nats, mean over pairs) of each matching method and of its variant with the biases' term "
        "added to or left out of its score, and their paired difference over pairs. Git Re-Basin's weight "
        "matching includes the biases' inner products; Ferbach et al.'s scores leave biases out, and their code "
        "has a covariance-aware score with biases.",
        "",
        markdown_table(biases),
        "",
    ]


BIAS_VARIANTS = (
    ("weight_matching", "weight_matching_without_biases"),
    ("cov_weight_matching", "cov_weight_matching_with_biases"),
)


def bias_comparison(barriers: pd.DataFrame) -> pd.DataFrame:
    """Each matching method beside its variant with (or without) the biases in its score: loss barrier per
    configuration and split, and their paired difference over pairs with a 95% bootstrap interval."""
    out = []
    loss = barriers[barriers["metric"] == "loss"]
    for base, variant in BIAS_VARIANTS:
        if not {base, variant} <= set(loss["method"]):
            continue
        for key, rows in loss.groupby([*CONFIG_KEYS, "split"], sort=True):
            diff = paired_difference(rows, "barrier", variant, base, CONFIG_KEYS)
            if diff.empty:
                continue
            effect = bootstrap_mean(diff["effect"])
            outcome, _ = verdict(effect, in_regime=True)
            means = rows.groupby("method")["barrier"].mean()
            out.append(
                {"configuration": config_label(dict(zip(CONFIG_KEYS, key[:-1], strict=True))), "split": key[-1],
                 "method": base, "barrier": means[base], "variant": variant, "variant's barrier": means[variant],
                 "method minus variant, mean [95% interval]": effect.format(), "pairs": effect.n,
                 "lower barrier": {SUPPORTED: "variant", CONTRADICTED: "method"}.get(outcome, "not resolved")}
            )  # fmt: skip
    return pd.DataFrame(out)


# --- fusion (Akash, Li and Garcia Trillos) ---------------------------------------------------------


def plane_figure(grid: pd.DataFrame, points: pd.DataFrame, title: str = "", dpi: int = 110):
    """Train loss and test error on each plane of one configuration, filled contours with the models
    marked (Akash, Li and Garcia Trillos's Figure 1)."""
    planes = list(dict.fromkeys(grid["plane"]))
    sns.set_theme(style="white")
    figure, axes = plt.subplots(len(planes), 2, figsize=(9, 3.8 * len(planes)), squeeze=False, dpi=dpi)
    for row, plane in enumerate(planes):
        cells = grid[grid["plane"] == plane]
        marks = points[points["plane"] == plane]
        for col, (value, label, cmap) in enumerate(
            [("train_loss", "train loss (nats)", "viridis"), ("test_error", "test error", "magma")]
        ):
            table = cells.pivot_table(index="y", columns="x", values=value)
            ax = axes[row, col]
            filled = ax.contourf(table.columns, table.index, table.values, levels=20, cmap=cmap)
            ax.contour(table.columns, table.index, table.values, levels=10, colors="white", linewidths=0.4)
            figure.colorbar(filled, ax=ax, label=label)
            for mark in marks.itertuples():
                ax.scatter(mark.x, mark.y, color="red", edgecolor="white", s=40, zorder=3)
                ax.annotate(mark.point, (mark.x, mark.y), textcoords="offset points", xytext=(5, 5), fontsize=8,
                            color="white")  # fmt: skip
            ax.set_title(f"{plane} plane: {label}")
            ax.set_xlabel("distance along model 1 -> model 2")
            ax.set_ylabel("orthogonal distance")
            ax.set_aspect("equal", adjustable="box")  # distances in parameter space, same scale on both axes
    figure.suptitle(title)
    sns.set_theme()
    figure.tight_layout()
    return figure


def fusion_markdown(fusion: pd.DataFrame, costs: pd.DataFrame, plane_figures: dict, solver: str) -> list[str]:
    """The fusion section: one compact table of test accuracy before fine-tuning, where the barycentre
    starts, the recurrent ablation where it ran, and the landscape planes (one embedded per study, the
    others linked)."""
    parts = [
        "## Does barycentric fusion beat averaging? (fusion x configuration)",
        "",
        "Test accuracy before fine-tuning of the input models (mean), vanilla averaging, one-shot OT fusion, the "
        "Wasserstein-barycentre fusion at each target width, the output ensemble and the range of the barycentre "
        "over its starts (input width). After `fuse.fine_tune`: `fusion.csv`. Fused BatchNorm models have their "
        "statistics recomputed on the training data.",
        "",
        markdown_table(fusion_summary(fusion)),
        "",
    ]
    starts = start_table(fusion, costs)
    if len(starts):
        counts = lowest_cost_starts(fusion, costs)
        parts += [
            "Where the barycentre starts (`fuse.ot.start`): barycentre cost `sum_i lambda_i <pi_i, C_i>` at the "
            "last iteration, summed over layers (`*`: lowest, the one `best` keeps) / test accuracy before "
            "fine-tuning. `mean` starts at the models' unaligned mean (favours no model); `seed s` at that "
            "model's units. Cost per layer and iteration: `tables/fusion_costs.csv`.",
            "",
            markdown_table(starts),
            "",
        ]
        if solver == "emd" and counts["configurations"]:
            parts += [
                f"The lowest-cost start was a model in {counts['model']} of {counts['configurations']} "
                f"configurations; from it the barycentre stopped after its first update (no coupling changed) in "
                f"{counts['stopped']}: there the fused model is one-shot OT fusion anchored at that model, the `one "
                f"shot` column's model (anchored at the first seed) in {counts['anchor']}. With two models and "
                "exact OT this always happens (each model's coupling to the mean of the models aligned to the start "
                "is its coupling to the start; `tests/test_fusion.py::"
                "test_exact_ot_started_at_one_of_two_models_stops_there_and_is_one_shot_fusion`); with more it need "
                "not. The spread over starts is how much the result depends on where it starts.",
                "",
            ]
    ablation = alpha_h_table(fusion)
    if len(ablation):
        parts += [
            "Recurrent layers: test accuracy before fine-tuning of the fused model at each weight of the "
            "Gromov-Wasserstein hidden-to-hidden cost (`fuse.alpha_h_grid`; `alpha_h` in the paper's units, the "
            "coupling's entries summing to 1; 0 ignores the term).",
            "",
            markdown_table(ablation),
            "",
            *alpha_h_verdicts(ablation),
            "",
        ]
    if plane_figures:
        # the widest, largest-learning-rate configuration of each study is drawn; the rest are linked
        names = list(plane_figures)
        shown = {max((n for n in names if n.rsplit("-w", 1)[0] == study), key=_width_lr) for study in
                 {n.rsplit("-w", 1)[0] for n in names}}  # fmt: skip
        parts += [
            "Loss landscape planes. Plane `permutation`: model 1, model 2 and model 2 permuted by the barycentre's "
            "couplings; plane `fusion`: model 1, model 2 and their barycentre. Model 1 and permuted model 2 in one "
            "low-loss region, apart from model 2, is linear mode connectivity after alignment. Every "
            "configuration's: " + ", ".join(f"[{n.removeprefix('plane_')}]({plane_figures[n]})" for n in names) + ".",
            "",
        ]
        parts += [f"![{name}]({plane_figures[name]})\n" for name in names if name in shown]
    return parts


def _width_lr(name: str) -> tuple[int, float]:
    """(width, learning rate) of a figure named ``plane_<dataset>-<arch>-d<depth>-w<width>-lr<lr>``."""
    width, lr = name.rsplit("-w", 1)[1].split("-lr")
    return int(width), float(lr)
