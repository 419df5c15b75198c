"""A throw-away database on the test PostgreSQL server for one benchmark run."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import sqlalchemy as sa

ADMIN_URL = os.environ.get("LEARNING_PIPELINES_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def scratch_postgres() -> Iterator[str]:
    """Yields the URL of a new database, dropped afterwards whatever happens."""
    name = f"lp_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
