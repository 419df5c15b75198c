"""Reads and writes of the daily revision queues."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.domain.revision import QueueChunk

QUEUE_TABLES = (tables.revision_queue_theme, tables.revision_queue_user_summary, tables.queue_stats_daily,
                tables.tag_quality_debt_log)


def learners_with_cards(conn: sa.Connection) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(learners with memory states: user_id, timezone, day_start_hour; every stored preference row)."""
    users, states = tables.users, tables.card_memory_states
    learners = bulk.read_frame(conn, sa.select(users.c.user_id, users.c.timezone, users.c.day_start_hour)
                               .where(users.c.user_id.in_(sa.select(states.c.user_id).distinct()))
                               .order_by(users.c.user_id))
    learners["day_start_hour"] = learners["day_start_hour"].astype(int)
    return learners, bulk.read_frame(conn, sa.select(tables.user_learning_prefs))


def card_states(conn: sa.Connection, user_ids: list[int]) -> pd.DataFrame:
    states = tables.card_memory_states
    return bulk.read_frame(conn, sa.select(states.c.user_id, states.c.concept_id, states.c.stability_days,
                                           states.c.last_review_at, states.c.decay)
                           .where(states.c.user_id.in_([int(u) for u in user_ids])))


def clear_day(conn: sa.Connection, day: dt.date) -> None:
    for table in QUEUE_TABLES:
        conn.execute(table.delete().where(table.c.queue_date == day))


def write_chunk(conn: sa.Connection, day: dt.date, queues: QueueChunk, learners: pd.DataFrame,
                generated_at: dt.datetime, cutoff_at: dt.datetime) -> None:
    bulk.bulk_insert(conn, tables.revision_queue_theme, queues.themes.assign(queue_date=day))
    summaries = queues.summaries.merge(learners[["user_id", "revision_daily_target"]], on="user_id")
    bulk.bulk_insert(conn, tables.revision_queue_user_summary,
                     summaries.assign(queue_date=day, generated_at=generated_at, cutoff_at=cutoff_at))
    bulk.bulk_insert(conn, tables.tag_quality_debt_log, queues.debt.assign(queue_date=day))


def write_day_stats(conn: sa.Connection, day: dt.date, stats: pd.DataFrame) -> None:
    bulk.bulk_insert(conn, tables.queue_stats_daily, stats.assign(queue_date=day))


def stored_consistency(conn: sa.Connection, day: dt.date) -> dict[str, int]:
    """As stored for `day`: learners whose summary differs from their theme rows, due cards in mapped
    themes, cards logged as tag-quality debt, and the day's due total."""
    theme, summary, debt = tables.revision_queue_theme, tables.revision_queue_user_summary, tables.tag_quality_debt_log
    sums = (sa.select(theme.c.user_id, sa.func.sum(theme.c.due_today).label("due"),
                      sa.func.sum(theme.c.overdue).label("overdue"))
            .where(theme.c.queue_date == day).group_by(theme.c.user_id).subquery())
    mismatched = conn.execute(
        sa.select(sa.func.count()).select_from(summary.outerjoin(sums, sums.c.user_id == summary.c.user_id))
        .where(summary.c.queue_date == day,
               sa.or_(sa.func.coalesce(sums.c.due, 0) != summary.c.due_today_total,
                      sa.func.coalesce(sums.c.overdue, 0) != summary.c.overdue_total))).scalar_one()
    mapped_due = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(theme.c.due_today), 0))
        .where(theme.c.queue_date == day, ~theme.c.theme_key.like("THEME::%"), theme.c.theme_key != "UNMAPPED")
    ).scalar_one()
    n_debt = conn.execute(sa.select(sa.func.count()).select_from(debt).where(debt.c.queue_date == day)).scalar_one()
    due_total = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(summary.c.due_today_total), 0))
                             .where(summary.c.queue_date == day)).scalar_one()
    return {"learners_mismatched": int(mismatched), "due_in_mapped_themes": int(mapped_due),
            "logged_as_debt": int(n_debt), "due_today_total": int(due_total)}
