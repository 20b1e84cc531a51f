"""The report's figures (matplotlib and seaborn), each returned as a figure for the stage to save.

Per study: loss barrier against width, loss along the linear path, midpoint loss against learning rate,
effective dimension against learning rate; per configuration: the loss landscape planes.
"""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from lmcot.analysis import CONFIG_KEYS, t_bounds  # noqa: E402
from lmcot.report.tables import DIMENSIONS, studies  # noqa: E402
from lmcot.study import STUDY_KEYS, family, method_colours, method_order  # noqa: E402

MAX_LINES = 8  # methods per panel; more are split into one panel row per family


def slug(label: str) -> str:
    return label.replace(" ", "-")


def study_figures(barriers: pd.DataFrame, curves: pd.DataFrame, dimensions: pd.DataFrame, dpi: int):
    """``(name, figure)`` of every study's figures: barrier against width (several widths), interpolation,
    midpoint against learning rate (several learning rates), then dimension against learning rate."""
    for label, rows in studies(barriers):
        name = slug(label)
        if rows["width"].nunique() > 1:
            yield f"barrier_vs_width_{name}", barrier_vs_width_figure(rows, dpi)
        study_curves = curves.merge(rows[STUDY_KEYS].drop_duplicates())
        yield f"interpolation_{name}", interpolation_figure(study_curves, dpi)
        if rows["lr"].nunique() > 1:
            yield f"midpoint_vs_lr_{name}", midpoint_vs_lr_figure(rows, dpi)
    for label, rows in studies(dimensions):
        if rows["lr"].nunique() > 1:
            yield f"dimension_vs_lr_{slug(label)}", dimension_vs_lr_figure(rows, dpi)


def plane_figures(planes: dict, dpi: int):
    """``(name, figure)`` of each configuration's planes; ``planes``: configuration name -> (grid, points)."""
    for config, (grid, points) in planes.items():
        yield f"plane_{config}", plane_figure(grid, points, config, dpi)


def close(figure) -> None:
    plt.close(figure)


# --- one figure each --------------------------------------------------------------------------------------


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


def _lr_axis(grid, lrs) -> None:
    """Log-scaled learning-rate axes labelled at the swept values only."""
    for ax in grid.axes.flat:
        ax.set_xscale("log")
        ax.set_xticks(sorted(lrs), [f"{lr:g}" for lr in sorted(lrs)])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def barrier_vs_width_figure(barriers: pd.DataFrame, dpi: int = 110):
    """The headline: loss barrier against width (log 2), one line per method (mean over pairs, band: 95%
    t-interval over pairs), panels: split (rows) x learning rate (columns)."""
    data = barriers[barriers["metric"] == "loss"].copy()
    data, row = _method_facets(data, "split")
    methods = method_order(data["method"])
    grid = sns.relplot(
        data=data, x="width", y="barrier", hue="method", hue_order=methods, palette=method_colours(methods),
        row=row, col="lr", kind="line", marker="o", errorbar=t_bounds, height=2.8, aspect=1.15,
        facet_kws={"sharey": "row", "margin_titles": False},
    )  # fmt: skip
    for ax in grid.axes.flat:
        ax.set_xscale("log", base=2)
        ax.axhline(0, color="grey", lw=0.8)
    _lr_title(grid)
    grid.set_axis_labels("hidden units per layer", "loss barrier (nats)")
    grid.figure.suptitle(
        "Loss barrier after alignment against width (rows: split; band: 95% t-interval over pairs)", y=1.02
    )
    grid.figure.set_dpi(dpi)
    return grid.figure


def interpolation_figure(curves: pd.DataFrame, dpi: int = 110):
    """Loss along the linear path at the widest width, one line per method, panels: split x learning rate."""
    data = curves[(curves["metric"] == "loss") & (curves["width"] == curves["width"].max())].copy()
    data, row = _method_facets(data, "split")
    methods = method_order(data["method"])
    grid = sns.relplot(
        data=data, x="alpha", y="value", hue="method", hue_order=methods, palette=method_colours(methods),
        row=row, col="lr", kind="line", errorbar=t_bounds, height=2.6, aspect=1.2,
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
        col="split", row=row, kind="line", marker="o", errorbar=t_bounds, height=3, aspect=1.2,
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
        errorbar=t_bounds, height=3, aspect=1.1, facet_kws={"sharey": False},
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
