"""Reads and writes of the daily revision queues."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.domain.revision import QueueChunk

LEARNER_TABLES = (tables.revision_queue_theme, tables.revision_queue_user_summary, tables.tag_quality_debt_log)


def learners_with_cards(conn: sa.Connection, user_ids) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Of the learners `user_ids` (a learner shard): (those with memory states: user_id, timezone,
    day_start_hour; their stored preference rows)."""
    users, states = tables.users, tables.card_memory_states
    has_cards = sa.exists().where(states.c.user_id == users.c.user_id)
    learners = bulk.read_frame_with_ids(conn, sa.select(users.c.user_id, users.c.timezone, users.c.day_start_hour)
                                        .where(has_cards), users.c.user_id, user_ids)
    learners = learners.sort_values("user_id", ignore_index=True)
    learners["day_start_hour"] = learners["day_start_hour"].astype(int)
    prefs = tables.user_learning_prefs
    return learners, bulk.read_frame_with_ids(conn, sa.select(prefs), prefs.c.user_id, user_ids)


def card_states(conn: sa.Connection, user_ids: list[int]) -> pd.DataFrame:
    states = tables.card_memory_states
    return bulk.read_frame(conn, sa.select(states.c.user_id, states.c.concept_id, states.c.stability_days,
                                           states.c.last_review_at, states.c.decay)
                           .where(states.c.user_id.in_([int(u) for u in user_ids])))


def clear_shard_day(conn: sa.Connection, day: dt.date, shard: str, user_ids) -> None:
    """Delete `day`'s rows of the learners `user_ids` (the learner shard `shard`) and the shard's statistics.
    Statistics written under another number of shards stay (day_totals reads the current count's only): deleting
    them here would make every shard of the day wait on the same rows."""
    for table in LEARNER_TABLES:
        bulk.delete_with_ids(conn, table, table.c.user_id, user_ids, table.c.queue_date == day)
    stats = tables.queue_stats_daily
    conn.execute(stats.delete().where(stats.c.queue_date == day, stats.c.learner_shard == shard))


def write_chunk(conn: sa.Connection, day: dt.date, queues: QueueChunk, learners: pd.DataFrame,
                generated_at: dt.datetime, cutoff_at: dt.datetime) -> None:
    bulk.bulk_insert(conn, tables.revision_queue_theme, queues.themes.assign(queue_date=day))
    summaries = queues.summaries.merge(learners[["user_id", "revision_daily_target"]], on="user_id")
    bulk.bulk_insert(conn, tables.revision_queue_user_summary,
                     summaries.assign(queue_date=day, generated_at=generated_at, cutoff_at=cutoff_at))
    bulk.bulk_insert(conn, tables.tag_quality_debt_log, queues.debt.assign(queue_date=day))


def write_shard_stats(conn: sa.Connection, day: dt.date, shard: str, stats: pd.DataFrame) -> None:
    bulk.bulk_insert(conn, tables.queue_stats_daily, stats.assign(queue_date=day, learner_shard=shard))


def day_totals(conn: sa.Connection, day: dt.date, shards: list[str]) -> pd.DataFrame:
    """queue_stats_daily of `day` summed over the learner shards `shards` (the current count's keys): theme_key,
    n_learners, due_today, overdue."""
    stats = tables.queue_stats_daily
    return bulk.read_frame(conn, sa.select(stats.c.theme_key, sa.func.sum(stats.c.n_learners).label("n_learners"),
                                           sa.func.sum(stats.c.due_today).label("due_today"),
                                           sa.func.sum(stats.c.overdue).label("overdue"))
                           .where(stats.c.queue_date == day, stats.c.learner_shard.in_(shards))
                           .group_by(stats.c.theme_key).order_by(stats.c.theme_key))


def latest_complete_day(conn: sa.Connection, shards: list[str]) -> tuple[dt.date, dt.datetime | None] | None:
    """The latest day for which every learner shard of `shards` built its queues, and when its last learner's
    queue was written (None when it has no learner); None when no day is complete."""
    stats, summary = tables.queue_stats_daily, tables.revision_queue_user_summary
    day = conn.execute(sa.select(stats.c.queue_date).where(stats.c.learner_shard.in_(shards))
                       .group_by(stats.c.queue_date)
                       .having(sa.func.count(sa.distinct(stats.c.learner_shard)) == len(set(shards)))
                       .order_by(stats.c.queue_date.desc()).limit(1)).scalar()
    if day is None:
        return None
    return day, conn.execute(sa.select(sa.func.max(summary.c.generated_at)).where(summary.c.queue_date == day)).scalar()


def stored_consistency(conn: sa.Connection, day: dt.date, user_ids) -> dict[str, int]:
    """As stored for `day` and the learners `user_ids` (a learner shard): learners whose summary differs from
    their theme rows, due cards in mapped themes, cards logged as tag-quality debt, and their due total."""
    theme, summary, debt = tables.revision_queue_theme, tables.revision_queue_user_summary, tables.tag_quality_debt_log
    found = {"learners_mismatched": 0, "due_in_mapped_themes": 0, "logged_as_debt": 0, "due_today_total": 0}
    for learners in bulk.id_conditions(conn, summary.c.user_id, user_ids):
        in_shard = sa.select(summary.c.user_id).where(summary.c.queue_date == day, learners)
        sums = (sa.select(theme.c.user_id, sa.func.sum(theme.c.due_today).label("due"),
                          sa.func.sum(theme.c.overdue).label("overdue"))
                .where(theme.c.queue_date == day, theme.c.user_id.in_(in_shard)).group_by(theme.c.user_id).subquery())
        found["learners_mismatched"] += conn.execute(
            sa.select(sa.func.count()).select_from(summary.outerjoin(sums, sums.c.user_id == summary.c.user_id))
            .where(summary.c.queue_date == day, learners,
                   sa.or_(sa.func.coalesce(sums.c.due, 0) != summary.c.due_today_total,
                          sa.func.coalesce(sums.c.overdue, 0) != summary.c.overdue_total))).scalar_one()
        found["due_in_mapped_themes"] += conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(theme.c.due_today), 0))
            .where(theme.c.queue_date == day, theme.c.user_id.in_(in_shard), ~theme.c.theme_key.like("THEME::%"),
                   theme.c.theme_key != "UNMAPPED")).scalar_one()
        found["logged_as_debt"] += conn.execute(
            sa.select(sa.func.count()).select_from(debt)
            .where(debt.c.queue_date == day, debt.c.user_id.in_(in_shard))).scalar_one()
        found["due_today_total"] += conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(summary.c.due_today_total), 0))
            .where(summary.c.queue_date == day, learners)).scalar_one()
    return {name: int(value) for name, value in found.items()}
