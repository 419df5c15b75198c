"""One learner's revision queue for a day, read as the app reads it: the learner's summary row and their theme
rows, best ranked first (both by primary key: queue_date, user_id)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

import sqlalchemy as sa

from learning_pipelines.db import tables


@dataclasses.dataclass(frozen=True)
class LearnerQueue:
    summary: Mapping | None  # revision_queue_user_summary's row; None when the learner has no queue that day
    themes: list[Mapping]  # revision_queue_theme's rows, by rank


def learner_queue(conn: sa.Connection, user_id: int, day: dt.date) -> LearnerQueue:
    summary, theme = tables.revision_queue_user_summary, tables.revision_queue_theme
    row = conn.execute(sa.select(summary).where(summary.c.queue_date == day, summary.c.user_id == user_id)
                       ).mappings().first()
    themes = conn.execute(sa.select(theme).where(theme.c.queue_date == day, theme.c.user_id == user_id)
                          .order_by(theme.c.rank)).mappings().all()
    return LearnerQueue(row, list(themes))


def learner_with_most_themes(conn: sa.Connection, day: dt.date) -> int | None:
    """The learner whose queue for `day` has the most theme rows (the largest read); None when the day has none."""
    theme = tables.revision_queue_theme
    return conn.execute(sa.select(theme.c.user_id).where(theme.c.queue_date == day).group_by(theme.c.user_id)
                        .order_by(sa.func.count().desc(), theme.c.user_id).limit(1)).scalar()
