"""Online move of an unpartitioned PostgreSQL review_logs into monthly partitions.

Platforms that predate partitioning run a plain `review_logs`. The move happens while the
application keeps writing:

1. `start` (migration 0006): creates `review_logs_partitioned` (monthly partitions covering the
   data + DEFAULT) and a trigger on the old table that mirrors every INSERT, UPDATE (as
   delete-old-key + insert-new, a row may change month) and DELETE into it.
2. `copy_month_batch` (the `review_logs_partition_backfill` job): copies rows committed before
   the trigger existed, one keyed batch per transaction, rows locked FOR SHARE while copied so a
   concurrent UPDATE or DELETE waits for the copy and its trigger then fixes the copied row.
   Progress per month is committed with each batch, so a killed run resumes where it stopped.
   `verify_month` compares count and checksum of both tables in one snapshot; `constrain_month`
   then validates the month partition's foreign keys (the shadow table is created without them).
3. `swap` (migration 0007): refuses unless every month is verified; renames the tables, their
   indexes and constraints, moves the id sequence, and replaces the trigger by one mirroring
   the other way, so that the old table stays exact and the swap can be rolled back.
4. `retire` (migration 0008): drops the old table; the progress and state tables stay as the
   migration's record and what its downgrade needs.

Every step has an inverse (the migrations' downgrades). On SQLite and on databases whose
review_logs is partitioned from the start, every step is a no-op.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from learning_pipelines.db import partitions, tables

TABLE = partitions.PARENT_TABLE
SHADOW = partitions.SHADOW_TABLE
RETIRED = "review_logs_unpartitioned"
PROGRESS = "review_logs_backfill_progress"
STATE = "review_logs_partition_migration"
FORWARD_MIRROR = "review_logs_mirror_to_partitioned"
REVERSE_MIRROR = "review_logs_mirror_to_unpartitioned"
COLUMNS = tuple(column.name for column in tables.review_logs.columns)
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


# --- migration 0006 -------------------------------------------------------------------------

def start(conn: sa.Connection, lock_timeout: str = DEFAULT_LOCK_TIMEOUT) -> bool:
    """Creates the partitioned shadow table, the progress table and the mirror trigger.

    Returns False (and changes nothing) when there is nothing to migrate.
    """
    if layout(conn) != "unpartitioned":
        return False
    _require_same_columns(conn)
    _set_lock_timeout(conn, lock_timeout)
    # What CREATE TRIGGER needs, taken first: writers finish, readers go on. Months are listed
    # under the lock, so no row can land in an unlisted month before the trigger exists.
    conn.exec_driver_sql(f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE")
    months = partitions.months_with_data(conn, TABLE)
    for statement in _shadow_table_ddl():
        conn.exec_driver_sql(statement)
    conn.exec_driver_sql(f"CREATE TABLE {partitions.DEFAULT_PARTITION} PARTITION OF {SHADOW} DEFAULT")
    if months:
        last = max(months[-1], partitions.month_start(dt.date.today()))
        span, month = [], months[0]
        while month <= partitions.next_month(last):
            span.append(month)
            month = partitions.next_month(month)
        partitions.ensure_month_partitions(conn, span, parent=SHADOW)
    conn.exec_driver_sql(
        f"CREATE TABLE {PROGRESS} (month date PRIMARY KEY, last_reviewed_at timestamptz, last_id bigint, "
        "rows_copied bigint NOT NULL DEFAULT 0, batches integer NOT NULL DEFAULT 0, started_at timestamptz, "
        "finished_at timestamptz, verified_at timestamptz, verified_rows bigint, verified_checksum text)"
    )
    if months:
        conn.execute(sa.text(f"INSERT INTO {PROGRESS} (month) VALUES (:month)"), [{"month": m} for m in months])
    conn.exec_driver_sql(
        f"CREATE TABLE {STATE} (started_at timestamptz NOT NULL DEFAULT now(), swapped_at timestamptz, "
        "retired_at timestamptz, id_sequence text, legacy_constraints jsonb NOT NULL, legacy_indexes jsonb NOT NULL)"
    )
    conn.execute(
        sa.text(f"INSERT INTO {STATE} (id_sequence, legacy_constraints, legacy_indexes) VALUES (:seq, :cons, :idx)"),
        {"seq": _id_sequence(conn, TABLE), "cons": json.dumps(_constraint_definitions(conn, TABLE)),
         "idx": json.dumps(_index_definitions(conn, TABLE))},
    )
    _install_mirror(conn, FORWARD_MIRROR, source=TABLE, target=SHADOW, key=("id", "reviewed_at"))
    return True


def abandon(conn: sa.Connection, lock_timeout: str = DEFAULT_LOCK_TIMEOUT) -> bool:
    """Inverse of `start`: drops the trigger, the shadow table and the bookkeeping."""
    if layout(conn) != "migrating":
        return False
    _lock_in_writer_order(conn, lock_timeout, TABLE, SHADOW)
    _drop_mirror(conn, FORWARD_MIRROR, TABLE)
    conn.exec_driver_sql(f"DROP TABLE {SHADOW}, {PROGRESS}, {STATE}")
    return True


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
    for name, definition in _foreign_keys():
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


# --- migration 0007 -------------------------------------------------------------------------

def swap(conn: sa.Connection, lock_timeout: str = DEFAULT_LOCK_TIMEOUT) -> bool:
    """Makes the partitioned table `review_logs` in one transaction; refuses before verification."""
    if layout(conn) != "migrating":
        return False
    _lock_in_writer_order(conn, lock_timeout, TABLE, SHADOW)
    unverified = conn.execute(sa.text(f"SELECT month FROM {PROGRESS} WHERE verified_at IS NULL ORDER BY month")).scalars().all()
    if unverified:
        raise MigrationRefused(
            f"review_logs swap refused: {len(unverified)} month(s) not verified yet "
            f"({', '.join(m.isoformat()[:7] for m in unverified)}). Run the review_logs_partition_backfill job "
            "for them until its month_matches_unpartitioned_table check passes."
        )
    sequence = conn.execute(sa.text(f"SELECT id_sequence FROM {STATE}")).scalar()
    _add_parent_foreign_keys(conn)
    _drop_mirror(conn, FORWARD_MIRROR, TABLE)
    _rename_family(conn, TABLE, "review_logs", RETIRED)
    _rename_family(conn, SHADOW, SHADOW, "review_logs")
    if sequence:
        _move_sequence(conn, sequence, from_table=RETIRED, to_table=TABLE)
    _install_mirror(conn, REVERSE_MIRROR, source=TABLE, target=RETIRED, key=_primary_key(conn, RETIRED))
    conn.execute(sa.text(f"UPDATE {STATE} SET swapped_at = now()"))
    return True


def unswap(conn: sa.Connection, lock_timeout: str = DEFAULT_LOCK_TIMEOUT) -> bool:
    """Inverse of `swap`: the old table is exact (mirrored since the swap) and becomes review_logs again."""
    if layout(conn) != "swapped":
        return False
    _lock_in_writer_order(conn, lock_timeout, TABLE, RETIRED)
    sequence = conn.execute(sa.text(f"SELECT id_sequence FROM {STATE}")).scalar()
    _drop_mirror(conn, REVERSE_MIRROR, TABLE)
    _rename_family(conn, TABLE, "review_logs", SHADOW)
    _rename_family(conn, RETIRED, RETIRED, "review_logs")
    if sequence:
        _move_sequence(conn, sequence, from_table=SHADOW, to_table=TABLE)
    _install_mirror(conn, FORWARD_MIRROR, source=TABLE, target=SHADOW, key=("id", "reviewed_at"))
    conn.execute(sa.text(f"UPDATE {STATE} SET swapped_at = NULL"))
    return True


# --- migration 0008 -------------------------------------------------------------------------

def retire(conn: sa.Connection, lock_timeout: str = DEFAULT_LOCK_TIMEOUT) -> bool:
    """Drops the old table; what it looked like stays recorded so the downgrade can rebuild it."""
    if layout(conn) != "swapped":
        return False
    _lock_in_writer_order(conn, lock_timeout, TABLE, RETIRED)
    _drop_mirror(conn, REVERSE_MIRROR, TABLE)
    conn.exec_driver_sql(f"DROP TABLE {RETIRED}")
    conn.execute(sa.text(f"UPDATE {STATE} SET retired_at = now()"))
    return True


def unretire(conn: sa.Connection, lock_timeout: str = DEFAULT_LOCK_TIMEOUT) -> bool:
    """Inverse of `retire`: rebuilds the old table from review_logs. Writes wait during the copy."""
    if conn.dialect.name != "postgresql" or not _exists(conn, STATE):
        return False
    if conn.execute(sa.text(f"SELECT retired_at FROM {STATE}")).scalar() is None:
        return False
    _set_lock_timeout(conn, lock_timeout)
    # Readers go on; writers wait until the old table is rebuilt and mirrored again.
    conn.exec_driver_sql(f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE")
    conn.exec_driver_sql(f"CREATE TABLE {RETIRED} (LIKE {TABLE})")
    conn.exec_driver_sql(f"INSERT INTO {RETIRED} ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {TABLE}")
    constraints, indexes = conn.execute(sa.text(f"SELECT legacy_constraints, legacy_indexes FROM {STATE}")).one()
    for name, definition in constraints:
        conn.exec_driver_sql(f"ALTER TABLE {RETIRED} ADD CONSTRAINT {_retired_name(name)} {definition}")
    for name, definition in indexes:
        conn.exec_driver_sql(re.sub(r"INDEX \S+ ON (\S+\.)?review_logs ", f"INDEX {_retired_name(name)} ON {RETIRED} ",
                                    definition, count=1))
    _install_mirror(conn, REVERSE_MIRROR, source=TABLE, target=RETIRED, key=_primary_key(conn, RETIRED))
    conn.execute(sa.text(f"UPDATE {STATE} SET retired_at = NULL"))
    return True


# --- helpers --------------------------------------------------------------------------------

def _lock_in_writer_order(conn: sa.Connection, lock_timeout: str, written: str, mirrored: str) -> None:
    """Locks both tables in the order a writer takes them (its table, then the trigger's target),
    so the DDL that follows cannot deadlock with a write in flight."""
    _set_lock_timeout(conn, lock_timeout)
    conn.exec_driver_sql(f"LOCK TABLE {written} IN ACCESS EXCLUSIVE MODE")
    conn.exec_driver_sql(f"LOCK TABLE {mirrored} IN ACCESS EXCLUSIVE MODE")


def _exists(conn: sa.Connection, table: str) -> bool:
    return partitions.relation_kind(conn, table) is not None


def _set_lock_timeout(conn: sa.Connection, lock_timeout: str) -> None:
    """How long this transaction's DDL waits for a lock before giving up (then: re-run)."""
    conn.execute(sa.text(f"SET LOCAL lock_timeout = '{lock_timeout}'"))


def _require_same_columns(conn: sa.Connection) -> None:
    found = set(conn.execute(sa.text(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped"
    ), {"t": TABLE}).scalars())
    if found != set(COLUMNS):
        raise MigrationRefused(
            f"review_logs has columns {sorted(found)}, the partitioned table has {sorted(COLUMNS)}: "
            f"missing {sorted(set(COLUMNS) - found)}, extra {sorted(found - set(COLUMNS))}. "
            "Align the columns first; copying would lose data."
        )
    identity = conn.execute(sa.text(
        "SELECT attidentity FROM pg_attribute WHERE attrelid = to_regclass(:t) AND attname = 'id'"), {"t": TABLE}).scalar()
    if identity:
        raise MigrationRefused("review_logs.id is an identity column; convert it to a sequence default first.")


def _shadow_table_ddl() -> list[str]:
    dialect = postgresql.dialect()
    # Foreign keys come later, validated per month (see `constrain_month`): the old table already
    # enforces them, and checking them row by row would halve the backfill's speed.
    statements = [str(sa.schema.CreateTable(tables.review_logs, include_foreign_key_constraints=[]).compile(dialect=dialect))]
    statements += [str(sa.schema.CreateIndex(index).compile(dialect=dialect)) for index in tables.review_logs.indexes]
    # Our names with the shadow table's name in them; the swap renames them back.
    statements = [re.sub(r"\b((?:pk|fk|ck|ix|uq)_)?review_logs(?=_|\b)", lambda m: f"{m.group(1) or ''}{SHADOW}", s)
                  for s in statements]
    return statements + [
        f"COMMENT ON COLUMN {SHADOW}.{column.name} IS '{column.comment.replace(chr(39), chr(39) * 2)}'"
        for column in tables.review_logs.columns if column.comment
    ]


def _foreign_keys() -> list[tuple[str, str]]:
    """(name, definition) of review_logs' foreign keys, as the migrations create them."""
    dialect = postgresql.dialect()
    compiled = (str(sa.schema.AddConstraint(fk).compile(dialect=dialect))
                for fk in sorted(tables.review_logs.foreign_key_constraints, key=lambda fk: fk.column_keys))
    return [tuple(statement.split(" ADD CONSTRAINT ", 1)[1].split(" ", 1)) for statement in compiled]


def _has_constraint(conn: sa.Connection, table: str, name: str) -> bool:
    return conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(:t) "
                                "AND conname = :name)"), {"t": table, "name": name}).scalar()


