"""Summaries, figures and the written report, from the barrier and curve tables (no file paths here)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

CONFIG_KEYS = ["dataset", "arch", "depth", "width", "lr"]


def config_label(row) -> str:
    return f"{row['dataset']} {row['arch']} d{row['depth']} w{row['width']} lr{row['lr']}"


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
    """Loss and error against alpha, one panel per configuration, one line per method, band = spread over pairs."""
    data = curves[curves["split"] == split].copy()
    data["configuration"] = data.apply(config_label, axis=1)
    grid = sns.relplot(
        data=data,
        x="alpha",
        y="value",
        hue="method",
        row="metric",
        col="configuration",
        kind="line",
        errorbar=("pi", 100),
        facet_kws={"sharey": "row", "margin_titles": True},
        height=2.6,
        aspect=1.2,
        marker="o",
        markersize=3,
    )
    grid.set_titles(row_template="{row_name}", col_template="{col_name}")
    grid.set_axis_labels("alpha (0: A, 1: aligned B)", "")
    for ax, metric in zip(grid.axes[:, 0], grid.row_names, strict=True):
        ax.set_ylabel("cross-entropy (nats)" if metric == "loss" else "error rate")
    grid.figure.suptitle(f"{split} split along the linear path; line = mean over pairs, band = min to max", y=1.02)
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


def close(figure) -> None:
    plt.close(figure)


def markdown_table(table: pd.DataFrame, floatfmt=".4f") -> str:
    return table.to_markdown(index=False, floatfmt=floatfmt)


def findings(barriers: pd.DataFrame, endpoints: pd.DataFrame) -> list[str]:
    """Sentences computed from the numbers: what this run shows, stated only where the data say it."""
    lines = []
    table = summary_table(barriers, "test", "loss")
    pivot = table.pivot_table(index=CONFIG_KEYS, columns="method", values="mean")
    baseline = "identity" if "identity" in pivot.columns else None
    for method in [m for m in pivot.columns if baseline and m != baseline]:
        lower = pivot[method] < pivot[baseline]
        exceptions = [config_label(dict(zip(CONFIG_KEYS, k, strict=True))) for k in pivot.index[~lower]]
        lines.append(
            f"`{method}` gives a lower mean test loss barrier than `{baseline}` in {int(lower.sum())} of "
            f"{len(lower)} configurations"
            + (f"; not in: {', '.join(exceptions)}." if exceptions else " (all of them).")
        )
    for method in pivot.columns:
        by_width = table[table["method"] == method].groupby("width")["mean"].mean()
        if len(by_width) >= 2:
            trend = "falls" if by_width.iloc[-1] < by_width.iloc[0] else "does not fall"
            lines.append(
                f"With `{method}`, the mean test loss barrier {trend} from width {by_width.index[0]} "
                f"({by_width.iloc[0]:.3f}) to width {by_width.index[-1]} ({by_width.iloc[-1]:.3f})."
            )
    best = endpoints.loc[endpoints["test_accuracy"].idxmax()]
    lines.append(
        f"The best endpoint models reach a mean test accuracy of {best['test_accuracy']:.3f} ({config_label(best)})."
    )
    return lines


def write_markdown(
    params: dict, barriers: pd.DataFrame, endpoints: pd.DataFrame, figures: dict, grid, dimensions=None
) -> str:
    """The report: what was run, the tables, the figures (``figures``: name -> relative path), findings.

    ``dimensions`` (optional): the per-model, per-layer dimension estimates of the dimension stage.
    """
    sweep, recipe = params["train"]["sweep"], params["train"]["recipe"]
    seeds = params["train"]["seeds"]
    n_pairs = len(seeds) * (len(seeds) - 1) // 2

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
        f"- Data sets: {', '.join(sweep['datasets'])}; architectures: {', '.join(sweep['archs'])}; "
        f"hidden layers: {', '.join(map(str, sweep['depths']))}; widths: {', '.join(map(str, sweep['widths']))}; "
        f"learning rates: {', '.join(map(str, sweep['lrs']))}.",
        f"- Seeds {', '.join(map(str, seeds))} per configuration, so {n_pairs} pairs each. Training: "
        f"{recipe['optimizer']} (momentum {recipe['momentum']}, weight decay {recipe['weight_decay']}), "
        f"{recipe['epochs']} epochs of batch {recipe['batch_size']}, {recipe['warmup_epochs']} warm-up epochs "
        f"then a {recipe['schedule']} schedule.",
        f"- Alignment methods: {', '.join(params['align']['methods'])}.",
        f"- Path grid ({len(grid)} points of alpha): {', '.join(f'{a:g}' for a in grid)}. A barrier is a maximum over "
        "this grid only, so it can miss a peak between grid points.",
        "- Barrier: `max_a [L(a) - ((1 - a) L(0) + a L(1))]`; midpoint: `L(1/2)`. L is the mean cross-entropy "
        "(loss, nats) or the error rate. Cells give the mean ± standard deviation over pairs.",
        "",
        "## Findings",
        "",
        *[f"- {line}" for line in findings(barriers, endpoints)],
        "",
        "## Endpoint models",
        "",
        markdown_table(endpoints),
        "",
    ]
    for split in sorted(barriers["split"].unique(), reverse=True):
        for metric in ("loss", "error"):
            parts += [f"## {split.capitalize()} {metric} barrier", "", markdown_table(barrier_pivot(split, metric)), ""]
    parts += ["## Test loss at the midpoint", "", markdown_table(barrier_pivot("test", "loss", "midpoint")), ""]
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
        ]
    parts += ["## Figures", ""]
    parts += [f"![{name}]({path})\n" for name, path in figures.items()]
    parts += [
        "Full tables: `barriers.csv` (one row per configuration, pair, method, split and metric) and "
        "`curves.csv` (every point of every path).",
        "",
    ]
    return "\n".join(parts)
