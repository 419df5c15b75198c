"""Column types shared by every table."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa


class UtcDateTime(sa.types.TypeDecorator):
    """A UTC instant: timestamptz on PostgreSQL, naive-UTC text on SQLite.

    Values come back timezone-aware (UTC) on both, so callers never see naive times.
    A naive value on the way in is taken to be UTC already.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)
