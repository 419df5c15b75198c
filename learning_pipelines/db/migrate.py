"""Run the Alembic migrations from code (CLI, demo, tests)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory

from learning_pipelines.db.engine import PROJECT_ROOT, resolve_database_url


def alembic_config(url: str | None = None) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", resolve_database_url(url).replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None, revision: str) -> None:
    """Down to `revision` (an id, `base`, or relative like `-1`); it drops what the undone migrations added."""
    command.downgrade(alembic_config(url), revision)


def migrations_undone(engine: sa.Engine, revision: str) -> list[Script]:
    """The migrations a downgrade to `revision` would undo, newest first (none when already there). Raises
    alembic.script.revision.RevisionError for an unknown revision or one that is not below the current."""
    current = current_revision(engine)
    if current is None:
        return []
    scripts = ScriptDirectory.from_config(alembic_config())
    return list(scripts.iterate_revisions(current, revision))


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
