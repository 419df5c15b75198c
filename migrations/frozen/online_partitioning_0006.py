"""Online move of an unpartitioned PostgreSQL review_logs into monthly partitions, as migrations
0006-0008 run it.

Frozen from learning_pipelines/db/partition_migration.py and db/partitions.py as they were when
0008 shipped, with review_logs as of revision 0005 (its columns, CHECKs, indexes, foreign keys and
comments) written out instead of compiled from db/tables.py.

1. `start` (0006): creates `review_logs_partitioned` (monthly partitions covering the data +
   DEFAULT) and a trigger on the old table that mirrors every INSERT, UPDATE (as delete-old-key +
   insert-new, a row may change month) and DELETE into it. The review_logs_partition_backfill job
   (learning_pipelines/db/partition_migration.py) then copies and verifies every month.
2. `swap` (0007): refuses unless every month is verified; renames the tables, their indexes and
   constraints, moves the id sequence, and replaces the trigger by one mirroring the other way,
   so that the old table stays exact and the swap can be rolled back.
3. `retire` (0008): drops the old table; the progress and state tables stay as the migration's
   record and what its downgrade needs.

Every step has an inverse (the downgrades). On SQLite and on databases whose review_logs is
partitioned from the start, every step is a no-op.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import sqlalchemy as sa

TABLE = "review_logs"
SHADOW = "review_logs_partitioned"
DEFAULT_PARTITION = "review_logs_default"
RETIRED = "review_logs_unpartitioned"
PROGRESS = "review_logs_backfill_progress"
STATE = "review_logs_partition_migration"
FORWARD_MIRROR = "review_logs_mirror_to_partitioned"
REVERSE_MIRROR = "review_logs_mirror_to_unpartitioned"
COLUMNS = ("id", "reviewed_at", "user_id", "concept_id", "rating", "review_duration_ms", "state")
DEFAULT_LOCK_TIMEOUT = "5s"

_COLUMN_LIST = ", ".join(COLUMNS)

# review_logs of revision 0005 under the shadow table's names (the swap renames them back); foreign
# keys come later, validated per month by the backfill: the old table already enforces them, and
# checking them row by row would halve the backfill's speed.
_SHADOW_TABLE_DDL = (
    "\nCREATE TABLE review_logs_partitioned (\n"
    "\tid BIGINT NOT NULL, \n"
    "\treviewed_at TIMESTAMP WITH TIME ZONE NOT NULL, \n"
    "\tuser_id BIGINT NOT NULL, \n"
    "\tconcept_id BIGINT NOT NULL, \n"
    "\trating SMALLINT NOT NULL, \n"
    "\treview_duration_ms INTEGER NOT NULL, \n"
    "\tstate SMALLINT, \n"
    "\tCONSTRAINT pk_review_logs_partitioned PRIMARY KEY (id, reviewed_at), \n"
    "\tCONSTRAINT ck_review_logs_partitioned_rating CHECK (rating BETWEEN 1 AND 4), \n"
    "\tCONSTRAINT ck_review_logs_partitioned_duration CHECK (review_duration_ms >= 0), \n"
    "\tCONSTRAINT ck_review_logs_partitioned_state CHECK (state IS NULL OR state BETWEEN 0 AND 3)\n"
    ")\n PARTITION BY RANGE (reviewed_at)\n\n",
    "CREATE INDEX ix_review_logs_partitioned_user_id_concept_id_reviewed_at "
    "ON review_logs_partitioned (user_id, concept_id, reviewed_at)",
    "CREATE INDEX ix_review_logs_partitioned_reviewed_at ON review_logs_partitioned (reviewed_at)",
    "COMMENT ON COLUMN review_logs_partitioned.rating IS '1 Again, 2 Hard, 3 Good, 4 Easy'",
    "COMMENT ON COLUMN review_logs_partitioned.state IS '0 learning, 1 review, 2 relearning, 3 filtered'",
)
# (name, definition) of review_logs' foreign keys as of revision 0005.
_FOREIGN_KEYS = (
    ("fk_review_logs_concept_id_concepts", "FOREIGN KEY(concept_id) REFERENCES concepts (concept_id)"),
    ("fk_review_logs_user_id_users", "FOREIGN KEY(user_id) REFERENCES users (user_id)"),
)


class MigrationRefused(RuntimeError):
    """A step cannot run in the database's current state; the message says why and what to do."""


