"""Writing learner preferences: validated before they reach the table (which checks them again)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.domain.revision import validate_preferences

PREFERENCE_COLUMNS = ("user_id", "spacing_multiplier", "retention_target_override", "revision_daily_target")


def write_learning_prefs(conn: sa.Connection, prefs: pd.DataFrame) -> int:
    """Replace these learners' preferences; raises InvalidPreference (naming learner and value) and
    writes nothing when any row is out of range, missing its spacing multiplier, or holds NaN or an
    infinity. A target left unset (the platform's default applies) is None or pd.NA, never NaN."""
    prefs = prefs[[c for c in PREFERENCE_COLUMNS if c in prefs.columns]].copy()
    if "spacing_multiplier" not in prefs:
        prefs["spacing_multiplier"] = 1.0
    for column in ("retention_target_override", "revision_daily_target"):
        if column not in prefs:
            prefs[column] = None
    validate_preferences(prefs)
    table = tables.user_learning_prefs
    conn.execute(table.delete().where(table.c.user_id.in_(prefs["user_id"].astype(int).tolist())))
    return bulk.bulk_insert(conn, table, prefs.assign(updated_at=dt.datetime.now(dt.timezone.utc)))
