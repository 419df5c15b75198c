"""Reads and writes of one month of review_logs: its reviews, the quarantine of bad rows, the card
histories it continues, its intervals, and the counts its checks read back.

Every function takes the month as its UTC window [start, end), so on PostgreSQL each statement
touches the month's partition only (the earlier-history read excepted).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, memory_state_writes, tables
from learning_pipelines.db.learner_calendars import calendars
from learning_pipelines.domain.chunking import chunks

_DELETE_CHUNK = 5000  # ids per DELETE ... IN (...): well under every driver's parameter limit
logs, rejects = tables.review_logs, tables.review_log_rejects


def _in_window(column: sa.Column, start: dt.datetime, end: dt.datetime) -> sa.ColumnElement[bool]:
    return sa.and_(column >= start, column < end)


def month_reviews(conn: sa.Connection, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Every stored review of [start, end) with its learner's timezone (UTC for one that is not a key of tzdata:
    db/learner_calendars.py) and day_start_hour."""
    return bulk.read_frame(conn, sa.select(logs, calendars.c.timezone, calendars.c.day_start_hour)
                           .join(calendars, calendars.c.user_id == logs.c.user_id)
                           .where(_in_window(logs.c.reviewed_at, start, end)))


def quarantine(conn: sa.Connection, bad: pd.DataFrame, reasons: pd.Series, source: str, rejected_at: dt.datetime,
               start: dt.datetime, end: dt.datetime) -> int:
    """Moves the `bad` reviews of [start, end) to review_log_rejects (the row as JSON, with its reason);
    card_memory_states replays their cards on its next run."""
    columns = [c.name for c in logs.columns]
    moved = bulk.bulk_insert(conn, rejects, pd.DataFrame({
        "source": source,
        "review_id": bad["id"].to_numpy(),
        "reviewed_at": bad["reviewed_at"].to_numpy(),
        "raw_row": [json.dumps(row, default=str) for row in bad[columns].to_dict("records")],
        "reason": reasons.to_numpy(),
        "rejected_at": rejected_at,
    }))
    ids = bad["id"].astype("int64").tolist()
    for part in chunks(ids, _DELETE_CHUNK):
        conn.execute(logs.delete().where(logs.c.id.in_(part), _in_window(logs.c.reviewed_at, start, end)))
    memory_state_writes.request_replays(conn, bad, rejected_at)  # their states may include what was moved out
    return moved


def earlier_card_history(conn: sa.Connection, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """For each card (user_id, concept_id) reviewed in [start, end) that has reviews before `start`:
    n_prior_reviews, last_reviewed_at (UTC), and the learner's calendar (timezone, as month_reviews reads it, and
    day_start_hour)."""
    earlier = logs.alias("earlier")
    month_cards = (sa.select(logs.c.user_id, logs.c.concept_id).distinct()
                   .where(_in_window(logs.c.reviewed_at, start, end)).subquery())
    prior = bulk.read_frame(conn, (
        sa.select(earlier.c.user_id, earlier.c.concept_id, sa.func.count().label("n_prior_reviews"),
                  sa.func.max(earlier.c.reviewed_at).label("last_reviewed_at"), calendars.c.timezone,
                  calendars.c.day_start_hour)
        .join(month_cards, sa.and_(month_cards.c.user_id == earlier.c.user_id,
                                   month_cards.c.concept_id == earlier.c.concept_id))
        .join(calendars, calendars.c.user_id == earlier.c.user_id)
        .where(earlier.c.reviewed_at < start)
        .group_by(earlier.c.user_id, earlier.c.concept_id, calendars.c.timezone, calendars.c.day_start_hour)
    ))
    # max() loses the column's type on SQLite: parse it here, as read_frame does for typed columns.
    prior["last_reviewed_at"] = pd.to_datetime(prior["last_reviewed_at"], utc=True, format="ISO8601")
    return prior


def replace_intervals(conn: sa.Connection, start: dt.datetime, end: dt.datetime, intervals: pd.DataFrame) -> int:
    """The month's review_log_intervals become `intervals` (idempotent: the window is deleted first)."""
    return bulk.replace_time_window(conn, tables.review_log_intervals, "reviewed_at", start, end, intervals)


@dataclasses.dataclass(frozen=True)
class MonthCounts:
    n_reviews: int  # stored in review_logs
    n_rejects: int  # in review_log_rejects, whoever rejected them (importers or the asset)
    n_future: int  # stored reviews timestamped after `now`

    @property
    def reject_rate(self) -> float:
        """Rejected share of every row that arrived for the month (0 when none did)."""
        total = self.n_reviews + self.n_rejects
        return self.n_rejects / total if total else 0.0


def month_counts(conn: sa.Connection, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> MonthCounts:
    """As stored now for [start, end): reviews, rejects, and reviews later than `now`."""
    n_reviews, n_future = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((logs.c.reviewed_at > now, 1), else_=0)), 0))
        .where(_in_window(logs.c.reviewed_at, start, end))).one()
    n_rejects = conn.execute(sa.select(sa.func.count()).select_from(rejects)
                             .where(_in_window(rejects.c.reviewed_at, start, end))).scalar_one()
    return MonthCounts(n_reviews=int(n_reviews), n_rejects=int(n_rejects), n_future=int(n_future))
