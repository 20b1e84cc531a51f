"""What DVC compares across experiments: the headline metrics (``dvc exp show``) and the data of the
barrier-against-width plots (``dvc plots``)."""

from __future__ import annotations

import pandas as pd

from lmcot.study import CLAIMS, family, fusion_gain, tally, uncorrected

FAMILY_KEYS = {"no alignment": "unaligned", "weights": "weights", "data": "data", "barycentre": "barycentre"}


def headline_metrics(barriers: pd.DataFrame, overfit: pd.DataFrame, findings: list, fusion: pd.DataFrame) -> dict:
    """The few headline numbers compared across experiments, in the order ``dvc exp show`` prints them and
    with short names so that they fit a terminal: the mean loss barrier per method family on ``train`` and
    ``test``; the ``endpoints`` (mean losses, test accuracy, overfit and undertrained configurations); each
    claim's tally (``"+4 -2 /8 na2"``: supported, contradicted, checks, not applicable;
    :data:`lmcot.study.CLAIMS`); fusion's test-accuracy gain over averaging. Per-configuration numbers live in
    reports/tables/."""
    out = {}
    plain = uncorrected(barriers)
    loss = plain[plain["metric"] == "loss"].assign(family=lambda t: t["method"].map(family))
    for split in sorted(set(loss["split"]), reverse=True):
        means = loss[loss["split"] == split].groupby("family")["barrier"].mean()
        out[split] = {key: round(float(means[name]), 4) for name, key in FAMILY_KEYS.items() if name in means}
    out["endpoints"] = {
        "train_loss": round(float(overfit["train_loss"].mean()), 4),
        "test_loss": round(float(overfit["test_loss"].mean()), 4),
        "test_acc": round(float(overfit["test_accuracy"].mean()), 4),
        "overfit": int(overfit["overfit"].sum()),
        "undertrained": int(overfit["undertrained"].sum()),
    }
    out["claims"] = {}
    for claim, spec in CLAIMS.items():
        counts = tally(findings, claim)
        if counts["checks"]:
            na = f" na{counts['not_applicable']}" if counts["not_applicable"] else ""
            out["claims"][spec.short] = f"+{counts['supported']} -{counts['contradicted']} /{counts['checks']}{na}"
    gains = fusion_gain(fusion, "test")
    if len(gains):
        out["fusion_gain"] = round(float(gains.mean()), 4)
    return out


def count_leaves(tree) -> int:
    """Number of leaf values of a nested dict (the columns ``dvc exp show`` prints)."""
    return sum(count_leaves(v) for v in tree.values()) if isinstance(tree, dict) else 1


def family_plot(barriers: pd.DataFrame, split: str) -> pd.DataFrame:
    """Data of a DVC plot: mean loss barrier per method family (columns) against width, mean over the
    learning rates and pairs of each width."""
    loss = barriers[(barriers["split"] == split) & (barriers["metric"] == "loss")]
    table = loss.assign(family=loss["method"].map(family)).pivot_table(
        index="width", columns="family", values="barrier", aggfunc="mean"
    )
    return table.reindex(columns=list(FAMILY_KEYS)).rename(columns=FAMILY_KEYS).reset_index()