def _add_parent_foreign_keys(conn: sa.Connection) -> None:
    """Under the swap's lock: partitions that the backfill did not constrain (DEFAULT, months
    without old rows) get theirs validated now, then the parent's attach to all of them."""
    children = conn.execute(sa.text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:t)"
    ), {"t": SHADOW}).scalars().all()
    for name, definition in _foreign_keys():
        for child in children:
            if not _has_constraint(conn, child, name):
                conn.exec_driver_sql(f"ALTER TABLE {child} ADD CONSTRAINT {name} {definition}")
        conn.exec_driver_sql(f"ALTER TABLE {SHADOW} ADD CONSTRAINT {name.replace('review_logs', SHADOW, 1)} {definition}")


def _id_sequence(conn: sa.Connection, table: str) -> str | None:
    return conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar()


def _move_sequence(conn: sa.Connection, sequence: str, from_table: str, to_table: str) -> None:
    conn.exec_driver_sql(f"ALTER TABLE {to_table} ALTER COLUMN id SET DEFAULT nextval('{sequence}'::regclass)")
    conn.exec_driver_sql(f"ALTER SEQUENCE {sequence} OWNED BY {to_table}.id")
    conn.exec_driver_sql(f"ALTER TABLE {from_table} ALTER COLUMN id DROP DEFAULT")


