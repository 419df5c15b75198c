"""The checks of the Dagster instance: its run, event log and schedule storage answer and are migrated (read only:
the instance is opened with `should_autocreate_tables: false`, so verifying never creates them); the scheduler,
sensor, run monitoring and run queue daemons wrote a heartbeat lately."""

from __future__ import annotations

import re
import time
from pathlib import Path

import sqlalchemy as sa
import yaml
from dagster import DagsterInstance
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.ref import InstanceRef

from learning_pipelines.deploy.checks.session import Outcome, Session, first_line, probe_engine
from learning_pipelines.deploy.redaction import shown_url
from learning_pipelines.errors import one_line

# Daemons a production instance runs (deploy/dagster.yaml enables all four); type names as dagster._daemon has them.
DAEMON_TYPES = ("SCHEDULER", "SENSOR", "MONITORING", "QUEUED_RUN_COORDINATOR")
# A daemon heartbeats every 30 s; four missed in a row is a daemon that is stuck or gone.
HEARTBEAT_MAX_AGE_S = 120


def check_dagster_storage(session: Session) -> Outcome:
    home = session.target.dagster_home
    if not (home / "dagster.yaml").is_file():
        session.instance_problem = "there is no Dagster instance"
        return Outcome(False, f"no dagster.yaml in {home}",
                       "set DAGSTER_HOME to the instance's directory (the stack's is <run dir>/dagster_home; "
                       "deploy/dagster.yaml is the production instance)")
    try:
        session.instance = instance = _read_only_instance(home.resolve())
    except yaml.YAMLError as error:
        session.instance_problem = "dagster.yaml cannot be read"
        return Outcome(False, f"{home / 'dagster.yaml'} is not valid YAML: {one_line(str(error))}",
                       "fix the file (deploy/dagster.yaml is the production instance)")
    except DagsterInvalidConfigError as error:
        session.instance_problem = "dagster.yaml cannot be loaded"
        return _invalid_instance_config(home, error)
    storages = {"run": instance.run_storage, "event log": instance.event_log_storage,
                "schedule": instance.schedule_storage}
    for url in sorted({getattr(s, "postgres_url", None) for s in storages.values()} - {None}):
        session.redactor.add_url(url)
        # Dagster retries an unreachable database for about 10 s per call: one quick probe first.
        probe = probe_engine(url)
        try:
            with probe.connect():
                pass
        except sa.exc.SQLAlchemyError as error:
            session.instance_problem = "Dagster's storage is unreachable"
            return Outcome(False, f"cannot reach {shown_url(url)}: {session.reason(error)}",
                           "start the PostgreSQL server of Dagster's storage, or fix the storage block of "
                           f"{home / 'dagster.yaml'} (the password goes in DAGSTER_PG_PASSWORD)")
        finally:
            probe.dispose()
    behind = []
    for name, storage in storages.items():
        current, head = storage.alembic_version()
        if current != head:
            behind.append(f"{name} storage at {current or 'none (not migrated)'}, head {head}")
    if behind:
        session.instance_problem = "Dagster's storage is not migrated"
        return Outcome(False, "; ".join(behind), f"DAGSTER_HOME={home} dagster instance migrate")
    session.instance_problem = None
    where = shown_url(getattr(instance.run_storage, "postgres_url", "") or str(home))
    return Outcome(True, f"run, event log and schedule storage migrated ({where})")


def _read_only_instance(home: Path) -> DagsterInstance:
    """The instance of `home` opened to read, never to write: PostgreSQL storage that lacks its tables is reported
    as such instead of being created (Dagster creates them on open by default)."""
    config = yaml.safe_load((home / "dagster.yaml").read_text()) or {}
    overrides = {}
    storage = config.get("storage") if isinstance(config, dict) else None
    if isinstance(storage, dict) and isinstance(storage.get("postgres"), dict):
        overrides["storage"] = {**storage, "postgres": {**storage["postgres"], "should_autocreate_tables": False}}
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides=overrides))


def _invalid_instance_config(home: Path, error: DagsterInvalidConfigError) -> Outcome:
    """Dagster's config errors, which carry stack traces, as one line: most often variables that are not set."""
    unset, other = [], []
    for problem in error.errors:
        variable = re.search(r'environment variable "([^"]+)" which is not set', problem.message)
        if variable:
            unset.append(variable.group(1))
        else:
            other.append(first_line(problem.message))
    where = home / "dagster.yaml"
    if unset and not other:
        return Outcome(False, f"{where} reads environment variable(s) that are not set: {', '.join(sorted(unset))}",
                       "set them in this environment as the deployment does (the stack writes host, port, user and "
                       "database into its dagster.yaml; a password comes from DAGSTER_PG_PASSWORD)")
    shown = ", ".join(sorted(unset)) + " not set; " if unset else ""
    return Outcome(False, f"{where} is not a valid instance configuration: {shown}{'; '.join(other)[:400]}",
                   "fix the file (deploy/dagster.yaml is the production instance)")


def check_daemons(session: Session) -> Outcome:
    if session.instance_problem:
        return Outcome(False, f"not checked: {session.instance_problem}", "fix the dagster_storage check first")
    statuses = session.instance.get_daemon_statuses(list(DAEMON_TYPES))
    now = time.time()
    fine, problems, notes = [], [], []
    for daemon in DAEMON_TYPES:
        status = statuses[daemon]
        heartbeat = status.last_heartbeat
        if not status.required:
            fine.append(f"{daemon} (not enabled in dagster.yaml)")
        elif heartbeat is None:
            problems.append(f"{daemon}: no heartbeat")
        else:
            age = now - heartbeat.timestamp
            if not status.healthy or age > HEARTBEAT_MAX_AGE_S:
                problems.append(f"{daemon}: last heartbeat {age:.0f} s ago")
            else:
                fine.append(f"{daemon} {age:.0f} s ago")
            if heartbeat.errors:
                notes.append(f"{daemon} reports {len(heartbeat.errors)} recent error(s), e.g. "
                             + session.scrub(one_line(heartbeat.errors[0].message)[:200]))
    if problems:
        stale = f" (a heartbeat older than {HEARTBEAT_MAX_AGE_S} s is stale)"
        return Outcome(False, "; ".join(problems + notes) + stale,
                       "start or restart dagster-daemon (`learning-pipelines stack stop` then `stack start`, or "
                       f"`DAGSTER_HOME={session.target.dagster_home} dagster-daemon run -w <workspace.yaml>`)"
                       + session.logs("daemon.log"))
    return Outcome(True, "heartbeats: " + ", ".join(fine) + ("; " + "; ".join(notes) if notes else ""))
