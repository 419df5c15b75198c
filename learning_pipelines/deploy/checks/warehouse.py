"""The checks of the warehouse: it answers and its schema is at the Alembic head of this code; review_logs has its
month partitions for this month and the next (PostgreSQL; UTC months)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa

from learning_pipelines.db import memory_state_progress, migrate, partitions
from learning_pipelines.db.engine import DATABASE_URL_ENV
from learning_pipelines.deploy.checks.session import Outcome, Session, probe_engine
from learning_pipelines.deploy.redaction import shown_url


def check_warehouse(session: Session) -> Outcome:
    url = session.target.warehouse_url
    shown = shown_url(url)
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if not path or not Path(path).is_file():
            session.warehouse_problem = "the warehouse file does not exist"
            return Outcome(False, f"no SQLite warehouse at {path}",
                           f"create it: `learning-pipelines db upgrade` with {DATABASE_URL_ENV} set to {shown}")
    session.warehouse = engine = probe_engine(url)
    try:
        current = migrate.current_revision(engine)
    except sa.exc.SQLAlchemyError as error:
        session.warehouse_problem = "the warehouse is unreachable"
        return Outcome(False, f"cannot reach {shown}: {session.reason(error)}",
                       f"start its PostgreSQL server, or fix {DATABASE_URL_ENV} (a password goes in PGPASSWORD or "
                       "~/.pgpass)")
    head = migrate.head_revision()
    if current != head:
        session.warehouse_problem = "the warehouse is not at the Alembic head"
        return Outcome(False, f"{shown} is at revision {current or 'none (not migrated)'}, the code's head is {head}")
    session.warehouse_problem = None
    return Outcome(True, f"{shown} at revision {current} (head); {_in_flight_line(engine)}")


def _in_flight_line(engine: sa.Engine) -> str:
    """Whose open transactions hold card_memory_states back: a role that cannot see other roles' sessions counts
    every database's on the server, so one left open in Dagster's storage delays the states."""
    with engine.connect() as conn:
        scope = memory_state_progress.in_flight_scope(conn)
    line = f"card_memory_states counts the open transactions of: {scope.label}"
    if scope.grant:
        line += (" (this role cannot see other roles' sessions, so one left open in another database, e.g. "
                 f"Dagster's storage, holds the states back): to count this database's only, {scope.grant}")
    return line


def check_month_partitions(session: Session) -> Outcome:
    if session.warehouse_problem:
        return Outcome(False, f"not checked: {session.warehouse_problem}", "fix the warehouse check first")
    if session.warehouse.dialect.name != "postgresql":
        return Outcome(True, "not applicable: ok (SQLite has no partitions)")
    this_month = partitions.month_start(dt.datetime.now(dt.timezone.utc))
    wanted = {this_month, partitions.next_month(this_month)}
    with session.warehouse.connect() as conn:
        parent = partitions.partitioned_parent(conn)
        existing = partitions.existing_month_partitions(conn, parent) if parent else set()
    months = ", ".join(f"date({m.year}, {m.month}, 1)" for m in sorted(wanted))
    remedy = ("`learning-pipelines stack start` creates them as it starts; on a running deployment, with "
              f"{DATABASE_URL_ENV} set, run: .venv/bin/python -c \"from datetime import date; "
              "from learning_pipelines.db import partitions; from learning_pipelines.db.engine import get_engine; "
              f"partitions.create_month_partitions(get_engine(), [{months}])\"")
    if parent is None:
        return Outcome(False, "review_logs is not partitioned by month", remedy)
    missing = sorted(wanted - existing)
    if missing:
        return Outcome(False, f"{parent} lacks the partition(s) "
                       + ", ".join(partitions.month_partition_name(m) for m in missing), remedy)
    return Outcome(True, ", ".join(partitions.month_partition_name(m) for m in sorted(wanted)) + " exist")
