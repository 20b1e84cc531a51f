"""The whole report from the sweep's results: the full tables, the DVC plots' data, the figures, the headline
metrics, the replications and the written report. The stage reads the inputs and decides where each output
goes; nothing here knows a file path."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import pandas as pd

from lmcot.analysis import merge_identical, method_groups, overfit_table
from lmcot.design import evaluation_grid
from lmcot.replication import Run, replicate
from lmcot.report.figures import plane_figures, study_figures
from lmcot.report.markdown import write_markdown
from lmcot.report.metrics import count_leaves, family_plot, headline_metrics
from lmcot.report.tables import dimension_table, interval_table
from lmcot.study import findings_records, findings_table, study_findings, uncorrected

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """Every configuration's results, concatenated in the order of the sweep."""

    barriers: pd.DataFrame  # every pair, method, split and metric (methods not merged)
    curves: pd.DataFrame
    dimensions: pd.DataFrame
    fusion: pd.DataFrame
    fusion_costs: pd.DataFrame
    alignments: list[dict]  # every alignment record, each tagged with its configuration
    planes: dict  # configuration name -> (plane grid, models' points)


@dataclass
class Report:
    tables: dict  # file name -> full table, in the order the report lists them
    plots: dict  # plot name -> data of a DVC plot
    metrics: dict  # the headline metrics, in the order ``dvc exp show`` prints them
    markdown: str


def build(
    params: dict, inputs: Inputs, save_figure: Callable[[str, object], Path], table_path: Callable[[str], Path]
) -> Report:
    """The report of ``inputs``. ``save_figure(name, figure)`` writes a figure and returns its path relative to
    the report; ``table_path(name)``: where the full table ``name`` goes, relative to the report."""
    groups = method_groups(inputs.alignments, params["align"]["methods"])
    for group in groups:
        if len(group.members) > 1:
            log.info("merged: %s", group.note())
    merged = merge_identical(inputs.barriers, groups)
    settings = params["report"]
    overfit = overfit_table(inputs.barriers, settings["overfit_gap"], settings["min_train_accuracy"])
    findings = study_findings(merged, inputs.dimensions, inputs.fusion, overfit, params["train"]["recipe"]["optimizer"])
    # figures and the main tables show each path as it is; the corrected paths get a section of their own
    barriers = uncorrected(merged)
    corrected = merged[~merged.index.isin(barriers.index)]
    curves = uncorrected(merge_identical(inputs.curves, groups))
    tables = full_tables(inputs, barriers, corrected, findings, overfit)
    plots = {f"barrier_vs_width_{split}": family_plot(barriers, split) for split in sorted(set(barriers["split"]))}
    # in this order: plane_figure leaves seaborn's theme set, and the replications' figures are drawn with it
    drawn = chain(
        study_figures(barriers, curves, inputs.dimensions, settings["dpi"]),
        plane_figures(inputs.planes, settings["dpi"]),
    )
    figures = {name: save_figure(name, figure) for name, figure in drawn}  # each saved (and closed) once drawn
    metrics = headline_metrics(barriers, overfit, findings, inputs.fusion)
    sections = replications(params, inputs, groups, save_figure, metrics)
    log.info("%d metrics", count_leaves(metrics))
    text = write_markdown(
        params, barriers=barriers, corrected=corrected, dimensions=inputs.dimensions, fusion=inputs.fusion,
        fusion_costs=inputs.fusion_costs, overfit=overfit, groups=groups, findings=findings,
        findings_summary=findings_table(findings), figures=figures, grid=evaluation_grid(params["barrier"]["alphas"]),
        replications=sections, tables={name: table_path(name) for name in tables},
    )  # fmt: skip
    return Report(tables, plots, metrics, text)


def full_tables(inputs: Inputs, barriers, corrected, findings: list, overfit: pd.DataFrame) -> dict:
    """File name -> full table: the inputs as they are, and the summaries of barriers, findings and dimensions."""
    return {
        "barriers.csv": inputs.barriers,
        "curves.csv": inputs.curves,
        "barriers_summary.csv": interval_table(pd.concat([barriers, corrected])),
        "findings.csv": findings_records(findings),
        "endpoints.csv": overfit,
        "dimensions.csv": inputs.dimensions,
        "dimensions_summary.csv": dimension_table(inputs.dimensions),
        "fusion.csv": inputs.fusion,
        "fusion_costs.csv": inputs.fusion_costs,
    }


def replications(params: dict, inputs: Inputs, groups: list, save_figure, metrics: dict) -> list[list[str]]:
    """Each replication's report section (its figures saved); its verdicts go into ``metrics``."""
    identical = [list(g.members) for g in groups if len(g.members) > 1]
    run = Run(params, uncorrected(inputs.barriers), inputs.dimensions, identical)  # the papers' paths, uncorrected
    sections = []
    for key in params["report"]["replications"]:
        result = replicate(key, run)
        paths = {name: save_figure(name, figure) for name, figure in result.figures.items()}
        sections.append(result.markdown(paths))
        metrics.setdefault("replication", {})[key] = result.metrics()
        for claim in result.claims:
            log.info("%s: %s -> %s", key, claim.key, claim.verdict)
    return sections
