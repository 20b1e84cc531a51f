"""Stage report: gather every configuration's results into reports/: the report a person reads
(reports/README.md), its figures, the headline DVC metrics (reports/metrics.json), the data of the DVC
plots (reports/plots/) and the full tables (reports/tables/)."""

from pathlib import Path

import pandas as pd
from common import REPORTS, results_dir, run, setup

from lmcot.config import configurations
from lmcot.io import atomic_path, read_csv, read_json, write_csv, write_json, write_text
from lmcot.report.build import Inputs, build
from lmcot.report.figures import close

RESULTS = ("barriers", "curves", "dimensions", "fusion", "fusion_costs")  # results/<configuration>/<name>.csv
EVERY_ROW = ("barriers.csv", "curves.csv", "dimensions.csv", "fusion.csv")  # in reports/, the other tables in tables/


def read_inputs(params) -> Inputs:
    """Every configuration's results; only the current sweep's, never stale folders."""
    configs = configurations(params)
    frames = {
        name: pd.concat([read_csv(results_dir(c) / f"{name}.csv") for c in configs], ignore_index=True)
        for name in RESULTS
    }
    alignments = [
        {**record, "configuration": c.name}
        for c in configs
        for record in read_json(results_dir(c) / "alignment.json")["alignments"]
    ]
    planes = {
        c.name: (read_csv(results_dir(c) / "plane.csv"), read_csv(results_dir(c) / "plane_points.csv")) for c in configs
    }
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
    run("report", main)
