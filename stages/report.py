"""Stage report: gather every configuration's results into reports/: the report a person reads
(reports/README.md), its figures, the headline DVC metrics (reports/metrics.json), the data of the DVC
plots (reports/plots/) and the full tables (reports/tables/)."""

import logging

import pandas as pd
from common import REPORTS, results_dir, run, setup

from lmcot import report
from lmcot.analysis import merge_identical, method_groups, overfit_table
from lmcot.config import configurations
from lmcot.design import evaluation_grid
from lmcot.io import atomic_path, read_csv, read_json, write_csv, write_json, write_text
from lmcot.replication import Run, replicate
from lmcot.report import FAMILY_KEYS
from lmcot.study import family, findings_records, findings_table, study_findings, uncorrected

log = logging.getLogger("report")


def read_results(params, name):
    frames = []
    for config in configurations(params):  # only the current sweep, never stale folders
        frames.append(read_csv(results_dir(config) / name))  # names the file if it is missing or damaged
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
        document = read_json(results_dir(config) / "alignment.json")
        records += [{**r, "configuration": config.name} for r in document["alignments"]]
    return records


def family_plot(barriers: pd.DataFrame, split: str) -> pd.DataFrame:
    """Data of a DVC plot: mean loss barrier per method family (columns) against width, mean over the
    learning rates and pairs of each width."""
    loss = barriers[(barriers["split"] == split) & (barriers["metric"] == "loss")]
    table = loss.assign(family=loss["method"].map(family)).pivot_table(
        index="width", columns="family", values="barrier", aggfunc="mean"
    )
    return table.reindex(columns=list(FAMILY_KEYS)).rename(columns=FAMILY_KEYS).reset_index()


def main():
    params = setup("report")
    dpi = params["report"]["dpi"]
    every_barrier = read_results(params, "barriers.csv")
    curves = read_results(params, "curves.csv")
    dimensions = read_results(params, "dimensions.csv")
    fusion = read_results(params, "fusion.csv")
    fusion_costs = read_results(params, "fusion_costs.csv")
    groups = method_groups(read_alignments(params), params["align"]["methods"])
    for group in groups:
        if len(group.members) > 1:
            log.info("merged: %s", group.note())
    barriers, merged_curves = merge_identical(every_barrier, groups), merge_identical(curves, groups)
    overfit = overfit_table(every_barrier, params["report"]["overfit_gap"], params["report"]["min_train_accuracy"])
    findings = study_findings(barriers, dimensions, fusion, overfit)
    # figures and the main tables show each path as it is; the corrected paths get a section of their own
    corrected = barriers[~barriers.index.isin(uncorrected(barriers).index)]
    barriers, merged_curves = uncorrected(barriers), uncorrected(merged_curves)
    summary = findings_table(findings)

    tables = {
        "barriers.csv": REPORTS / "barriers.csv",  # every pair, method, split and metric (methods not merged)
        "curves.csv": REPORTS / "curves.csv",
        "barriers_summary.csv": REPORTS / "tables" / "barriers_summary.csv",
        "findings.csv": REPORTS / "tables" / "findings.csv",
        "endpoints.csv": REPORTS / "tables" / "endpoints.csv",
        "dimensions.csv": REPORTS / "dimensions.csv",
        "dimensions_summary.csv": REPORTS / "tables" / "dimensions_summary.csv",
        "fusion.csv": REPORTS / "fusion.csv",
        "fusion_costs.csv": REPORTS / "tables" / "fusion_costs.csv",
    }
    for name, frame in (
        ("barriers.csv", every_barrier),
        ("curves.csv", curves),
        ("barriers_summary.csv", report.interval_table(pd.concat([barriers, corrected]))),
        ("findings.csv", findings_records(findings)),
        ("endpoints.csv", overfit),
        ("dimensions.csv", dimensions),
        ("dimensions_summary.csv", report.dimension_table(dimensions)),
        ("fusion.csv", fusion),
        ("fusion_costs.csv", fusion_costs),
    ):
        write_csv(tables[name], frame)
    for split in sorted(set(barriers["split"])):
        write_csv(REPORTS / "plots" / f"barrier_vs_width_{split}.csv", family_plot(barriers, split))

    figures = {}
    for label, rows in report.studies(barriers):
        name = report.slug(label)
        if rows["width"].nunique() > 1:
            figures[f"barrier_vs_width_{name}"] = save_figure(
                report.barrier_vs_width_figure(rows, dpi), f"barrier_vs_width_{name}", params
            )
        study_curves = merged_curves.merge(rows[report.STUDY_KEYS].drop_duplicates())
        figures[f"interpolation_{name}"] = save_figure(
            report.interpolation_figure(study_curves, dpi), f"interpolation_{name}", params
        )
        if rows["lr"].nunique() > 1:
            figures[f"midpoint_vs_lr_{name}"] = save_figure(
                report.midpoint_vs_lr_figure(rows, dpi), f"midpoint_vs_lr_{name}", params
            )
    for label, rows in report.studies(dimensions):
        if rows["lr"].nunique() > 1:
            name = f"dimension_vs_lr_{report.slug(label)}"
            figures[name] = save_figure(report.dimension_vs_lr_figure(rows, dpi), name, params)
    for config in configurations(params):
        grid_rows = read_csv(results_dir(config) / "plane.csv")
        points = read_csv(results_dir(config) / "plane_points.csv")
        name = f"plane_{config.name}"
        figures[name] = save_figure(report.plane_figure(grid_rows, points, config.name, dpi), name, params)

    metrics = report.metrics(barriers, overfit, findings, fusion)
    identical = [list(g.members) for g in groups if len(g.members) > 1]
    run = Run(params, uncorrected(every_barrier), dimensions, identical)  # the papers' paths, uncorrected
    sections = []
    for key in params["report"]["replications"]:
        result = replicate(key, run)
        paths = {name: save_figure(figure, name, params) for name, figure in result.figures.items()}
        sections.append(result.markdown(paths))
        metrics.setdefault("replication", {})[key] = result.metrics()
        for claim in result.claims:
            log.info("%s: %s -> %s", key, claim.key, claim.verdict)
    write_json(REPORTS / "metrics.json", metrics, sort_keys=False)  # the order dvc exp show prints
    log.info("%d metrics in reports/metrics.json", report.count_leaves(metrics))

    text = report.write_markdown(
        params, barriers=barriers, corrected=corrected, dimensions=dimensions, fusion=fusion,
        fusion_costs=fusion_costs, overfit=overfit, groups=groups,
        findings=findings, findings_summary=summary, figures=figures, grid=evaluation_grid(params["barrier"]["alphas"]),
        replications=sections, tables={name: path.relative_to(REPORTS) for name, path in tables.items()},
    )  # fmt: skip
    write_text(REPORTS / "README.md", text)
    log.info("wrote %s", REPORTS / "README.md")


if __name__ == "__main__":
    run("report", main)