def _constraint_definitions(conn: sa.Connection, table: str) -> list[tuple[str, str]]:
    return [tuple(row) for row in conn.execute(sa.text(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass(:t) "
        "ORDER BY contype = 'f', conname"), {"t": table})]


def _index_definitions(conn: sa.Connection, table: str) -> list[tuple[str, str]]:
    """Indexes that no constraint owns (those come back with their constraint)."""
    return [tuple(row) for row in conn.execute(sa.text(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = to_regclass(:t) AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) "
        "ORDER BY c.relname"), {"t": table})]


def _primary_key(conn: sa.Connection, table: str) -> tuple[str, ...]:
    return tuple(conn.execute(sa.text(
        "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = to_regclass(:t) AND i.indisprimary ORDER BY k.n"), {"t": table}).scalars())


def _retired_name(name: str) -> str:
    return name.replace("review_logs", RETIRED, 1)


def _rename_family(conn: sa.Connection, table: str, old: str, new: str) -> None:
    """Renames the table and its own constraints and indexes whose names contain `old`."""
    for name in conn.execute(sa.text(
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(:t) AND conname LIKE '%' || :old || '%'"
    ), {"t": table, "old": old}).scalars():
        conn.exec_driver_sql(f'ALTER TABLE {table} RENAME CONSTRAINT "{name}" TO "{name.replace(old, new, 1)}"')
    for name in conn.execute(sa.text(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass(:t) "
        "AND c.relname LIKE '%' || :old || '%' AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)"
    ), {"t": table, "old": old}).scalars():
        conn.exec_driver_sql(f'ALTER INDEX "{name}" RENAME TO "{name.replace(old, new, 1)}"')
    conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {table.replace(old, new, 1)}")


def _install_mirror(conn: sa.Connection, name: str, source: str, target: str, key: tuple[str, ...]) -> None:
    """A row trigger on `source` keeping `target` equal to it, keyed by `target`'s primary key."""
    values = ", ".join(f"NEW.{c}" for c in COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c not in key)
    conn.exec_driver_sql(f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                DELETE FROM {target} WHERE id = OLD.id AND reviewed_at = OLD.reviewed_at;
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                INSERT INTO {target} ({_COLUMN_LIST}) VALUES ({values})
                ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates};
            END IF;
            RETURN NULL;
        END $$""")
    conn.exec_driver_sql(
        f"CREATE TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE ON {source} FOR EACH ROW EXECUTE FUNCTION {name}()"
    )


def _drop_mirror(conn: sa.Connection, name: str, table: str) -> None:
    conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}()")
