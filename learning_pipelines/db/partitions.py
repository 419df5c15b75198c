"""Monthly range partitions of review_logs on PostgreSQL (a no-op on SQLite)."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterable

import sqlalchemy as sa

PARENT_TABLE = "review_logs"
# While an unpartitioned review_logs is migrated online (db/partition_migration.py), new months
# go to this table's partitions.
SHADOW_TABLE = "review_logs_partitioned"
DEFAULT_PARTITION = "review_logs_default"
_MONTH_PARTITION = re.compile(r"^review_logs_y(\d{4})m(\d{2})$")
# Partition DDL waits this long for a lock, then rolls back and tries again: readers queue behind it no longer.
DDL_LOCK_TIMEOUT_MS = 2000
# Attempts, with pauses doubling up to _MAX_RETRY_PAUSE_S between them (about half a minute in all).
DDL_ATTEMPTS = 10
_FIRST_RETRY_PAUSE_S = 0.1
_MAX_RETRY_PAUSE_S = 2.0
# One advisory lock for all partition DDL: at most one creator queues on review_logs at a time.
_DDL_LOCK_KEY = "review_logs partition DDL"
_LOCK_NOT_AVAILABLE = "55P03"


class PartitionLockTimeout(RuntimeError):
    """Other transactions held review_logs through every attempt to create its partitions."""


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
            # The parent as the search path resolves it: a same-named table in another schema is another table.
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:parent)"
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


def create_month_partitions(engine: sa.Engine, months: Iterable[dt.date], parent: str | None = None) -> list[dt.date]:
    """Create the month partitions that are missing, in short transactions of their own; returns the months created.

    Writers call this before the transaction that writes those months. Inside a transaction that
    has already read review_logs or written users/concepts, the DDL waits for every other such
    transaction while they wait for it (two importers creating partitions deadlock).
    """
    if engine.dialect.name != "postgresql":
        return []
    months = {month_start(m) for m in months}
    with engine.connect() as conn:
        parent = parent or partitioned_parent(conn)
        if parent is None or months <= existing_month_partitions(conn, parent):
            return []

    def attempt() -> list[dt.date]:
        with engine.begin() as conn:
            return _create_under_lock(conn, months, parent)

    return _retrying(attempt, months)


def ensure_month_partitions(conn: sa.Connection, months: Iterable[dt.date], parent: str | None = None) -> list[dt.date]:
    """Create the month partitions that are missing inside the caller's transaction; returns the months created.

    The created partitions keep review_logs locked ACCESS EXCLUSIVE until the caller commits, and
    concurrent callers are safe only when this is their transaction's first access to review_logs
    and the tables it references: otherwise call create_month_partitions before the transaction.
    """
    if conn.dialect.name != "postgresql":
        return []
    parent = parent or partitioned_parent(conn)
    if parent is None:
        return []
    months = {month_start(m) for m in months}
    if months <= existing_month_partitions(conn, parent):
        return []
    caller_lock_timeout = conn.execute(sa.text("SELECT current_setting('lock_timeout')")).scalar_one()

    def attempt() -> list[dt.date]:
        with conn.begin_nested():
            return _create_under_lock(conn, months, parent)

    created = _retrying(attempt, months)
    _set_lock_timeout(conn, caller_lock_timeout)
    return created


def _retrying(attempt: Callable[[], list[dt.date]], months: set[dt.date]) -> list[dt.date]:
    """Run `attempt` until it gets its locks, at most DDL_ATTEMPTS times; then one clear error."""
    for number in range(1, DDL_ATTEMPTS + 1):
        try:
            return attempt()
        except sa.exc.OperationalError as error:
            if getattr(error.orig, "pgcode", None) != _LOCK_NOT_AVAILABLE:
                raise
            last_error = error
        if number < DDL_ATTEMPTS:
            time.sleep(min(_MAX_RETRY_PAUSE_S, _FIRST_RETRY_PAUSE_S * 2 ** (number - 1)))
    wanted = ", ".join(m.strftime("%Y-%m") for m in sorted(months))
    raise PartitionLockTimeout(
        f"could not create the {PARENT_TABLE} partition(s) for {wanted}: other transactions kept the tables it "
        f"locks busy through {DDL_ATTEMPTS} attempts (lock_timeout {DDL_LOCK_TIMEOUT_MS} ms each); try again later"
    ) from last_error


def _create_under_lock(conn: sa.Connection, months: set[dt.date], parent: str) -> list[dt.date]:
    """Take the DDL's locks in one order, waiting only while holding none a reader or writer needs."""
    _set_lock_timeout(conn, f"{DDL_LOCK_TIMEOUT_MS}ms")
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": _DDL_LOCK_KEY})
    missing = sorted(months - existing_month_partitions(conn, parent))
    if not missing:
        return []
    quote = conn.dialect.identifier_preparer.quote
    conn.execute(sa.text(f"LOCK TABLE ONLY {parent} IN ACCESS EXCLUSIVE MODE"))
    # Holding the parent now: anything else busy means rolling back and trying again, never waiting.
    if relation_kind(conn, DEFAULT_PARTITION) is not None:
        conn.execute(sa.text(f"LOCK TABLE ONLY {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE NOWAIT"))
    referenced = conn.execute(sa.text(
        "SELECT DISTINCT c.relname FROM pg_constraint k JOIN pg_class c ON c.oid = k.confrelid "
        "WHERE k.conrelid = to_regclass(:parent) AND k.contype = 'f' ORDER BY c.relname"
    ), {"parent": parent}).scalars().all()
    if referenced:
        # A new partition gets the parent's foreign keys, which lock the tables they reference.
        tables = ", ".join(quote(name) for name in referenced)
        conn.execute(sa.text(f"LOCK TABLE ONLY {tables} IN SHARE ROW EXCLUSIVE MODE NOWAIT"))
    for month in missing:
        _create_month_partition(conn, month, parent)
    return missing


def _set_lock_timeout(conn: sa.Connection, lock_timeout: str) -> None:
    conn.execute(sa.text("SELECT set_config('lock_timeout', :value, true)"), {"value": lock_timeout})


def _create_month_partition(conn: sa.Connection, month: dt.date, parent: str) -> None:
    """Rows of the month already sitting in the DEFAULT partition would make a plain
    CREATE ... PARTITION OF fail, so the default is detached, the month created, its rows moved
    and the default re-attached: readers of review_logs wait for that move."""
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
