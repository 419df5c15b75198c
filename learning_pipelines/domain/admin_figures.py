"""What the platform's admin views show of revision queues and tag-quality debt, bounded so that a metric never
has more series than a dashboard can draw: the top themes only, debt reasons from a fixed list, the last days only.

Pure pandas over small frames the warehouse has already aggregated (db/monitoring_reads.py).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from learning_pipelines.domain import revision

# Themes shown per view: the most due (or most indebted) ones. A platform has hundreds of themes; ten bars are
# what an admin reads, and each one is a series Prometheus keeps.
TOP_THEMES = 10
# Tag-quality debt is judged over the last week of queue dates: one day is noisy (a day's queues are built window
# by window, so the latest date is still filling in), a week is what the content team fixes mappings against.
DEBT_DAYS = 7
# The reasons revision queues log a due concept as tag-quality debt with, and the
# short label each one is exported under. A reason not in the list is counted as OTHER_REASON, so the number of
# series stays fixed whatever the log holds.
DEBT_REASONS = {
    revision.DEBT_INFERRED_FROM_GRAPH: "theme_inferred_from_graph",
    revision.DEBT_UNMAPPED: "unmapped",
}
OTHER_REASON = "other"


def top_themes(totals: pd.DataFrame, by: str, n: int = TOP_THEMES) -> pd.DataFrame:
    """The `n` rows of `totals` (theme_key and counts) with the largest `by`, ties by theme_key; those with `by` at 0
    left out."""
    ranked = totals.loc[totals[by] > 0].sort_values([by, "theme_key"], ascending=[False, True], kind="stable")
    return ranked.head(n).reset_index(drop=True)


def debt_dates(built_dates: list[dt.date], n: int = DEBT_DAYS) -> list[dt.date]:
    """The `n` queue dates ending with the latest one of `built_dates` (the dates window builds were for); none
    without builds."""
    if not built_dates:
        return []
    latest = max(built_dates)
    return [latest - dt.timedelta(days=back) for back in range(n - 1, -1, -1)]


def debt_by_reason(debt: pd.DataFrame) -> pd.Series:
    """Due concepts logged as debt by reason label (every label of DEBT_REASONS and OTHER_REASON, 0 when none), of
    `debt`: reason, n_concepts."""
    labels = debt["reason"].map(DEBT_REASONS).fillna(OTHER_REASON)
    every = list(DEBT_REASONS.values()) + [OTHER_REASON]
    return debt["n_concepts"].groupby(labels).sum().reindex(every, fill_value=0).astype(int)


def debt_by_theme(debt: pd.DataFrame, n: int = TOP_THEMES) -> pd.DataFrame:
    """theme_key (the fallback the debt counts in: THEME::<id> or UNMAPPED), n_concepts: the `n` themes with most
    debt, of `debt`: fallback_key, n_concepts."""
    totals = debt.groupby("fallback_key", as_index=False)["n_concepts"].sum().rename(
        columns={"fallback_key": "theme_key"})
    return top_themes(totals, "n_concepts", n)
