"""The report's summary: what was run, which endpoints are overfit or undertrained, the headline figure and
the verdict on each claim of :mod:`lmcot.study`."""

from __future__ import annotations

import pandas as pd

from lmcot.analysis import CONTRADICTED, LEVEL, MIN_SAMPLES, SUPPORTED, UNDECIDED
from lmcot.design import seed_pairs
from lmcot.replication import markdown as markdown_table
from lmcot.report.tables import config_label
from lmcot.study import CLAIMS, FAMILIES, family


def summary_section(
    params: dict, groups: list, overfit: pd.DataFrame, findings: list, findings_summary: pd.DataFrame, figures: list
) -> list[str]:
    """The summary's lines; ``figures``: the embedded headline figures' lines."""
    n_pairs = len(seed_pairs(params["train"]["seeds"], params["align"]["pairs"]))
    gap, min_accuracy = params["report"]["overfit_gap"], params["report"]["min_train_accuracy"]
    return [
        "## Summary",
        "",
        *what_was_run(params, groups, n_pairs),
        *endpoints_line(overfit, gap, min_accuracy),
        *figures,
        *claims_section(findings, findings_summary),
    ]


def what_was_run(params: dict, groups: list, n_pairs: int) -> list[str]:
    """The summary's paragraphs on the sweep, the training recipe and the alignment methods."""
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


def claims_section(findings: list, table: pd.DataFrame) -> list[str]:
    """The verdict on each claim (``table``: :func:`lmcot.study.findings_table`) and what each claim says."""
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