def layout(conn: sa.Connection) -> str:
    """Where the database stands: sqlite, partitioned, unpartitioned, migrating or swapped."""
    if conn.dialect.name != "postgresql":
        return "sqlite"
    if _exists(conn, SHADOW):
        return "migrating"
    if _exists(conn, RETIRED):
        return "swapped"
    return {"p": "partitioned", "r": "unpartitioned"}.get(_relation_kind(conn, TABLE), "absent")


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
    months = _months_with_data(conn, TABLE)
    for statement in _SHADOW_TABLE_DDL:
        conn.exec_driver_sql(statement)
    conn.exec_driver_sql(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF {SHADOW} DEFAULT")
    if months:
        last = max(months[-1], _month_start(dt.date.today()))
        span, month = [], months[0]
        while month <= _next_month(last):
            span.append(month)
            month = _next_month(month)
        _create_month_partitions(conn, span)
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

def _month_start(value: dt.date) -> dt.date:
    return dt.date(value.year, value.month, 1)


def _next_month(month: dt.date) -> dt.date:
    return dt.date(month.year + (month.month == 12), month.month % 12 + 1, 1)


def _months_with_data(conn: sa.Connection, table: str) -> list[dt.date]:
    """First day of every UTC month holding a row, by skipping along the reviewed_at index."""
    rows = conn.execute(sa.text(
        f"WITH RECURSIVE m(month) AS ("
        f" SELECT date_trunc('month', min(reviewed_at), 'UTC') FROM {table}"
        f" UNION ALL SELECT (SELECT date_trunc('month', min(reviewed_at), 'UTC') FROM {table}"
        f"  WHERE reviewed_at >= m.month + interval '1 month') FROM m WHERE m.month IS NOT NULL)"
        f" SELECT month FROM m WHERE month IS NOT NULL"
    )).scalars()
    return [month.astimezone(dt.timezone.utc).date() for month in rows]


def _create_month_partitions(conn: sa.Connection, months: list[dt.date]) -> None:
    """Month partitions of the shadow table, named as review_logs' own (the swap keeps the names)."""
    for month in months:
        name = f"{TABLE}_y{month.year:04d}m{month.month:02d}"
        # The lock every creator of a month partition takes (db/partitions.py).
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": name})
        lo = dt.datetime.combine(month, dt.time(), dt.timezone.utc)
        hi = dt.datetime.combine(_next_month(month), dt.time(), dt.timezone.utc)
        # The shadow table is new and its DEFAULT empty: no partition exists yet, no row needs moving.
        conn.execute(sa.text(f"CREATE TABLE {name} PARTITION OF {SHADOW} FOR VALUES "
                             f"FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"))


def _relation_kind(conn: sa.Connection, name: str) -> str | None:
    """pg_class.relkind of a table or index ('r' plain, 'p' partitioned, ...); None when absent."""
    return conn.execute(sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": name}).scalar()


def _exists(conn: sa.Connection, table: str) -> bool:
    return _relation_kind(conn, table) is not None


def _lock_in_writer_order(conn: sa.Connection, lock_timeout: str, written: str, mirrored: str) -> None:
    """Locks both tables in the order a writer takes them (its table, then the trigger's target),
    so the DDL that follows cannot deadlock with a write in flight."""
    _set_lock_timeout(conn, lock_timeout)
    conn.exec_driver_sql(f"LOCK TABLE {written} IN ACCESS EXCLUSIVE MODE")
    conn.exec_driver_sql(f"LOCK TABLE {mirrored} IN ACCESS EXCLUSIVE MODE")


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


def _has_constraint(conn: sa.Connection, table: str, name: str) -> bool:
    return conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(:t) "
                                "AND conname = :name)"), {"t": table, "name": name}).scalar()


def _add_parent_foreign_keys(conn: sa.Connection) -> None:
    """Under the swap's lock: partitions that the backfill did not constrain (DEFAULT, months
    without old rows) get theirs validated now, then the parent's attach to all of them."""
    children = conn.execute(sa.text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:t)"
    ), {"t": SHADOW}).scalars().all()
    for name, definition in _FOREIGN_KEYS:
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
