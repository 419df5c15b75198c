"""Where the warehouse lives and how to connect to it.

`resolve_database_url` is the one place the warehouse URL is decided: the CLI (`--database-url`), Alembic
(`migrations/env.py` through `db/migrate.py`) and the `Warehouse` resource (`defs/resources.py`) all call it, so
with the same environment they all reach the same database.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import sqlalchemy as sa

DATABASE_URL_ENV = "LEARNING_PIPELINES_DATABASE_URL"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def dagster_home() -> Path:
    """$DAGSTER_HOME, else the repo's dagster_home/: where the embedded warehouse and local models live.
    Read at each call, so a process that sets DAGSTER_HOME late (tests, the CLI) is followed."""
    home = os.environ.get("DAGSTER_HOME")
    return Path(home) if home else PROJECT_ROOT / "dagster_home"


def default_sqlite_path() -> Path:
    """The embedded warehouse: `warehouse.db` in $DAGSTER_HOME, else in the repo's dagster_home/."""
    return dagster_home() / "warehouse.db"


def environment_database_url() -> str | None:
    """$LEARNING_PIPELINES_DATABASE_URL when it is set and not empty, else None (read at each call)."""
    return os.environ.get(DATABASE_URL_ENV) or None


def resolve_database_url(url: str | None = None) -> str:
    """An explicit URL wins, then $LEARNING_PIPELINES_DATABASE_URL, then the embedded SQLite file."""
    return url or environment_database_url() or f"sqlite:///{default_sqlite_path()}"


def _enable_sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # Dagster runs steps in several processes; wait for the writer instead of failing.
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def get_engine(url: str | None = None) -> sa.Engine:
    """One pooled engine per URL and process (no URL: the one the environment names now)."""
    return _engine(resolve_database_url(url))


@functools.lru_cache(maxsize=16)
def _engine(url: str) -> sa.Engine:
    # hide_parameters: a failed statement's error names the statement, never the rows (learner data).
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, hide_parameters=True)
        sa.event.listen(engine, "connect", _enable_sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)
