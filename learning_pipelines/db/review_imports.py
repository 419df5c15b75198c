"""What a review import reads and writes besides the reviews: the files already imported, the ids the warehouse
knows, the learners and concepts it registers, a refused file's reason."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, partitions, tables

imports, rejects = tables.review_log_imports, tables.review_log_rejects
# pg_advisory_xact_lock(int, int): this first key names the lock "one review file", apart from the
# single-bigint locks of db/partitions.py.
_FILE_LOCK_CLASS = 0x5256_4C47


def lock_file(conn: sa.Connection, digest: str) -> None:
    """Imports of the same bytes (sha256 `digest`) wait for each other, so a file's rejects are recorded once.
    Taken first in the import's transaction: nothing else is held while waiting for it."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:kind, :file)"),
                     {"kind": _FILE_LOCK_CLASS, "file": int(digest[:8], 16) - 2**31})


def times_imported(conn: sa.Connection, digest: str) -> int:
    """How many imports of a file with these bytes the warehouse records."""
    return conn.execute(sa.select(sa.func.count()).select_from(imports).where(imports.c.file_sha256 == digest)).scalar()


def record_import(conn: sa.Connection, **counts) -> None:
    """One review_log_imports row: source, file_sha256, the counts of rows, imported_at."""
    conn.execute(imports.insert().values(**counts))


def has_month_partitions(engine: sa.Engine) -> bool:
    """Whether review_logs is partitioned by month (PostgreSQL), so an import makes its months' partitions first."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as conn:
        return partitions.partitioned_parent(conn) is not None


def known_ids(conn: sa.Connection, column: sa.Column, values: pd.Series) -> set[int]:
    """Which of `values` exist in `column` (users.user_id, concepts.concept_id)."""
    ids = values.dropna().to_numpy("int64")
    return {int(found) for where in bulk.id_conditions(conn, column, ids)
            for found in conn.execute(sa.select(column).where(where)).scalars()}


def register(conn: sa.Connection, user_ids: set[int], concept_ids: set[int], external_ref: str,
             timezone: str) -> None:
    """Learners (in `timezone`: the database refuses one that is not a key of time_zones) and concepts that reviews
    of an import name and the warehouse did not know."""
    bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": sorted(user_ids), "external_ref": external_ref,
                                                       "timezone": timezone}))
    concepts = sorted(concept_ids)
    bulk.bulk_insert(conn, tables.concepts, pd.DataFrame({
        "concept_id": np.asarray(concepts, dtype=np.int64), "name": [f"card {c}" for c in concepts],
        "external_ref": external_ref}))


def record_file_refusal(conn: sa.Connection, source: str, raw_row: str, reason: str, now: dt.datetime) -> None:
    """A refused file's reason in review_log_rejects, once per file content and reason."""
    recorded = conn.execute(sa.select(sa.func.count()).select_from(rejects).where(
        rejects.c.line_number.is_(None), rejects.c.raw_row == raw_row, rejects.c.reason == reason)).scalar()
    if not recorded:
        conn.execute(rejects.insert().values(source=source, raw_row=raw_row, reason=reason, rejected_at=now))
