"""Monthly range partitions of review_logs on PostgreSQL (a no-op on SQLite)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

import sqlalchemy as sa

PARENT_TABLE = "review_logs"
# While an unpartitioned review_logs is migrated online (db/partition_migration.py), new months
# go to this table's partitions.
SHADOW_TABLE = "review_logs_partitioned"
DEFAULT_PARTITION = "review_logs_default"
_MONTH_PARTITION = re.compile(r"^review_logs_y(\d{4})m(\d{2})$")


def month_partition_name(month_start: dt.date) -> str:
    return f"{PARENT_TABLE}_y{month_start.year:04d}m{month_start.month:02d}"


def is_partition_table(name: str) -> bool:
    """Child tables of review_logs: not in the SQLAlchemy metadata, managed here instead."""
    return name == DEFAULT_PARTITION or bool(_MONTH_PARTITION.match(name))


def month_start(value: dt.date | dt.datetime) -> dt.date:
    return dt.date(value.year, value.month, 1)


def next_month(month: dt.date) -> dt.date:
    return dt.date(month.year + (month.month == 12), month.month % 12 + 1, 1)


def existing_month_partitions(conn: sa.Connection, parent: str = PARENT_TABLE) -> set[dt.date]:
    names = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = :parent"
        ),
        {"parent": parent},
    ).scalars()
    months = set()
    for name in names:
        match = _MONTH_PARTITION.match(name)
        if match:
            months.add(dt.date(int(match.group(1)), int(match.group(2)), 1))
    return months


def month_bounds(month: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a month in UTC: a month partition's range."""
    return (dt.datetime.combine(month, dt.time(), dt.timezone.utc),
            dt.datetime.combine(next_month(month), dt.time(), dt.timezone.utc))


def relation_kind(conn: sa.Connection, name: str) -> str | None:
    """pg_class.relkind of a table or index ('r' plain, 'p' partitioned, ...); None when absent."""
    return conn.execute(sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": name}).scalar()


def partitioned_parent(conn: sa.Connection) -> str | None:
    """The table whose month partitions to keep: review_logs, or its shadow during an online migration."""
    for table in (PARENT_TABLE, SHADOW_TABLE):
        if relation_kind(conn, table) == "p":
            return table
    return None


def ensure_month_partitions(conn: sa.Connection, months: Iterable[dt.date], parent: str | None = None) -> list[dt.date]:
    """Create the month partitions that are missing; returns the months created.

    Rows of such a month already sitting in the DEFAULT partition would make a plain
    CREATE ... PARTITION OF fail, so the default is detached, the month created, its rows
    moved and the default re-attached — all inside the caller's transaction.
    """
    if conn.dialect.name != "postgresql":
        return []
    parent = parent or partitioned_parent(conn)
    if parent is None:
        return []
    wanted = sorted({month_start(m) for m in months} - existing_month_partitions(conn, parent))
    for month in wanted:
        # Serialize concurrent creators of the same month.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": month_partition_name(month)})
        if month in existing_month_partitions(conn, parent):
            continue
        _create_month_partition(conn, month, parent)
    return wanted


def _create_month_partition(conn: sa.Connection, month: dt.date, parent: str) -> None:
    name = month_partition_name(month)
    lo, hi = month_bounds(month)
    bounds = {"lo": lo, "hi": hi}
    range_sql = f"FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
    has_default = relation_kind(conn, DEFAULT_PARTITION) is not None
    stray_rows = has_default and conn.execute(
        sa.text(f"SELECT EXISTS (SELECT 1 FROM {DEFAULT_PARTITION} WHERE reviewed_at >= :lo AND reviewed_at < :hi)"),
        bounds,
    ).scalar()
    if not stray_rows:
        conn.execute(sa.text(f"CREATE TABLE {name} PARTITION OF {parent} FOR VALUES {range_sql}"))
        return
    conn.execute(sa.text(f"ALTER TABLE {parent} DETACH PARTITION {DEFAULT_PARTITION}"))
    conn.execute(sa.text(f"CREATE TABLE {name} PARTITION OF {parent} FOR VALUES {range_sql}"))
    conn.execute(
        sa.text(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE reviewed_at >= :lo AND reviewed_at < :hi "
            f"RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        ),
        bounds,
    )
    conn.execute(sa.text(f"ALTER TABLE {parent} ATTACH PARTITION {DEFAULT_PARTITION} DEFAULT"))


def months_with_data(conn: sa.Connection, table: str) -> list[dt.date]:
    """First day of every UTC month holding a row, by skipping along the reviewed_at index."""
    rows = conn.execute(sa.text(
        f"WITH RECURSIVE m(month) AS ("
        f" SELECT date_trunc('month', min(reviewed_at), 'UTC') FROM {table}"
        f" UNION ALL SELECT (SELECT date_trunc('month', min(reviewed_at), 'UTC') FROM {table}"
        f"  WHERE reviewed_at >= m.month + interval '1 month') FROM m WHERE m.month IS NOT NULL)"
        f" SELECT month FROM m WHERE month IS NOT NULL"
    )).scalars()
    return [month.astimezone(dt.timezone.utc).date() for month in rows]
