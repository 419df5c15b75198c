"""Backup, restore and verification of the warehouse (SQLite online backup API, pg_dump/pg_restore)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import sqlalchemy as sa

from learning_pipelines.db import migrate, partition_migration, partitions, tables


def _libpq_url(engine: sa.Engine) -> str:
    """The URL as libpq (pg_dump, pg_restore) reads it: no SQLAlchemy driver suffix."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install the PostgreSQL client (Debian: postgresql-client)")
    return path


def backup(engine: sa.Engine, path: Path) -> Path:
    """A consistent copy while the warehouse stays online: pg_dump custom format, or SQLite's backup API."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if engine.dialect.name == "postgresql":
        subprocess.run([_pg_tool("pg_dump"), "--format=custom", "--file", str(path), _libpq_url(engine)],
                       check=True, capture_output=True, text=True)
    else:
        with sqlite3.connect(engine.url.database) as source, sqlite3.connect(path) as target:
            source.backup(target)
    return path


def restore(engine: sa.Engine, path: Path) -> None:
    """Replace the warehouse's contents with a backup made by `backup` (same database kind)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no backup at {path}")
    engine.dispose()
    if engine.dialect.name == "postgresql":
        subprocess.run([_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction",
                        "--dbname", _libpq_url(engine), str(path)], check=True, capture_output=True, text=True)
    else:
        with sqlite3.connect(path) as source, sqlite3.connect(engine.url.database) as target:
            source.backup(target)


def verify(engine: sa.Engine) -> list[str]:
    """What is wrong with the warehouse (empty when nothing): schema not at head, tables missing, and on
    PostgreSQL months with reviews but no partition, or rows in DEFAULT for a month that has one."""
    problems = []
    current, head = migrate.current_revision(engine), migrate.head_revision()
    if current != head:
        problems.append(f"schema at revision {current}, head is {head}: run `learning-pipelines db upgrade`")
    present = set(sa.inspect(engine).get_table_names())
    missing = sorted(set(tables.metadata.tables) - present)
    if missing:
        problems.append(f"missing table(s): {', '.join(missing)}")
    if engine.dialect.name == "postgresql" and "review_logs" in present:
        with engine.connect() as conn:
            state = partition_migration.layout(conn)
            if state != "partitioned":
                problems.append(f"review_logs: {partition_migration.progress_report(conn)['next_step']}")
                return problems
            months = set(partitions.months_with_data(conn, partitions.PARENT_TABLE))
            existing = partitions.existing_month_partitions(conn)
            for month in sorted(months - existing):
                problems.append(f"reviews of {month:%Y-%m} have no partition (they sit in {partitions.DEFAULT_PARTITION})")
            for month in sorted(months & existing):
                stray = conn.execute(sa.text(
                    f"SELECT count(*) FROM {partitions.DEFAULT_PARTITION} WHERE reviewed_at >= :lo AND reviewed_at < :hi"),
                    {"lo": month, "hi": partitions.next_month(month)}).scalar_one()
                if stray:
                    problems.append(f"{stray} review(s) of {month:%Y-%m} in {partitions.DEFAULT_PARTITION} "
                                    "although the month has a partition")
    return problems
