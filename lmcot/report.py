"""Summaries, figures and the written report, from the barrier and curve tables (no file paths here)."""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from lmcot.alignment import seed_pairs  # noqa: E402
from lmcot.analysis import (  # noqa: E402
    CONFIG_KEYS,
    CONTRADICTED,
    SUPPORTED,
    bootstrap_mean,
    paired_difference,
    verdict,
)


def config_label(row) -> str:
    return f"{row['dataset']} {row['arch']} d{row['depth']} w{row['width']} lr{row['lr']}"


def model_label(row) -> str:
    return f"{row['arch']} d{row['depth']} w{row['width']}"


def with_model(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a ``model`` column (architecture, depth and width), for facets across architectures."""
    table = table.copy()
    table["model"] = table.apply(model_label, axis=1) if len(table) else []
    return table


def width_studies(table: pd.DataFrame):
    """``(label, rows)`` per (dataset, arch, depth, lr) group that spans two or more widths."""
    for key, rows in table.groupby(["dataset", "arch", "depth", "lr"], sort=True):
        if rows["width"].nunique() >= 2:
            yield f"{key[0]} {key[1]} d{key[2]} lr{key[3]}", rows


def metric_key(row) -> str:
    """Stable key of a configuration for DVC metrics (no dots, which DVC reads as nesting)."""
    return f"{row['dataset']}-{row['arch']}-d{row['depth']}-w{row['width']}-lr{row['lr']}".replace(".", "_")


def summary_table(barriers: pd.DataFrame, split: str, metric: str, value: str = "barrier") -> pd.DataFrame:
    """Mean and standard deviation over pairs of ``value`` for one split and metric.

    Returns one row per (configuration, method) with columns ``CONFIG_KEYS + [method, mean, std, pairs]``.
    """
    rows = barriers[(barriers["split"] == split) & (barriers["metric"] == metric)]
    grouped = rows.groupby([*CONFIG_KEYS, "method"], sort=True)[value]
    return grouped.agg(mean="mean", std="std", pairs="count").reset_index()


def endpoint_table(barriers: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy and test loss of the trained models of each configuration."""
    rows = barriers[(barriers["split"] == "test") & (barriers["method"] == barriers["method"].iloc[0])]
    out = []
    for key, group in rows.groupby(CONFIG_KEYS, sort=True):
        per_model = {}
        for r in group.itertuples():  # each model appears as endpoint A or B of several pairs
            per_model.setdefault((r.seed_a, r.metric), r.value_a)
            per_model.setdefault((r.seed_b, r.metric), r.value_b)
        losses = [v for (s, m), v in per_model.items() if m == "loss"]
        errors = [v for (s, m), v in per_model.items() if m == "error"]
        out.append(
            {
                **dict(zip(CONFIG_KEYS, key, strict=True)),
                "models": len(losses),
                "test_loss": np.mean(losses),
                "test_accuracy": 1 - np.mean(errors),
            }
        )
    return pd.DataFrame(out)


def metrics(barriers: pd.DataFrame) -> dict:
    """DVC metrics: mean barriers and midpoints per method and configuration, endpoint accuracy."""
    out = {}
    for split in sorted(barriers["split"].unique()):
        for metric in ("loss", "error"):
            for value in ("barrier", "midpoint"):
                table = summary_table(barriers, split, metric, value)
                out[f"{split}_{metric}_{value}"] = {
                    method: {metric_key(r): round(float(r["mean"]), 6) for _, r in group.iterrows()}
                    for method, group in table.groupby("method")
                }
    out["endpoint_test_accuracy"] = {
        metric_key(r): round(float(r["test_accuracy"]), 6) for _, r in endpoint_table(barriers).iterrows()
    }
    return out


def dimension_table(dimensions: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of every dimension estimate: one row per (configuration, layer), one column per estimator."""
    table = dimensions.pivot_table(index=[*CONFIG_KEYS, "layer"], columns="estimator", values="value", aggfunc="mean")
    return table.reset_index().rename_axis(columns=None)


def undefined_estimates(dimensions: pd.DataFrame) -> list[str]:
    """Report lines for the estimates that are not finite, with the reason the dimension stage gave."""
    bad = dimensions[~np.isfinite(dimensions["value"])]
    if bad.empty:
        return []
    lines = ["Estimates that are not defined (left out of the means and correlations above):", ""]
    notes = bad["note"] if "note" in bad else pd.Series("", index=bad.index)
    for (estimator, note), rows in bad.assign(note=notes.fillna("")).groupby(["estimator", "note"]):
        where = ", ".join(sorted({f"{config_label(r)} {r['layer']}" for _, r in rows.iterrows()}))
        lines.append(f"- `{estimator}` for {len(rows)} (seed, layer) pairs: {note or 'no reason recorded'} ({where})")
    return [*lines, ""]


def dimension_metrics(dimensions: pd.DataFrame) -> dict:
    """DVC metrics: mean estimate per estimator, configuration and layer."""
    means = dimensions.groupby(["estimator", *CONFIG_KEYS, "layer"], sort=True)["value"].mean().reset_index()
    out = {}
    for _, r in means.iterrows():
        out.setdefault(r["estimator"], {}).setdefault(metric_key(r), {})[r["layer"]] = round(float(r["value"]), 4)
    return out


def wide_by_method(table: pd.DataFrame, index: list[str], value: str = "mean") -> pd.DataFrame:
    """One column per method (for DVC's data-series plots)."""
    return table.pivot_table(index=index, columns="method", values=value).reset_index().rename_axis(columns=None)


def interpolation_figure(curves: pd.DataFrame, split: str = "test", dpi: int = 110):
    """Loss against alpha, one panel per configuration, one line per method, band = spread over pairs."""
    data = curves[(curves["split"] == split) & (curves["metric"] == "loss")].copy()
    data["configuration"] = data.apply(config_label, axis=1)
    grid = sns.relplot(
        data=data,
        x="alpha",
        y="value",
        hue="method",
        col="configuration",
        col_wrap=min(3, data["configuration"].nunique()),
        kind="line",
        errorbar=("pi", 100),
        facet_kws={"sharey": False},
        height=2.8,
        aspect=1.2,
        marker="o",
        markersize=3,
    )
    grid.set_titles("{col_name}")
    grid.set_axis_labels("alpha (0: A, 1: aligned B)", f"{split} cross-entropy (nats)")
    grid.figure.suptitle(f"{split} loss along the linear path; line = mean over pairs, band = min to max", y=1.02)
    grid.figure.set_dpi(dpi)
    return grid.figure


def barrier_vs_width_figure(barriers: pd.DataFrame, split: str = "test", dpi: int = 110):
    """Loss and error barrier against width per method (log-2 width axis), one panel per other setting."""
    data = barriers[barriers["split"] == split].copy()
    data["setting"] = data.apply(lambda r: f"{r['dataset']} {r['arch']} d{r['depth']} lr{r['lr']}", axis=1)
    grid = sns.relplot(
        data=data,
        x="width",
        y="barrier",
        hue="method",
        col="metric",
        row="setting",
        kind="line",
        marker="o",
        errorbar=("pi", 100),
        facet_kws={"sharey": False},
        height=3,
        aspect=1.2,
    )
    for ax in grid.axes.flat:
        ax.set_xscale("log", base=2)
        ax.axhline(0, color="grey", lw=0.8)
    grid.set_titles("{row_name}: {col_name} barrier")
    grid.set_axis_labels("hidden units per layer", f"{split} barrier")
    grid.figure.set_dpi(dpi)
    return grid.figure


def midpoint_vs_lr_figure(barriers: pd.DataFrame, dpi: int = 110):
    """Midpoint test loss against learning rate per method, with the endpoints' own loss (dashed)."""
    data = barriers[(barriers["split"] == "test") & (barriers["metric"] == "loss")].copy()
    data["value"] = data["midpoint"]
    endpoints = data.drop_duplicates([*CONFIG_KEYS, "seed_a", "seed_b"]).copy()
    endpoints["value"], endpoints["method"] = (endpoints["value_a"] + endpoints["value_b"]) / 2, "endpoints"
    data = pd.concat([data, endpoints], ignore_index=True)
    data["curve"] = data["method"].eq("endpoints").map({True: "endpoints' own loss", False: "midpoint"})
    grid = sns.relplot(
        data=with_model(data), x="lr", y="value", hue="method", style="curve", col="model", col_wrap=3,
        kind="line", marker="o", errorbar=("pi", 100), height=3, aspect=1.1, facet_kws={"sharey": False},
    )  # fmt: skip
    _lr_axis(grid, data["lr"].unique())
    grid.set_titles("{col_name}")
    grid.set_axis_labels("learning rate", "test loss at alpha = 1/2 (nats)")
    grid.figure.set_dpi(dpi)
    return grid.figure


def dimension_vs_lr_figure(dimensions: pd.DataFrame, dpi: int = 110):
    """Participation-ratio dimensions against learning rate, per matrix and layer (rows: widths)."""
    data = dimensions[dimensions["estimator"].isin(["pr_weights", "pr_cov", "pr_activations"])]
    grid = sns.relplot(
        data=with_model(data), x="lr", y="value", hue="layer", col="estimator", row="model", kind="line",
        marker="o", errorbar=("pi", 100), height=2.6, aspect=1.2, facet_kws={"sharey": False},
    )  # fmt: skip
    _lr_axis(grid, data["lr"].unique())
    grid.set_titles("{col_name}, {row_name}")
    grid.set_axis_labels("learning rate", "participation ratio")
    grid.figure.set_dpi(dpi)
    return grid.figure


def barrier_vs_dimension_figure(paired: pd.DataFrame, dpi: int = 110):
    """Test loss barrier of each pair against the dimension that governs its method (log x), per model."""
    grid = sns.relplot(
        data=with_model(paired), x="dimension", y="barrier", hue="method", style="lr", col="model", col_wrap=3,
        height=3.2, aspect=1.1, facet_kws={"sharex": False, "sharey": False},
    )  # fmt: skip
    for ax in grid.axes.flat:
        ax.set_xscale("log")
    grid.set_titles("{col_name}")
    grid.set_axis_labels("participation ratio of the method's matrix (mean of the pair)", "test loss barrier (nats)")
    grid.figure.set_dpi(dpi)
    return grid.figure


def barrier_loglog_figure(barriers: pd.DataFrame, slopes: dict, dpi: int = 110):
    """Mean test loss barrier against width on log-log axes, with the fitted slope per method, one panel
    per width study (data set, architecture, depth, learning rate)."""
    studies = [rows.assign(study=label) for label, rows in width_studies(summary_table(barriers, "test", "loss"))]
    table = pd.concat(studies, ignore_index=True)
    table["method"] = table.apply(lambda r: f"{r['method']} (slope {slopes.get(_slope_key(r), np.nan):.2f})", axis=1)
    grid = sns.relplot(
        data=table, x="width", y="mean", hue="method", col="study", col_wrap=3, kind="line", marker="o", height=3.2
    )
    for ax in grid.axes.flat:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
    grid.set_titles("{col_name}")
    grid.set_axis_labels("hidden units per layer", "mean test loss barrier (nats)")
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


def markdown_table(table: pd.DataFrame, floatfmt=".4f") -> str:
    return table.to_markdown(index=False, floatfmt=floatfmt)


def findings(barriers: pd.DataFrame, endpoints: pd.DataFrame) -> list[str]:
    """Sentences computed from the numbers: what this run shows, stated only where the data say it."""
    lines = []
    table = summary_table(barriers, "test", "loss")
    pivot = table.pivot_table(index=CONFIG_KEYS, columns="method", values="mean")
    for method in pivot.columns:
        # a method is compared with no alignment under the same BatchNorm correction, where both were evaluated
        baseline = "identity" + method[method.index("+") :] if "+" in method else "identity"
        if method == baseline or baseline not in pivot.columns:
            continue
        both = pivot[[method, baseline]].dropna()
        lower = both[method] < both[baseline]
        exceptions = [config_label(dict(zip(CONFIG_KEYS, k, strict=True))) for k in both.index[~lower]]
        lines.append(
            f"`{method}` gives a lower mean test loss barrier than `{baseline}` in {int(lower.sum())} of "
            f"{len(lower)} configurations"
            + (f"; not in: {', '.join(exceptions)}." if exceptions else " (all of them).")
        )
    for study, rows in width_studies(table):
        for method, group in rows.groupby("method", sort=True):
            by_width = group.groupby("width")["mean"].mean()
            trend = "falls" if by_width.iloc[-1] < by_width.iloc[0] else "does not fall"
            lines.append(
                f"{study}: with `{method}`, the mean test loss barrier {trend} from width {by_width.index[0]} "
                f"({by_width.iloc[0]:.3f}) to width {by_width.index[-1]} ({by_width.iloc[-1]:.3f})."
            )
    best = endpoints.loc[endpoints["test_accuracy"].idxmax()]
    lines.append(
        f"The best endpoint models reach a mean test accuracy of {best['test_accuracy']:.3f} ({config_label(best)})."
    )
    return lines


def ferbach_analysis(barriers: pd.DataFrame, dimensions: pd.DataFrame) -> dict:
    """Correlations of barrier with dimension, power-law slopes in width, and tables for the report."""
    from lmcot.analysis import barrier_with_dimension, loglog_slope, spearman_with_ci

    paired = barrier_with_dimension(barriers, dimensions, CONFIG_KEYS)
    # Dimension grows with width while barriers fall, so across widths the two are confounded; the
    # paper compares learning rates at one width. Within a width, pairs of every learning rate are pooled.
    paired = with_model(paired)
    groups = paired.groupby(["method", "model"]) if paired["lr"].nunique() > 1 else paired.groupby(["method"])
    correlations = {
        (f"{key[0]}, {key[1]}" if len(key) > 1 else key[0]): spearman_with_ci(g["dimension"], g["barrier"])
        for key, g in groups
    }
    table = summary_table(barriers, "test", "loss")
    studies = [rows for _, rows in width_studies(table)]
    slopes = {}
    if studies:  # every learning rate's points of one architecture in one fit
        for (arch, method), g in pd.concat(studies).groupby(["arch", "method"]):
            slopes[_slope_key({"arch": arch, "method": method})] = loglog_slope(g["width"], g["mean"])
    widest = dimensions[dimensions["width"] == dimensions["width"].max()]
    rate = {e: -1 / v for e, v in widest.groupby("estimator")["value"].mean().items() if v > 0}
    return {"paired": paired, "correlations": correlations, "slopes": slopes, "rate_from_dimension": rate}


def _slope_key(row) -> str:
    """Key of a width slope: the method, within its architecture."""
    return f"{row['arch']}/{row['method']}"


def paper_claims(barriers: pd.DataFrame, dimensions: pd.DataFrame, analysis: dict) -> list[str]:
    """Ferbach et al.'s qualitative claims, each checked against this run's numbers (only where it can be)."""
    lines = []
    mid = summary_table(barriers, "test", "loss", "midpoint").pivot_table(
        index=CONFIG_KEYS, columns="method", values="mean"
    )
    test_loss = barriers[(barriers["split"] == "test") & (barriers["metric"] == "loss")]
    for method in ("cov_weight_matching", "activation_covariance"):
        if {method, "naive_weight_matching"} <= set(mid.columns):
            lower, higher, undecided = [], [], []
            for key, rows in test_loss.groupby(CONFIG_KEYS, sort=True):
                diff = paired_difference(rows, "midpoint", method, "naive_weight_matching", CONFIG_KEYS)
                effect = bootstrap_mean(diff["effect"])
                outcome, _ = verdict(effect, in_regime=True)
                label = f"{config_label(dict(zip(CONFIG_KEYS, key, strict=True)))} ({effect.format()}, n = {effect.n})"
                {SUPPORTED: lower, CONTRADICTED: higher}.get(outcome, undecided).append(label)
            lines.append(
                f"`{method}` against `naive_weight_matching`, midpoint test loss (naive minus method, mean [95% "
                f"bootstrap interval over pairs]): lower in {len(lower)}, higher in {len(higher)} and not resolved "
                f"in {len(undecided)} of {len(lower) + len(higher) + len(undecided)} configurations"
                + (f"; lower: {'; '.join(lower)}" if lower else "")
                + (f"; higher: {'; '.join(higher)}" if higher else "")
                + ". The paper finds it lower at every learning rate below 0.1 for an MLP 784-512-512-512-10 on "
                "MNIST; only a run in that regime can test the claim (`report.replications: [ferbach2024]`)."
            )
    means = dimensions.groupby("estimator")["value"].mean()
    if {"pr_weights", "pr_cov", "pr_activations"} <= set(means.index):
        w, c, a = means["pr_weights"], means["pr_cov"], means["pr_activations"]
        same_order = c < w and a < w
        lines.append(
            f"Mean participation ratios over every model and layer: weights {w:.1f}, covariance-aware {c:.1f}, "
            f"activations {a:.1f} ({'the paper' if same_order else 'not the paper'}'s order). The paper finds the "
            "naive (weights) dimension far above the other two (hundreds against single digits at width 512 on "
            "MNIST); these pooled means carry no interval, and a verdict needs that regime "
            "(`report.replications: [ferbach2024]`)."
        )
    paired = analysis["paired"]
    if paired["lr"].nunique() < 2 and paired["width"].nunique() > 1:
        from lmcot.analysis import spearman_with_ci

        with_dimension = spearman_with_ci(paired["width"], paired["dimension"])["rho"]
        with_barrier = spearman_with_ci(paired["width"], paired["barrier"])["rho"]
        lines.append(
            f"This run has one learning rate, so barrier and dimension vary mostly with width: Spearman's rho of "
            f"width with dimension is {with_dimension:.2f}, with barrier {with_barrier:.2f}. The correlations "
            "below mix that in; the paper's comparison is across learning rates at one width "
            "(presets/ferbach_mnist.yaml)."
        )
    finite_rho = {k: r for k, r in analysis["correlations"].items() if np.isfinite(r["rho"])}
    if finite_rho:
        positive = [k for k, r in finite_rho.items() if r["low"] > 0]
        negative = [k for k, r in finite_rho.items() if r["high"] < 0]
        lines.append(
            f"Barrier against dimension (Spearman's rho with a 95% bootstrap interval, table below): positive with "
            f"confidence in {len(positive)} of {len(finite_rho)} cases, negative in {len(negative)}, undecided in "
            f"{len(finite_rho) - len(positive) - len(negative)}. The paper expects barriers to grow with dimension: "
            + (
                "this run mostly agrees."
                if len(positive) > len(finite_rho) / 2
                else "this run does not show it clearly."
            )
        )
    finite = {m: s for m, s in analysis["slopes"].items() if np.isfinite(s)}
    if finite:
        rates = ", ".join(f"{e} {v:.2f}" for e, v in sorted(analysis["rate_from_dimension"].items()))
        lines.append(
            "Barrier against width, fitted log-log slopes: "
            + ", ".join(f"`{m}` {s:.2f}" for m, s in sorted(finite.items()))
            + f". The theory's rate is about -1/d; -1/d from this run's estimates at the largest width: {rates}."
        )
    return lines


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


def identical_methods_lines(identical: list[list[str]]) -> list[str]:
    if not identical:
        return []
    groups = "; ".join(" = ".join(f"`{m}`" for m in group) for group in identical)
    return [
        f"- Methods that returned identical permutations in every pair of every configuration: {groups}. Their "
        "rows below are one result, not independent confirmations (the replication sections name them together)."
    ]


def write_markdown(
    params: dict,
    barriers: pd.DataFrame,
    endpoints: pd.DataFrame,
    figures: dict,
    grid,
    dimensions=None,
    analysis=None,
    replications=(),
    identical=(),
) -> str:
    """The report: what was run, the replications, the tables, the figures (``figures``: name -> relative
    path), findings.

    ``dimensions`` (optional): the per-model, per-layer dimension estimates of the dimension stage.
    ``replications``: markdown lines of each replication section; ``identical``: groups of methods that
    returned the same permutations (:func:`lmcot.analysis.identical_methods`).
    """
    sweep, recipe = params["train"]["sweep"], params["train"]["recipe"]
    seeds = params["train"]["seeds"]
    disjoint = params["align"]["pairs"] == "disjoint"
    n_pairs = len(seed_pairs(seeds, params["align"]["pairs"]))
    if recipe["warmup_steps"]:
        warmup = f"{recipe['warmup_steps']} warm-up steps"
    else:
        warmup = f"{recipe['warmup_epochs']:g} warm-up epochs"
    inputs = {
        d: "standardised" if params["prepare"][d].get("standardise", True) else "raw inputs" for d in sweep["datasets"]
    }

    def barrier_pivot(split, metric, value="barrier"):
        table = summary_table(barriers, split, metric, value)
        table["cell"] = table.apply(lambda r: f"{r['mean']:.4f} ± {0 if np.isnan(r['std']) else r['std']:.4f}", axis=1)
        return (
            table.pivot_table(index=CONFIG_KEYS, columns="method", values="cell", aggfunc="first")
            .reset_index()
            .rename_axis(columns=None)
        )

    parts = [
        "# Linear mode connectivity report",
        "",
        "Generated by `dvc repro` (stage `report`); every number below is computed from this run's outputs.",
        "",
        "## What was run",
        "",
        f"- Data sets: {', '.join(f'{d} ({inputs[d]})' for d in sweep['datasets'])}; models "
        f"(architecture-depth-width): {', '.join(sweep['models'])}; "
        f"learning rates: {', '.join(map(str, sweep['lrs']))}.",
        f"- Seeds {', '.join(map(str, seeds))} per configuration, so {n_pairs} "
        f"{'disjoint pairs (no model in two pairs)' if disjoint else 'pairs (every pair of seeds)'} each. Training: "
        f"{recipe['optimizer']} (momentum {recipe['momentum']}, weight decay {recipe['weight_decay']}), "
        f"{recipe['epochs']} epochs of batch {recipe['batch_size']}, {warmup} then a {recipe['schedule']} schedule.",
        f"- Alignment methods: {', '.join(params['align']['methods'])}.",
        f"- Path grid ({len(grid)} points of alpha): {', '.join(f'{a:g}' for a in grid)}. A barrier is a maximum over "
        "this grid only, so it can miss a peak between grid points.",
        "- Barrier: `max_a [L(a) - ((1 - a) L(0) + a L(1))]`; midpoint: `L(1/2)`. L is the mean cross-entropy "
        "(loss, nats) or the error rate. Cells give the mean ± standard deviation over pairs.",
        *identical_methods_lines(list(identical)),
        "",
    ]
    if replications:
        parts += ["## Replications of the seed papers", ""]
        for lines in replications:
            parts += lines
    parts += [
        "## Findings",
        "",
        *[f"- {line}" for line in findings(barriers, endpoints)],
        "",
        "## Endpoint models",
        "",
        markdown_table(endpoints),
        "",
    ]

    def per_architecture(table):
        """One table per architecture, without the columns of methods it was not evaluated with."""
        out = []
        for arch, rows in table.groupby("arch", sort=True):
            out += [f"### {arch}", "", markdown_table(rows.dropna(axis=1, how="all")), ""]
        return out

    for split in sorted(barriers["split"].unique(), reverse=True):
        for metric in ("loss", "error"):
            parts += [f"## {split.capitalize()} {metric} barrier", "", *per_architecture(barrier_pivot(split, metric))]
    parts += ["## Test loss at the midpoint", "", *per_architecture(barrier_pivot("test", "loss", "midpoint"))]
    biases = bias_comparison(barriers)
    if len(biases):
        parts += [
            "## Biases in the matching score",
            "",
            "Loss barrier (nats, mean over pairs) of each matching method and of its variant with the biases' term "
            "added to or left out of its score, and their paired difference over pairs. Git Re-Basin's weight "
            "matching includes the biases' inner products; Ferbach et al.'s scores leave biases out, and their code "
            "has a covariance-aware score with biases.",
            "",
            markdown_table(biases, floatfmt=".4f"),
            "",
        ]
    if dimensions is not None and len(dimensions):
        parts += [
            "## Dimension of each layer's weight distribution",
            "",
            "Mean over seeds. `pr_weights`, `pr_cov`, `pr_activations`: participation ratio `tr(S)^2 / tr(S^2)` of "
            "`S = W^T W`, `W Sigma W^T` and `E[a a^T]` (Ferbach et al.); `pca90/95/99`: principal components for "
            "that share of the variance of the neurons' incoming weight vectors; `two_nn`, `mle`: TwoNN and "
            "Levina-Bickel estimates on those vectors; `wasserstein_rate`: `-1/slope` of `log W2` between "
            "disjoint neuron subsamples against `log n`.",
            "",
            markdown_table(dimension_table(dimensions), floatfmt=".2f"),
            "",
            *undefined_estimates(dimensions),
        ]
    if analysis is not None and dimensions is not None:
        correlations = pd.DataFrame([{"method": m, **r} for m, r in analysis["correlations"].items()])
        parts += [
            "## Dimension and connectivity (Ferbach et al.)",
            "",
            "Each claim of the paper, checked against this run:",
            "",
            *[f"- {line}" for line in paper_claims(barriers, dimensions, analysis)],
            "",
        ]
        if len(correlations):
            parts += ["Spearman's rho of test loss barrier against dimension (95% bootstrap interval):", ""]
            parts += [markdown_table(correlations, floatfmt=".3f"), ""]
    parts += ["## Figures", ""]
    parts += [f"![{name}]({path})\n" for name, path in figures.items()]
    parts += [
        "Full tables: `barriers.csv` (one row per configuration, pair, method, split and metric) and "
        "`curves.csv` (every point of every path).",
        "",
    ]
    return "\n".join(parts)


# --- fusion (Akash, Li and Garcia Trillos) ---------------------------------------------------------

FUSION_ORDER = ["input", "fused", "fused_no_hidden", "vanilla", "one_shot", "ensemble"]


def fusion_table(fusion: pd.DataFrame, value: str = "test_accuracy") -> pd.DataFrame:
    """One row per configuration and model of the fuse stage, ``value`` before and after fine-tuning."""
    table = fusion.copy()
    table["order"] = table["kind"].map(FUSION_ORDER.index)
    table["fine_tuned"] = table["fine_tuned"].map({True: "after fine-tuning", False: "before fine-tuning"})
    pivot = table.pivot_table(
        index=[*CONFIG_KEYS, "order", "target_width", "model"], columns="fine_tuned", values=value, aggfunc="first"
    )
    columns = [c for c in ("before fine-tuning", "after fine-tuning") if c in pivot.columns]
    return pivot[columns].reset_index().drop(columns="order").rename_axis(columns=None)


def hidden_term_table(fusion: pd.DataFrame) -> pd.DataFrame:
    """Recurrent models: test accuracy of fusion with and without the hidden-to-hidden cost (same width)."""
    rows = fusion[fusion["kind"].isin(["fused", "fused_no_hidden"]) & (fusion["target_width"] == fusion["width"])]
    if rows.empty or "fused_no_hidden" not in set(rows["kind"]):
        return pd.DataFrame()
    rows = rows[rows.groupby(CONFIG_KEYS)["kind"].transform(lambda k: "fused_no_hidden" in set(k))]
    table = rows.assign(term=rows["kind"].map({"fused": "with hidden term", "fused_no_hidden": "without hidden term"}))
    table["fine_tuned"] = table["fine_tuned"].map({True: "after", False: "before"})
    pivot = table.pivot_table(index=CONFIG_KEYS, columns=["term", "fine_tuned"], values="test_accuracy")
    pivot.columns = [f"{term}, {when} fine-tuning" for term, when in pivot.columns]
    return pivot.reset_index()


def fusion_metrics(fusion: pd.DataFrame) -> dict:
    """DVC metrics: per configuration, the test accuracy of every kind of model before fine-tuning (mean
    over the input models; the fused model at the input width)."""
    result = {}
    same_width = fusion[(fusion["target_width"] == fusion["width"]) & ~fusion["fine_tuned"].astype(bool)]
    for key, group in same_width.groupby(CONFIG_KEYS, sort=True):
        means = group.groupby("kind")["test_accuracy"].mean()
        result[metric_key(dict(zip(CONFIG_KEYS, key, strict=True)))] = {k: round(v, 4) for k, v in means.items()}
    return result


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


def fusion_markdown(fusion: pd.DataFrame, plane_figures: dict) -> list[str]:
    """The fusion sections of the report."""
    parts = [
        "## Wasserstein-barycentre fusion (Akash, Li and Garcia Trillos)",
        "",
        "Test accuracy of each input model, the fused models (one per target width), vanilla averaging, one-shot "
        "OT fusion and the output ensemble, before and after the short fine-tuning of `fuse.fine_tune`. "
        "Fused BatchNorm models have their statistics recomputed on the training data.",
        "",
    ]
    for arch, rows in fusion.groupby("arch", sort=True):
        parts += [f"### {arch}", "", markdown_table(fusion_table(rows)), ""]
    hidden = hidden_term_table(fusion)
    if len(hidden):
        parts += [
            "### Recurrent layers: the hidden-to-hidden term",
            "",
            "Test accuracy of the fused model with the Gromov-Wasserstein hidden-to-hidden cost (`fuse.ot.alpha_h`) "
            "and without it (the ablation).",
            "",
            markdown_table(hidden),
            "",
        ]
    if plane_figures:
        parts += [
            "### Loss landscape planes",
            "",
            "Plane `permutation`: model 1, model 2 and model 2 permuted by the barycentre's couplings; plane "
            "`fusion`: model 1, model 2 and their barycentre. Model 1 and permuted model 2 in one low-loss "
            "region, apart from model 2, is linear mode connectivity after alignment.",
            "",
        ]
        parts += [f"![{name}]({path})\n" for name, path in plane_figures.items()]
    return parts
