"""What the app reads, through the views of its read contract (migration 0011, README "Reading from the app"):
one learner's revision queue for a day, their due concepts, their recommendations. Each read is one statement
over primary keys, so it sees a shard's rewrite of the day entirely or not at all."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

import sqlalchemy as sa

from learning_pipelines.db import tables

# The views' columns, in order: what the app may rely on (a test pins them against the database and the README).
APP_VIEWS = {
    "app_revision_queue": ("queue_date", "user_id", "rank", "theme_key", "theme_name", "due_today", "overdue",
                           "mastery", "due_today_total", "overdue_total", "revision_daily_target",
                           "recommended_theme_ids", "generated_at", "cutoff_at"),
    "app_due_concepts": ("user_id", "concept_id", "concept_name", "due_at", "last_review_at", "stability_days",
                         "difficulty"),
    "app_recommendations": ("user_id", "rank", "resource_id", "title", "kind", "score", "strategy", "model_id",
                            "generated_at"),
}
revision_queue_view = sa.table("app_revision_queue", *(sa.column(c) for c in APP_VIEWS["app_revision_queue"]))
_SUMMARY_COLUMNS = ("queue_date", "user_id", "due_today_total", "overdue_total", "revision_daily_target",
                    "recommended_theme_ids", "generated_at", "cutoff_at")
_THEME_COLUMNS = ("rank", "theme_key", "theme_name", "due_today", "overdue", "mastery")


@dataclasses.dataclass(frozen=True)
class LearnerQueue:
    summary: Mapping | None  # the learner's totals and recommended themes; None when they have no queue that day
    themes: list[Mapping]  # one row per theme, by rank


def learner_queue(conn: sa.Connection, user_id: int, day: dt.date) -> LearnerQueue:
    view = revision_queue_view
    rows = conn.execute(sa.select(view).where(view.c.queue_date == day, view.c.user_id == user_id)
                        .order_by(view.c.rank)).mappings().all()
    if not rows:
        return LearnerQueue(None, [])
    return LearnerQueue({name: rows[0][name] for name in _SUMMARY_COLUMNS},
                        [{name: row[name] for name in _THEME_COLUMNS} for row in rows if row["theme_key"] is not None])


def learner_with_most_themes(conn: sa.Connection, day: dt.date) -> int | None:
    """The learner whose queue for `day` has the most theme rows (the largest read); None when the day has none."""
    theme = tables.revision_queue_theme
    return conn.execute(sa.select(theme.c.user_id).where(theme.c.queue_date == day).group_by(theme.c.user_id)
                        .order_by(sa.func.count().desc(), theme.c.user_id).limit(1)).scalar()
