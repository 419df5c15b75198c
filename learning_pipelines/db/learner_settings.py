"""Learners' calendars and learning preferences, as the recipes that schedule their cards and queues read them."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.db.learner_calendars import calendars as calendar_rows


def calendars_and_preferences(conn: sa.Connection, user_ids) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Of the learners `user_ids`: (their calendars: user_id, timezone, day_start_hour, by user_id, a time zone that
    is not a key of tzdata read as UTC (db/learner_calendars.py); their stored user_learning_prefs rows)."""
    prefs = tables.user_learning_prefs
    calendars = bulk.read_frame_with_ids(conn, sa.select(calendar_rows), calendar_rows.c.user_id,
                                         user_ids).sort_values("user_id", ignore_index=True)
    calendars["day_start_hour"] = calendars["day_start_hour"].astype(int)
    return calendars, bulk.read_frame_with_ids(conn, sa.select(prefs), prefs.c.user_id, user_ids)
