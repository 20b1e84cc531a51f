"""What a replication section says, word for word, and what its figure draws.

Each section is rendered from a synthetic run whose numbers are known and compared with a reviewed copy in
``tests/golden/`` (settings table, regime sentence, verdict rules, claims with their evidence, the tables behind
the paper's figures, notes on unfit endpoints); each figure is compared by its structure (panels, titles, axis
labels and scales, ticks, legend, lines and bands). After a deliberate change, regenerate the copies with
``LMCOT_UPDATE_GOLDEN=1 pytest tests/test_replication_text.py`` and read the diff before committing it.
"""

import json
import os
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from test_replication import ainsworth_run, ferbach_run, preset_params

from lmcot.replication import Run, replicate

matplotlib.use("Agg")

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(autouse=True)
def close_figures():
    """Every replication draws its figure; the report stage closes each once saved, these tests after each test."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def matches_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("LMCOT_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run once with LMCOT_UPDATE_GOLDEN=1 and read what it wrote"
    assert text == path.read_text(), f"{name} differs from the reviewed copy"


def figure_structure(figure) -> str:
    """Every panel's title, axis labels and scales, tick labels, legend entries, its lines (label, style, marker,
    colour, points) and the extent of each band (a t-interval drawn as another interval changes it); rounded
    data limits catch a line drawn from the wrong column."""
    panels = []
    for ax in figure.axes:
        legend = ax.get_legend()
        panels.append(
            {
                "title": ax.get_title(),
                "xlabel": ax.get_xlabel(),
                "ylabel": ax.get_ylabel(),
                "xscale": ax.get_xscale(),
                "xbase": getattr(ax.xaxis.get_transform(), "base", None),
                "yscale": ax.get_yscale(),
                "xticks": [t.get_text() for t in ax.get_xticklabels()],
                "legend": [t.get_text() for t in legend.get_texts()] if legend else [],
                "legend_fontsize": legend.get_texts()[0].get_fontsize() if legend and legend.get_texts() else None,
                "lines": sorted(
                    (
                        str(line.get_label()),
                        line.get_linestyle(),
                        str(line.get_marker()),
                        matplotlib.colors.to_hex(line.get_color()),
                        round(float(line.get_linewidth()), 2),
                        len(line.get_xdata()),
                    )
                    for line in ax.get_lines()
                ),  # fmt: skip
                "bands": sorted(
                    [round(float(v), 3) for v in band.get_paths()[0].get_extents().intervaly]
                    for band in ax.collections
                    if band.get_paths()
                ),
                "ylim": [round(float(v), 2) for v in ax.dataLim.intervaly],
            }
        )
    size = [round(float(v), 2) for v in figure.get_size_inches()]
    return json.dumps({"size": size, "panels": panels}, indent=1, default=str) + "\n"


@pytest.fixture(scope="module")
def in_regime():
    return preset_params("ferbach2024_mnist", **{"train.sweep.datasets": ["mnist"], "fetch.datasets": []})


def unfit(run: Run, over: str, overfit_at, undertrained_at) -> Run:
    """``run`` with endpoints that overfit at ``overfit_at`` (test loss 1.2 against train 0.05) and are
    undertrained at ``undertrained_at`` (train error 0.4), as the notes and not-applicable cells describe."""
    barriers = run.barriers.copy()
    at = barriers[over]
    over_rows = at == overfit_at
    barriers.loc[
        over_rows & (barriers["metric"] == "loss") & (barriers["split"] == "train"), ["value_a", "value_b"]
    ] = 0.05
    barriers.loc[over_rows & (barriers["metric"] == "loss") & (barriers["split"] == "test"), ["value_a", "value_b"]] = (
        1.2
    )
    weak = (at == undertrained_at) & (barriers["metric"] == "error")
    barriers.loc[weak, ["value_a", "value_b"]] = 0.4
    params = {**run.params, "report": {**run.params["report"], "min_train_accuracy": 0.9}}
    return Run(params, barriers, run.dimensions, run.identical)


def apart(run: Run) -> Run:
    """``run`` with train-split barriers and midpoints at 0.8 times the test split's, and endpoints whose test
    loss differs by seed: a table, claim or figure that reads the wrong split, or draws another interval than
    the t-interval, then shows it."""
    barriers = run.barriers.copy()
    train = barriers["split"] == "train"
    barriers.loc[train, ["barrier", "midpoint"]] *= 0.8
    test_loss = ~train & (barriers["metric"] == "loss")
    for side in ("a", "b"):
        barriers.loc[test_loss, f"value_{side}"] += 0.01 * barriers.loc[test_loss, f"seed_{side}"]
    return Run(run.params, barriers, run.dimensions, run.identical)


def section(result, figure: str) -> str:
    return "\n".join(result.markdown({figure: f"figures/{figure}.png"}))


def test_the_ferbach_section_in_the_papers_regime(in_regime):
    result = replicate("ferbach2024", apart(ferbach_run(in_regime)))
    matches_golden("ferbach2024_in_regime.md", section(result, "ferbach2024"))
    matches_golden("ferbach2024_figure.json", figure_structure(result.figures["ferbach2024"]))


def test_the_ferbach_section_outside_the_regime_with_unfit_endpoints_and_shared_pairs():
    quick = preset_params("ferbach2024_mnist_quick", **{"align.pairs": "all"})
    run = ferbach_run(quick, cov_gain=-0.2, dims={"pr_weights": 300.0, "pr_cov": 40.0, "pr_activations": 2.0})
    backwards = run.barriers.iloc[::-1].reset_index(drop=True)  # rows in any order: tables sorted all the same
    run = Run(run.params, backwards, run.dimensions, [["naive_weight_matching", "ot_emd"]])
    result = replicate("ferbach2024", unfit(apart(run), "lr", overfit_at=0.1, undertrained_at=1e-3))
    matches_golden("ferbach2024_outside.md", section(result, "ferbach2024"))


def test_the_git_rebasin_section_and_figure():
    params = preset_params("ainsworth2023_mnist_mlp_width", **{"train.sweep.datasets": ["mnist"], "fetch.datasets": []})
    result = replicate(
        "ainsworth2023", apart(ainsworth_run(params, {32: (0.4, 1.0), 128: (0.2, 1.0), 512: (0.02, 1.0)}))
    )
    matches_golden("ainsworth2023_in_regime.md", section(result, "ainsworth2023"))
    matches_golden("ainsworth2023_figure.json", figure_structure(result.figures["ainsworth2023"]))


def test_the_git_rebasin_section_outside_the_regime_with_unfit_endpoints():
    params = preset_params("ainsworth2023_mnist_mlp_width")  # mnist10k: 8,000 digits, fewer optimiser steps
    run = ainsworth_run(params, {32: (0.1, 1.0), 128: (0.3, 1.0), 256: (0.5, 1.0)})
    run = Run(run.params, run.barriers.assign(dataset="mnist10k"), run.dimensions)
    result = replicate("ainsworth2023", unfit(apart(run), "width", overfit_at=256, undertrained_at=32))
    matches_golden("ainsworth2023_outside.md", section(result, "ainsworth2023"))


def test_a_run_without_what_each_replication_needs(in_regime):
    run = ferbach_run(in_regime)
    one_lr = Run(run.params, run.barriers[run.barriers["lr"] == 0.1], run.dimensions)
    texts = [section(replicate(key, one_lr), key) for key in ("ferbach2024", "ainsworth2023")]
    matches_golden("nothing_to_check.md", "\n\n".join(texts))


def test_the_figures_draw_what_their_docstrings_say(in_regime):
    """Independent of the reviewed copies: the Ferbach figure's two panels on log axes, the endpoints' own loss
    dashed, the Git Re-Basin figure's train and test panels on a log-2 width axis with the zero line."""
    ferbach = replicate("ferbach2024", ferbach_run(in_regime)).figures["ferbach2024"]
    left, right = ferbach.axes[:2]
    assert (left.get_xscale(), right.get_xscale(), right.get_yscale()) == ("log", "log", "log")
    assert left.get_ylabel() == "test loss at alpha = 1/2 (nats)" and right.get_ylabel() == "participation ratio"
    assert any(line.get_linestyle() == "--" for line in left.get_lines())
    params = preset_params("ainsworth2023_mnist_mlp_width", **{"train.sweep.datasets": ["mnist"], "fetch.datasets": []})
    widths = replicate("ainsworth2023", ainsworth_run(params, {32: (0.4, 1.0), 512: (0.02, 1.0)}))
    train, test = widths.figures["ainsworth2023"].axes[:2]
    assert (train.get_title(), test.get_title()) == ("train split", "test split")
    assert [t.get_text() for t in train.get_xticklabels()] == ["32", "512"]
    assert any(np.allclose(line.get_ydata(), 0) for line in train.get_lines())  # the zero line
    assert isinstance(widths.tables[0][1], pd.DataFrame)
