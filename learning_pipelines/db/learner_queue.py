"""What the app reads, through the views of its read contract (migrations 0011, 0013 and 0016, README "Reading from
the app"): one learner's revision queue for a day or for their current day, the concepts of their daily target for
their current day in order, their due concepts, their recommendations. Each read is one statement over keys, so it
sees a window's rewrite of a learner's day entirely or not at all."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

import sqlalchemy as sa

from learning_pipelines.db import tables
from learning_pipelines.db.types import UtcDateTime

# The views' columns, in order: what the app may rely on (a test pins them against the database and the README).
APP_VIEWS = {
    "app_revision_queue": ("queue_date", "user_id", "rank", "theme_key", "theme_name", "due_today", "overdue",
                           "mastery", "due_today_total", "overdue_total", "revision_daily_target",
                           "recommended_theme_ids", "generated_at", "cutoff_at", "due_in_target"),
    "app_due_concepts": ("user_id", "concept_id", "concept_name", "due_at", "last_review_at", "stability_days",
                         "difficulty"),
    "app_recommendations": ("user_id", "rank", "resource_id", "title", "kind", "score", "strategy", "model_id",
                            "generated_at"),
    "app_todays_revision_queue": ("queue_date", "user_id", "rank", "theme_key", "theme_name", "due_today", "overdue",
                                  "mastery", "due_today_total", "overdue_total", "revision_daily_target",
                                  "recommended_theme_ids", "generated_at", "cutoff_at", "valid_from", "valid_until",
                                  "due_in_target"),
    "app_todays_target_concepts": ("queue_date", "user_id", "position", "concept_id", "concept_name", "theme_key",
                                   "overdue", "recall_lost", "valid_from", "valid_until"),
}
revision_queue_view = sa.table("app_revision_queue", *(sa.column(c) for c in APP_VIEWS["app_revision_queue"]))
todays_queue_view = sa.table("app_todays_revision_queue",
                             *(sa.column(c) for c in APP_VIEWS["app_todays_revision_queue"]))
_SUMMARY_COLUMNS = ("queue_date", "user_id", "due_today_total", "overdue_total", "revision_daily_target",
                    "recommended_theme_ids", "generated_at", "cutoff_at")
# Typed, so that SQLite's text comes back as dates, instants and booleans too.
_TARGET_CONCEPT_TYPES = {"queue_date": sa.Date, "overdue": sa.Boolean, "valid_from": UtcDateTime,
                         "valid_until": UtcDateTime}
target_concepts_view = sa.table("app_todays_target_concepts", *(
    sa.column(c, _TARGET_CONCEPT_TYPES.get(c)) for c in APP_VIEWS["app_todays_target_concepts"]))
_THEME_COLUMNS = ("rank", "theme_key", "theme_name", "due_today", "overdue", "mastery", "due_in_target")


@dataclasses.dataclass(frozen=True)
class LearnerQueue:
    summary: Mapping | None  # the learner's totals and recommended themes; None when they have no queue that day
    themes: list[Mapping]  # one row per theme, by rank


def learner_queue(conn: sa.Connection, user_id: int, day: dt.date) -> LearnerQueue:
    view = revision_queue_view
    return _queue(conn.execute(sa.select(view).where(view.c.queue_date == day, view.c.user_id == user_id)
                               .order_by(view.c.rank)).mappings().all())


def learner_queue_today(conn: sa.Connection, user_id: int) -> LearnerQueue:
    """The learner's queue for their current day, by user_id alone (the view knows their day's UTC bounds)."""
    view = todays_queue_view
    return _queue(conn.execute(sa.select(view).where(view.c.user_id == user_id).order_by(view.c.rank)).mappings().all())


def todays_target_concepts(conn: sa.Connection, user_id: int) -> list[Mapping]:
    """The concepts of the learner's daily target for their current day, first first, by user_id alone; none when
    they set no target (every due concept is theirs: app_due_concepts) or their day is not built yet."""
    view = target_concepts_view
    return conn.execute(sa.select(view).where(view.c.user_id == user_id).order_by(view.c.position)).mappings().all()


def _queue(rows: list[Mapping]) -> LearnerQueue:
    if not rows:
        return LearnerQueue(None, [])
    return LearnerQueue({name: rows[0][name] for name in _SUMMARY_COLUMNS},
                        [{name: row[name] for name in _THEME_COLUMNS} for row in rows if row["theme_key"] is not None])


def learner_with_most_themes(conn: sa.Connection, day: dt.date) -> int | None:
    """The learner whose queue for `day` has the most theme rows (the largest read); None when the day has none."""
    theme = tables.revision_queue_theme
    return conn.execute(sa.select(theme.c.user_id).where(theme.c.queue_date == day).group_by(theme.c.user_id)
                        .order_by(sa.func.count().desc(), theme.c.user_id).limit(1)).scalar()
