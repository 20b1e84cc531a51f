"""The report's summary: what was run, the answer to each question of :mod:`lmcot.study` in a sentence followed
by its evidence, which endpoints are overfit or undertrained, the headline figure and the table of every
verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lmcot.analysis import CONTRADICTED, LEVEL, MIN_SAMPLES, NOT_APPLICABLE, SUPPORTED, UNDECIDED
from lmcot.design import seed_groups, seed_pairs
from lmcot.replication import markdown as markdown_table
from lmcot.report.tables import config_label
from lmcot.study import CLAIMS, FAMILIES, family, format_p


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
        *answers(findings),
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
    fuse = params["fuse"]
    groups_fused = len(seed_groups(seeds, fuse["num_models"], fuse["groups"]))
    return [
        f"**What was run.** {', '.join(f'{d} ({inputs[d]} inputs)' for d in sweep['datasets'])}; models "
        f"{', '.join(sweep['models'])}; learning rates {', '.join(f'{lr:g}' for lr in sweep['lrs'])}; "
        f"{len(seeds)} seeds per configuration, each configuration and seed with a random stream of its own, so "
        f"{n_pairs} {'disjoint (independent) ' if disjoint else ''}pairs each"
        f"{'' if disjoint else ' (sharing models: only a disjoint subset enters the verdicts)'}; "
        f"{groups_fused} disjoint group{'s' if groups_fused > 1 else ''} of {fuse['num_models']} models fused "
        f"per configuration. {recipe['optimizer']} (momentum {recipe['momentum']}, weight decay "
        f"{recipe['weight_decay']}), {recipe['epochs']} epochs of batch {recipe['batch_size']}, {warmup}, "
        f"{recipe['schedule']} schedule.",
        "",
        f"**Alignment methods** by family: {families}."
        + (f" Merged because they are one computation: {'; '.join(merged)}." if merged else ""),
        "",
    ]


def how_verdicts_are_made(findings: list) -> str:
    """One paragraph: the interval, the test, the multiplicity adjustment and what makes a cell not applicable."""
    tested = sum(np.isfinite(f.p) for f in findings)
    return (
        f"**How to read the verdicts.** Each effect is a mean (or a slope) over independent samples: disjoint pairs "
        f"of models, models, or disjoint groups of fused models, no two of which share a model or a random stream. "
        f"Its {LEVEL:.0%} interval is Student's t; its p-value is the two-sided t-test of a zero effect, adjusted "
        f"by Holm's method over the {tested} cells tested in this run, so that the chance of any false verdict "
        f"among them is at most {1 - LEVEL:.0%}. *{SUPPORTED}* or *{CONTRADICTED}*: adjusted p at most "
        f"{1 - LEVEL:g}, the effect on the claim's side or the other; *{UNDECIDED}*: anything else, or fewer than "
        f"{MIN_SAMPLES} samples; *{NOT_APPLICABLE}*: the endpoints are undertrained (or overfit, for a test-split "
        f"cell) or the cell lies outside the regime of the paper the claim comes from: its effect is shown, not "
        f"judged."
    )


def answers(findings: list) -> list[str]:
    """One answer per question (claim) and study, in a sentence, followed by the evidence of every cell."""
    if not findings:
        return []
    parts = [how_verdicts_are_made(findings), ""]
    studies = sorted({f.study for f in findings})
    for number, (key, spec) in enumerate(((k, s) for k, s in CLAIMS.items() if any(f.claim == k for f in findings)), 1):
        parts.append(f"**{number}. {spec.question}** ({spec.source})")
        parts.append("")
        for study in studies:
            cells = [f for f in findings if f.claim == key and f.study == study]
            if not cells:
                continue
            prefix = f"{study}: " if len(studies) > 1 else ""
            parts.append(f"{prefix}{answer_sentence(spec, cells)}")
            parts.append("")
            parts += [f"- {evidence_line(spec, f)}" for f in sorted(cells, key=lambda f: (f.lr, f.split != "train"))]
            parts.append("")
    return parts


def _where(cells: list) -> str:
    """``lr 0.01 train, lr 0.1 test``: the cells' learning rates and splits."""
    return ", ".join(f"lr {f.lr:g}" + (f" {f.split}" if f.split else "") for f in cells)


