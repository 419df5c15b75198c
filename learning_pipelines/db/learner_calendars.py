"""Learners' calendars as every recipe reads them, and the log of learners whose calendar fell back to UTC.

A learner's time zone must be a key of `time_zones` (the pinned tzdata's keys; migration 0014 makes the database
refuse any other). One stored before that (or written past it by hand) is read as UTC: that learner's days move,
every other learner's night goes on. `calendars` is the one place this is decided; `record_fallbacks` logs who fell
back in learner_calendar_fallbacks, for the recipes that read calendars to call on the learners they wrote.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from learning_pipelines.db import bulk, tables
from learning_pipelines.domain.chunking import chunks

FALLBACK_TIME_ZONE = "UTC"
_FALLBACK_ROWS_PER_INSERT = 1000  # 4 parameters a row: well under SQLite's limit
users, time_zones, fallbacks = tables.users, tables.time_zones, tables.learner_calendar_fallbacks

# Joined in place of `users` wherever a calendar is read: user_id, timezone (the stored one when it is a key of
# time_zones, else UTC), day_start_hour.
calendars = (sa.select(users.c.user_id, sa.func.coalesce(time_zones.c.name, FALLBACK_TIME_ZONE).label("timezone"),
                       users.c.day_start_hour)
             .select_from(users.outerjoin(time_zones, time_zones.c.name == users.c.timezone))
             .subquery("calendars"))


def fallbacks_among(conn: sa.Connection, user_ids) -> pd.DataFrame:
    """Of the learners `user_ids`, those whose calendar `calendars` reads as UTC: user_id, timezone as stored, by
    user_id."""
    if len(user_ids) == 0:
        return pd.DataFrame({"user_id": pd.Series(dtype="int64"), "timezone": pd.Series(dtype=object)})
    # Only these learners' rows (by their key), not every learner with a bad zone: a refresh asks for the few it wrote.
    stored = bulk.read_frame_with_ids(conn, sa.select(users.c.user_id, users.c.timezone)
                                      .select_from(users.outerjoin(time_zones, time_zones.c.name == users.c.timezone))
                                      .where(time_zones.c.name.is_(None)), users.c.user_id, user_ids)
    return stored.sort_values("user_id", ignore_index=True)


def record_fallbacks(conn: sa.Connection, user_ids, noticed_at: dt.datetime | None = None) -> pd.DataFrame:
    """`fallbacks_among` these learners, each logged in learner_calendar_fallbacks (first noticed kept; last noticed
    and the time zone as stored now), in user_id order. A write of learners' rows: in a transaction that holds them
    (db/learner_locks), after its other writes (learner_calendar_fallbacks comes last but `users` in that order)."""
    found = fallbacks_among(conn, user_ids)
    noticed_at = noticed_at or dt.datetime.now(dt.timezone.utc)
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    rows = [{"user_id": int(row.user_id), "timezone": row.timezone, "first_noticed_at": noticed_at,
             "last_noticed_at": noticed_at} for row in found.itertuples()]
    for part in chunks(rows, _FALLBACK_ROWS_PER_INSERT):
        statement = insert(fallbacks).values(part)
        conn.execute(statement.on_conflict_do_update(index_elements=[fallbacks.c.user_id], set_={
            "timezone": statement.excluded.timezone, "last_noticed_at": statement.excluded.last_noticed_at}))
    return found
