"""Alembic environment: migrates the warehouse named by the caller or by the environment, resolved by
`resolve_database_url`, the function the CLI and the code location's `warehouse` resource use too."""

import sys
from logging.config import fileConfig
from pathlib import Path

import sqlalchemy as sa
from alembic import context

from learning_pipelines.db.engine import resolve_database_url
from learning_pipelines.db.partition_migration import SCAFFOLDING_TABLES
from learning_pipelines.db.partitions import is_partition_table
from learning_pipelines.db.tables import metadata

# The code migrations run, frozen with them, imports as `frozen` (migrations/frozen/__init__.py).
_MIGRATIONS = str(Path(__file__).resolve().parent)
if _MIGRATIONS not in sys.path:
    sys.path.insert(0, _MIGRATIONS)

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


# SQLite only: hands out review_logs.ingest_seq (PostgreSQL uses a sequence); created by migration 0009.
SQLITE_INGEST_COUNTER = "review_logs_ingest_counter"


def include_name(name, type_, parent_names) -> bool:
    # review_logs' partitions (and their indexes) are created by the pipeline, not by migrations;
    # the online partitioning's tables live only while it runs (db/partition_migration.py).
    table = name if type_ == "table" else parent_names.get("table_name")
    return not (table and (is_partition_table(table) or table in SCAFFOLDING_TABLES or table == SQLITE_INGEST_COUNTER))


def run_migrations_offline() -> None:
    context.configure(
        url=resolve_database_url(config.get_main_option("sqlalchemy.url")),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    url = resolve_database_url(config.get_main_option("sqlalchemy.url"))
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        _run_on(connection)
    engine.dispose()


def _run_on(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
