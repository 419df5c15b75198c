"""Reads shared by several assets."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables


def reviews_with_calendar(conn: sa.Connection, start: dt.datetime | None = None, end: dt.datetime | None = None,
                          user_ids: list[int] | None = None) -> pd.DataFrame:
    """Reviews in [start, end) with their learner's time zone and day start, in time order."""
    logs, users = tables.review_logs, tables.users
    query = (sa.select(logs.c.id, logs.c.user_id, logs.c.concept_id, logs.c.rating, logs.c.reviewed_at,
                       users.c.timezone, users.c.day_start_hour)
             .join(users, users.c.user_id == logs.c.user_id))
    if start is not None:
        query = query.where(logs.c.reviewed_at >= start)
    if end is not None:
        query = query.where(logs.c.reviewed_at < end)
    if user_ids is not None:
        query = query.where(logs.c.user_id.in_(user_ids))
    frame = bulk.read_frame(conn, query)
    for column in ("id", "user_id", "concept_id", "rating", "day_start_hour"):
        frame[column] = frame[column].astype("int64")
    return frame.sort_values(["reviewed_at", "id"], kind="stable").reset_index(drop=True)


def review_counts(conn: sa.Connection) -> pd.DataFrame:
    """user_id, n_reviews for every learner with reviews."""
    logs = tables.review_logs
    return bulk.read_frame(conn, sa.select(logs.c.user_id, sa.func.count().label("n_reviews")).group_by(logs.c.user_id))
