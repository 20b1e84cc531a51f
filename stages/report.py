"""Stage report: gather every configuration's results into reports/ (tables, DVC metrics and plots,
seaborn figures, and reports/README.md, the report a person reads)."""

import json
import logging
import sys

import pandas as pd
from common import REPORTS, results_dir, setup

from lmcot import report
from lmcot.analysis import identical_methods
from lmcot.barrier import evaluation_grid
from lmcot.config import configurations
from lmcot.io import atomic_path, write_csv, write_json, write_text
from lmcot.replication import Run, replicate

log = logging.getLogger("report")


def read_results(params, name):
    frames = []
    for config in configurations(params):  # only the current sweep, never stale folders
        path = results_dir(config) / name
        if not path.exists():
            sys.exit(f"report: {path} is missing; run `dvc repro` to make it")
        frames.append(pd.read_csv(path))
    return pd.concat(frames, ignore_index=True)


def save_figure(figure, name, params):
    fmt = params["report"]["figure_format"]
    path = REPORTS / "figures" / f"{name}.{fmt}"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=fmt, dpi=params["report"]["dpi"], bbox_inches="tight")
    report.close(figure)
    return path.relative_to(REPORTS)


def read_alignments(params) -> list[dict]:
    """Every alignment record of the sweep, each tagged with its configuration."""
    records = []
    for config in configurations(params):
        document = json.loads((results_dir(config) / "alignment.json").read_text())
        records += [{**r, "configuration": config.name} for r in document["alignments"]]
    return records


def main():
    params = setup("report")
    barriers = read_results(params, "barriers.csv")
    curves = read_results(params, "curves.csv")
    methods = params["align"]["methods"]
    write_csv(REPORTS / "barriers.csv", barriers)
    write_csv(REPORTS / "curves.csv", curves)
    dimensions = read_results(params, "dimensions.csv")
    write_csv(REPORTS / "dimensions.csv", dimensions)
    analysis = report.ferbach_analysis(barriers, dimensions)
    metrics = {
        **report.metrics(barriers),
        "dimension": report.dimension_metrics(dimensions),
        # "method, mlp d2 w32" -> "method/mlp-d2-w32", the form of the slopes' keys
        "barrier_dimension_spearman": {
            k.replace(", ", "/").replace(" ", "-"): round(r["rho"], 4) for k, r in analysis["correlations"].items()
        },
        "barrier_width_loglog_slope": {m: round(s, 4) for m, s in analysis["slopes"].items()},
    }
    fusion = read_results(params, "fusion.csv")
    write_csv(REPORTS / "fusion.csv", fusion)
    metrics["fusion_test_accuracy"] = report.fusion_metrics(fusion)

    test_loss = report.summary_table(barriers, "test", "loss")
    write_csv(
        REPORTS / "plots" / "barrier_vs_width.csv",
        report.wide_by_method(test_loss, ["width", *report.CONFIG_KEYS[:3], "lr"])[["width", *methods]],
    )
    mean_curve = curves[(curves["split"] == "test") & (curves["metric"] == "loss")]
    mean_curve = mean_curve.groupby([*report.CONFIG_KEYS, "method", "alpha"])["value"].mean().reset_index(name="mean")
    write_csv(
        REPORTS / "plots" / "interpolation.csv",
        report.wide_by_method(mean_curve, [*report.CONFIG_KEYS, "alpha"])[["alpha", *methods]],
    )

    dpi = params["report"]["dpi"]
    figures = {
        "interpolation_test": save_figure(
            report.interpolation_figure(curves, "test", dpi), "interpolation_test", params
        ),
        "barrier_vs_width_test": save_figure(
            report.barrier_vs_width_figure(barriers, "test", dpi), "barrier_vs_width_test", params
        ),
    }
    if "train" in set(barriers["split"]):
        figures["interpolation_train"] = save_figure(
            report.interpolation_figure(curves, "train", dpi), "interpolation_train", params
        )
    if barriers["lr"].nunique() > 1:
        figures["midpoint_vs_lr"] = save_figure(report.midpoint_vs_lr_figure(barriers, dpi), "midpoint_vs_lr", params)
        figures["dimension_vs_lr"] = save_figure(
            report.dimension_vs_lr_figure(dimensions, dpi), "dimension_vs_lr", params
        )
    if len(analysis["paired"]):
        figure = report.barrier_vs_dimension_figure(analysis["paired"], dpi)
        figures["barrier_vs_dimension"] = save_figure(figure, "barrier_vs_dimension", params)
    if analysis["slopes"]:
        figure = report.barrier_loglog_figure(barriers, analysis["slopes"], dpi)
        figures["barrier_vs_width_loglog"] = save_figure(figure, "barrier_vs_width_loglog", params)

    plane_figures = {}
    for config in configurations(params):
        grid_rows = pd.read_csv(results_dir(config) / "plane.csv")
        points = pd.read_csv(results_dir(config) / "plane_points.csv")
        name = f"plane_{config.name}"
        plane_figures[name] = save_figure(report.plane_figure(grid_rows, points, config.name, dpi), name, params)

    identical = identical_methods(read_alignments(params))
    run = Run(params, barriers, dimensions, identical)
    sections = []
    metrics["replication"] = {}
    for key in params["report"]["replications"]:
        result = replicate(key, run)
        paths = {name: save_figure(figure, name, params) for name, figure in result.figures.items()}
        sections.append(result.markdown(paths))
        metrics["replication"][key] = result.metrics()
        for claim in result.claims:
            log.info("%s: %s -> %s", key, claim.key, claim.verdict)
    write_json(REPORTS / "metrics.json", metrics)

    endpoints = report.endpoint_table(barriers)
    grid = evaluation_grid(params["barrier"]["alphas"])
    text = report.write_markdown(params, barriers, endpoints, figures, grid, dimensions, analysis, sections, identical)
    text += "\n".join(report.fusion_markdown(fusion, plane_figures)) + "\n"
    write_text(REPORTS / "README.md", text)
    log.info("wrote %s", REPORTS / "README.md")


if __name__ == "__main__":
    main()
