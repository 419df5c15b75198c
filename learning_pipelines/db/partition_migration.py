"""What the running code needs of the online move of an unpartitioned PostgreSQL review_logs into
monthly partitions: the backfill between migrations 0006 and 0007, and its status.

Platforms that predate partitioning run a plain `review_logs`. Migration 0006 creates
`review_logs_partitioned` and a trigger mirroring every write of the old table into it; 0007 swaps
the tables once every month is verified; 0008 drops the old one. What those migrations run is
frozen with them (migrations/frozen/online_partitioning_0006.py); this module shares only the
names and shape of the tables they create. In between, the `review_logs_partition_backfill` job:

- `copy_month_batch` copies rows committed before the trigger existed, one keyed batch per
  transaction, rows locked FOR SHARE while copied so a concurrent UPDATE or DELETE waits for the
  copy and its trigger then fixes the copied row. Progress per month is committed with each
  batch, so a killed run resumes where it stopped.
- `verify_month` compares count and checksum of both tables in one snapshot; `constrain_month`
  then validates the month partition's foreign keys (the shadow table is created without them).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from learning_pipelines.db import partitions

TABLE = partitions.PARENT_TABLE
SHADOW = partitions.SHADOW_TABLE
RETIRED = "review_logs_unpartitioned"
PROGRESS = "review_logs_backfill_progress"
STATE = "review_logs_partition_migration"
# The shadow table as migration 0006 creates it (review_logs of revision 0005), not
# tables.review_logs: the backfill runs on a database at 0006 whatever the head revision is.
COLUMNS = ("id", "reviewed_at", "user_id", "concept_id", "rating", "review_duration_ms", "state")
_FOREIGN_KEYS = (
    ("fk_review_logs_concept_id_concepts", "FOREIGN KEY(concept_id) REFERENCES concepts (concept_id)"),
    ("fk_review_logs_user_id_users", "FOREIGN KEY(user_id) REFERENCES users (user_id)"),
)
DEFAULT_LOCK_TIMEOUT = "5s"
_LOCK_NOT_AVAILABLE = "55P03"

# Tables that exist only while a migration is under way; Alembic's autogenerate ignores them.
SCAFFOLDING_TABLES = frozenset({SHADOW, RETIRED, PROGRESS, STATE})

_COLUMN_LIST = ", ".join(COLUMNS)
# Explicit types: the old table may declare narrower ones, the hash must not depend on that.
_ROW_CHECKSUM = (
    "hash_record_extended(ROW(id::bigint, reviewed_at::timestamptz, user_id::bigint, concept_id::bigint, "
    "rating::smallint, review_duration_ms::integer, state::smallint), 0)::numeric"
)


class MigrationRefused(RuntimeError):
    """A step cannot run in the database's current state; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class BatchResult:
    rows_read: int
    rows_inserted: int
    finished: bool


@dataclasses.dataclass(frozen=True)
class MonthComparison:
    month: dt.date
    old_rows: int
    new_rows: int
    old_checksum: str
    new_checksum: str

    @property
    def matches(self) -> bool:
        return self.old_rows == self.new_rows and self.old_checksum == self.new_checksum


def layout(conn: sa.Connection) -> str:
    """Where the database stands: sqlite, partitioned, unpartitioned, migrating or swapped."""
    if conn.dialect.name != "postgresql":
        return "sqlite"
    if _exists(conn, SHADOW):
        return "migrating"
    if _exists(conn, RETIRED):
        return "swapped"
    return {"p": "partitioned", "r": "unpartitioned"}.get(partitions.relation_kind(conn, TABLE), "absent")


# --- backfill (the review_logs_partition_backfill job) ---------------------------------------

def copy_month_batch(conn: sa.Connection, month: dt.date, batch_size: int) -> BatchResult:
    """Copies the month's next batch in the caller's transaction and records how far it got.

    Commit after each call: the copied rows and the progress marker land together, so a run
    killed at any point resumes exactly after the last committed batch.
    """
    try:
        progress = conn.execute(
            sa.text(f"SELECT last_reviewed_at, last_id, finished_at FROM {PROGRESS} WHERE month = :month FOR UPDATE NOWAIT"),
            {"month": month},
        ).one_or_none()
    except sa.exc.OperationalError as error:
        if getattr(error.orig, "pgcode", None) == _LOCK_NOT_AVAILABLE:
            raise MigrationRefused(f"{month:%Y-%m} is being copied by another run; let that one finish") from error
        raise
    if progress is None:
        # The month held no row when the migration started: the trigger has mirrored all of it.
        return BatchResult(0, 0, True)
    if progress.finished_at is not None:
        return BatchResult(0, 0, True)
    lo, hi = partitions.month_bounds(month)
    after = {"lo": lo, "hi": hi, "last_reviewed_at": progress.last_reviewed_at, "last_id": progress.last_id}
    in_month_after_last = (
        "reviewed_at >= :lo AND reviewed_at < :hi AND (reviewed_at, id) > "
        "(coalesce(:last_reviewed_at, '-infinity'::timestamptz), coalesce(:last_id, -9223372036854775808))"
    )
    # The batch's upper key is fixed before locking: a row updated while we wait for its lock comes
    # back with its new key, which must not move the resume point past rows not yet copied.
    upper = conn.execute(sa.text(
        f"SELECT reviewed_at, id FROM {TABLE} WHERE {in_month_after_last} "
        "ORDER BY reviewed_at, id OFFSET :offset LIMIT 1"
    ), {**after, "offset": batch_size - 1}).one_or_none()
    up_to_upper = " AND (reviewed_at, id) <= (:upper_reviewed_at, :upper_id)" if upper else ""
    result = conn.execute(sa.text(
        f"WITH batch AS (SELECT {_COLUMN_LIST} FROM {TABLE} WHERE {in_month_after_last}{up_to_upper} FOR SHARE),"
        f" copied AS (INSERT INTO {SHADOW} ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM batch"
        f"  ON CONFLICT (id, reviewed_at) DO NOTHING RETURNING 1)"
        f" SELECT (SELECT count(*) FROM batch) AS n_read, (SELECT count(*) FROM copied) AS n_inserted"
    ), {**after, "upper_reviewed_at": upper and upper.reviewed_at, "upper_id": upper and upper.id}).one()
    finished = upper is None
    conn.execute(sa.text(
        f"UPDATE {PROGRESS} SET last_reviewed_at = coalesce(:upper_reviewed_at, last_reviewed_at),"
        " last_id = coalesce(:upper_id, last_id), rows_copied = rows_copied + :n_read, batches = batches + 1,"
        " started_at = coalesce(started_at, now()), finished_at = CASE WHEN :finished THEN now() END"
        " WHERE month = :month"
    ), {"upper_reviewed_at": upper and upper.reviewed_at, "upper_id": upper and upper.id, "n_read": result.n_read,
        "finished": finished, "month": month})
    return BatchResult(result.n_read, result.n_inserted, finished)


