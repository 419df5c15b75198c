"""The admin views' figures computed from whole tables with pandas, the way a person would check them by hand, for the
tests of what the exporter serves (tests/ops/test_admin_views.py, the real Prometheus in test_prometheus_server.py).
Nothing here reuses the exporter's reads: only the tables and the definitions the README gives."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables

# The reasons domain/revision.py logs debt with, by the label the README's metric table names.
REASON_LABELS = {"no theme mapping; theme inferred from prerequisite graph": "theme_inferred_from_graph",
                 "no theme mapping and no mapped graph neighbour": "unmapped"}


def _table(engine: sa.Engine, table: sa.Table) -> pd.DataFrame:
    with engine.connect() as conn:
        return bulk.read_frame(conn, sa.select(table))


def _top(counts: pd.Series, n: int = 10) -> dict[str, float]:
    counts = counts.loc[counts > 0]
    order = sorted(counts.index, key=lambda key: (-counts[key], key))
    return {key: float(counts[key]) for key in order[:n]}


def expected_series(engine: sa.Engine, shards: list[str], now: dt.datetime) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value of every series the admin views export, from the tables."""
    builds = _table(engine, tables.revision_queue_windows)
    builds = builds.loc[builds["learner_shard"].isin(shards)]
    stats = _table(engine, tables.queue_stats_daily)
    stats = stats.loc[stats["learner_shard"].isin(shards)]
    at = pd.Timestamp(now)
    current = builds.loc[(builds["first_rollover_at"] <= at) & (builds["day_ends_at"] > at)]
    themes = stats.merge(current[["window_start", "queue_date", "learner_shard"]])
    themes = themes.loc[themes["theme_key"] != "*"].groupby("theme_key")[["due_today", "overdue"]].sum()
    values = {}
    for theme in _top(themes["due_today"]):
        for kind in ("due_today", "overdue"):
            values[("revision_queue_theme_due", (("kind", kind), ("theme_key", theme)))] = float(themes.loc[theme, kind])

    latest = builds["queue_date"].max()
    dates = {latest - dt.timedelta(days=back) for back in range(7)} if len(builds) else set()
    debt = _table(engine, tables.tag_quality_debt_log)
    debt = debt.loc[debt["queue_date"].isin(dates)]
    reasons = debt["reason"].map(REASON_LABELS).fillna("other").value_counts()
    for label in ("theme_inferred_from_graph", "unmapped", "other"):
        values[("tag_quality_debt_last_7_days", (("reason", label),))] = float(reasons.get(label, 0))
    for theme, n in _top(debt["fallback_key"].value_counts()).items():
        values[("tag_quality_debt_by_theme_last_7_days", (("theme_key", theme),))] = n
    due = stats.loc[stats["queue_date"].isin(dates) & (stats["theme_key"] == "*"), "due_today"].sum()
    values[("revision_queue_due_last_7_days", ())] = float(due)

    evaluations = _table(engine, tables.eval_metrics_daily)
    for row in evaluations.loc[evaluations["day"] == evaluations["day"].max()].itertuples():
        for metric in ("logloss", "brier", "ece", "rmse_bins"):
            if pd.notna(getattr(row, metric)):
                values[(f"fsrs_shadow_{metric}", (("ab_group", row.ab_group),))] = getattr(row, metric)
    if len(builds):
        last = builds.sort_values("ready_at").iloc[-1]
        values[("revision_queue_last_build_ready_timestamp_seconds", ())] = last["ready_at"].timestamp()
        values[("revision_queue_last_build_late", ())] = float(last["late"])
    return values


ADMIN_SERIES = ("revision_queue_theme_due", "tag_quality_debt_last_7_days", "tag_quality_debt_by_theme_last_7_days",
                "revision_queue_due_last_7_days", "fsrs_shadow_logloss", "fsrs_shadow_brier", "fsrs_shadow_ece",
                "fsrs_shadow_rmse_bins", "revision_queue_last_build_ready_timestamp_seconds",
                "revision_queue_last_build_late")


def admin_series(values: dict[tuple, float]) -> dict[tuple, float]:
    """Of scraped (sample name, sorted labels) -> value: the series expected_series covers."""
    return {key: value for key, value in values.items() if key[0] in ADMIN_SERIES}
