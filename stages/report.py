"""Stage report: gather every configuration's results into reports/: the report a person reads
(reports/README.md), its figures, the headline DVC metrics (reports/metrics.json), the data of the DVC
plots (reports/plots/) and the full tables (reports/tables/)."""

import json
import sys
from pathlib import Path

import pandas as pd
from common import REPORTS, results_dir, setup

from lmcot.config import configurations
from lmcot.io import atomic_path, write_csv, write_json, write_text
from lmcot.report.build import Inputs, build
from lmcot.report.figures import close

RESULTS = ("barriers", "curves", "dimensions", "fusion", "fusion_costs")  # results/<configuration>/<name>.csv
EVERY_ROW = ("barriers.csv", "curves.csv", "dimensions.csv", "fusion.csv")  # in reports/, the other tables in tables/


def read_inputs(params) -> Inputs:
    """Every configuration's results; only the current sweep's, never stale folders."""
    configs = configurations(params)
    paths = {name: [results_dir(config) / f"{name}.csv" for config in configs] for name in RESULTS}
    if missing := [path for name in RESULTS for path in paths[name] if not path.exists()]:
        sys.exit(f"report: {missing[0]} is missing; run `dvc repro` to make it")
    frames = {name: pd.concat([pd.read_csv(path) for path in paths[name]], ignore_index=True) for name in RESULTS}
    alignments = [
        {**record, "configuration": c.name}
        for c in configs
        for record in json.loads((results_dir(c) / "alignment.json").read_text())["alignments"]
    ]
    planes = {c.name: (pd.read_csv(results_dir(c) / "plane.csv"), pd.read_csv(results_dir(c) / "plane_points.csv"))
              for c in configs}  # fmt: skip
    return Inputs(**frames, alignments=alignments, planes=planes)


def table_path(name: str) -> Path:
    return Path(name) if name in EVERY_ROW else Path("tables", name)


def save_figure(params, name: str, figure) -> Path:
    fmt = params["report"]["figure_format"]
    path = REPORTS / "figures" / f"{name}.{fmt}"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=fmt, dpi=params["report"]["dpi"], bbox_inches="tight")
    close(figure)
    return path.relative_to(REPORTS)


def main():
    params = setup("report")
    report = build(params, read_inputs(params), lambda name, figure: save_figure(params, name, figure), table_path)
    for name, table in report.tables.items():
        write_csv(REPORTS / table_path(name), table)
    for name, data in report.plots.items():
        write_csv(REPORTS / "plots" / f"{name}.csv", data)
    write_json(REPORTS / "metrics.json", report.metrics, sort_keys=False)  # the order dvc exp show prints
    write_text(REPORTS / "README.md", report.markdown)


if __name__ == "__main__":
    main()