def constrain_month(engine: sa.Engine, month: dt.date, lock_timeout: str = DEFAULT_LOCK_TIMEOUT) -> list[str]:
    """Adds review_logs' foreign keys to the month's partition: NOT VALID (a brief lock), then
    VALIDATE in its own transaction (scans without blocking writes). The swap attaches them to
    the parent's foreign keys without scanning again. Returns the constraints added."""
    partition = partitions.month_partition_name(month)
    added = []
    for name, definition in _FOREIGN_KEYS:
        with engine.begin() as conn:
            if not _exists(conn, partition) or _has_constraint(conn, partition, name):
                continue
            _set_lock_timeout(conn, lock_timeout)
            conn.exec_driver_sql(f"ALTER TABLE {partition} ADD CONSTRAINT {name} {definition} NOT VALID")
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {partition} VALIDATE CONSTRAINT {name}")
        added.append(name)
    return added


def month_progress(conn: sa.Connection, month: dt.date) -> dict | None:
    row = conn.execute(sa.text(f"SELECT * FROM {PROGRESS} WHERE month = :month"), {"month": month}).mappings().one_or_none()
    return dict(row) if row else None


def verify_month(conn: sa.Connection, month: dt.date) -> MonthComparison:
    """Count and checksum of the month in both tables, in one snapshot; records a match."""
    lo, hi = partitions.month_bounds(month)
    old, new = (
        f"(SELECT count(*) AS n, coalesce(sum({_ROW_CHECKSUM}), 0)::text AS checksum FROM {table}"
        f" WHERE reviewed_at >= :lo AND reviewed_at < :hi)"
        for table in (TABLE, SHADOW)
    )
    row = conn.execute(sa.text(f"SELECT o.n, o.checksum, p.n, p.checksum FROM {old} o, {new} p"),
                       {"lo": lo, "hi": hi}).one()
    comparison = MonthComparison(month, int(row[0]), int(row[2]), row[1], row[3])
    conn.execute(sa.text(
        f"UPDATE {PROGRESS} SET verified_at = CASE WHEN :ok THEN now() END,"
        " verified_rows = :rows, verified_checksum = :checksum WHERE month = :month"
    ), {"ok": comparison.matches, "rows": comparison.new_rows, "checksum": comparison.new_checksum, "month": month})
    return comparison


def progress_report(conn: sa.Connection) -> dict:
    """What `learning-pipelines db partition-status` prints."""
    state = layout(conn)
    explanation = {
        "sqlite": "SQLite has no table partitions: review_logs needs no migration.",
        "partitioned": "review_logs is partitioned by month: nothing to migrate.",
        "absent": "review_logs does not exist yet: run `learning-pipelines db upgrade`.",
        "unpartitioned": "review_logs is unpartitioned: run `alembic upgrade 0006` to start the online migration.",
        "migrating": "Mirroring into review_logs_partitioned: run the review_logs_partition_backfill job for "
                     "every month below, then `alembic upgrade 0007` once all are verified.",
        "swapped": "Swapped: review_logs is partitioned and mirrors into review_logs_unpartitioned; "
                   "`alembic upgrade 0008` drops the old table (`alembic downgrade 0006` swaps back).",
    }[state]
    report = {"layout": state, "next_step": explanation}
    if state != "sqlite" and _exists(conn, PROGRESS):
        report["months"] = [
            {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in row.items()}
            for row in conn.execute(sa.text(
                f"SELECT month, rows_copied, batches, finished_at, verified_at, verified_rows FROM {PROGRESS} ORDER BY month"
            )).mappings()
        ]
        report["unverified_months"] = [m["month"] for m in report["months"] if m["verified_at"] is None]
    return report


# --- helpers --------------------------------------------------------------------------------

def _exists(conn: sa.Connection, table: str) -> bool:
    return partitions.relation_kind(conn, table) is not None


def _set_lock_timeout(conn: sa.Connection, lock_timeout: str) -> None:
    """How long this transaction's DDL waits for a lock before giving up (then: re-run)."""
    conn.execute(sa.text(f"SET LOCAL lock_timeout = '{lock_timeout}'"))


def _has_constraint(conn: sa.Connection, table: str, name: str) -> bool:
    return conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(:t) "
                                "AND conname = :name)"), {"t": table, "name": name}).scalar()