def answer_sentence(spec, cells: list) -> str:
    """The answer to ``spec``'s question from its cells, in one or two sentences."""
    judged = [f for f in cells if f.verdict != NOT_APPLICABLE]
    supported = [f for f in judged if f.verdict == SUPPORTED]
    contradicted = [f for f in judged if f.verdict == CONTRADICTED]
    open_ = [f for f in judged if f.verdict == UNDECIDED]
    claim = spec.text.rstrip(".")
    if not judged:
        return f"*Not judged here*: every cell is outside the claim's regime or rests on unfit endpoints ({claim})."
    if len(supported) == len(judged):
        text = f"*Yes*, in every cell where it applies ({len(judged)} of {len(cells)}): {claim}."
    elif len(contradicted) == len(judged):
        text = f"*No*, the opposite holds in every cell where it applies ({len(judged)} of {len(cells)}): {claim}."
    elif supported and contradicted:
        text = f"*It depends*: supported at {_where(supported)}, contradicted at {_where(contradicted)}."
    elif supported:
        text = f"*Yes where decided* ({_where(supported)}); not enough evidence at {_where(open_)}."
    elif contradicted:
        text = f"*No where decided* (the opposite at {_where(contradicted)}); not enough evidence at {_where(open_)}."
    else:
        text = f"*Not enough evidence* in any of the {len(judged)} cells where it applies."
    outside = [f for f in cells if f.verdict == NOT_APPLICABLE]
    if outside and judged:
        text += f" Not judged at {_where(outside)} (see below)."
    return text


def evidence_line(spec, finding) -> str:
    """``lr 0.01, train: 0.412 nats [0.380, 0.444], n = 15 pairs, Holm p < 0.001: supported.``"""
    e = finding.estimate
    where = f"lr {finding.lr:g}" + (f", {finding.split} split" if finding.split else "")
    if e.n == 0:
        return f"{where}: no samples."
    interval = f" [{e.low:.3f}, {e.high:.3f}]" if np.isfinite(e.low) else ""
    effect = f"{e.mean:+.3f} {spec.unit}{interval}, n = {e.n} {spec.samples}"
    widths = "; ".join(f"w{w} {m:+.3f}" for w, m in finding.by_width) if len(finding.by_width) > 1 else ""
    label = "mean barrier by width" if spec.key == "barrier_falls_with_width" else "by width"
    effect += f" ({label}: {widths})" if widths else ""
    if finding.verdict == NOT_APPLICABLE:
        return f"{where}: {effect}; **{NOT_APPLICABLE}**: {finding.reason}."
    if np.isfinite(finding.p_adjusted):
        return f"{where}: {effect}, Holm-adjusted p {format_p(finding.p_adjusted)}: **{finding.verdict}**."
    return f"{where}: {effect}: **{finding.verdict}** ({finding.reason})."


def endpoints_line(overfit: pd.DataFrame, max_gap: float, min_accuracy: float) -> list[str]:
    """The summary's paragraph on the endpoints: how well they fit, which configurations are overfit or
    undertrained."""
    over, under = overfit[overfit["overfit"]], overfit[overfit["undertrained"]]
    text = (
        f"**Endpoints.** Mean train accuracy {overfit['train_accuracy'].min():.3f} to "
        f"{overfit['train_accuracy'].max():.3f}, test accuracy {overfit['test_accuracy'].min():.3f} to "
        f"{overfit['test_accuracy'].max():.3f} over the {len(overfit)} configurations (table: Endpoints). "
    )
    text += f"Train accuracy below `report.min_train_accuracy` = {min_accuracy:g} (undertrained): " + (
        f"{len(under)} ({', '.join(config_label(r) for _, r in under.iterrows())}); no claim is judged on them."
        if len(under)
        else "none."
    )
    text += f" Test minus train loss above `report.overfit_gap` = {max_gap:g} nats (overfit): " + (
        f"{len(over)} ({', '.join(config_label(r) for _, r in over.iterrows())}); no test-split claim is judged "
        "on them (a small test-loss barrier there can come from a midpoint less over-confident than the "
        "endpoints rather than from connectivity; LMC theory is about the train split)."
        if len(over)
        else "none."
    )
    return [text, ""]


def claims_section(findings: list, table: pd.DataFrame) -> list[str]:
    """The table of every verdict (``table``: :func:`lmcot.study.findings_table`) and what each claim says."""
    if table.empty:
        return ["No claim could be checked on this sweep (it needs the methods and widths each claim names).", ""]
    parts = [
        f"**Every verdict.** Each cell: the verdict, the effect (positive: the claim's direction) with its "
        f"{LEVEL:.0%} t-interval, n and the Holm-adjusted p-value (the reasons in full: `tables/findings.csv`). "
        "The claims are this run's; whether a paper's own experiment replicates is for the presets' replications.",
        "",
        markdown_table(table.drop(columns="study") if table["study"].nunique() == 1 else table),
        "",
    ]
    for key, spec in CLAIMS.items():
        if any(f.claim == key for f in findings):
            parts.append(
                f"- `{key}`: {spec.text} Effect: {spec.effect}. Source: {spec.source}; judged on "
                f"{spec.regime.text} with trained endpoints."
            )
    return [*parts, ""]
