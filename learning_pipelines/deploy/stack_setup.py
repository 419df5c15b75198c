"""What a stack needs before its processes start: its two databases created and migrated (the warehouse with this
month's and next month's review_logs partitions), and its run directory holding the Dagster instance, the workspace
and the Celery workers' config."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
import yaml

from learning_pipelines.db import migrate, partitions
from learning_pipelines.db.engine import get_engine
from learning_pipelines.defs.executor import celery_executor_config
from learning_pipelines.deploy.topology import Stack, StackError

# The repository's deploy/: the production instance and workspace the stack's are written from.
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def prepare(stack: Stack, env: dict[str, str]) -> None:
    """Both databases exist and are migrated; the run directory holds the instance, workspace and worker config."""
    for name in (stack.warehouse_db, stack.dagster_db):
        _create_database(stack.postgres, name)
    stack.dagster_home.mkdir(parents=True, exist_ok=True)
    (stack.run_dir / "logs").mkdir(exist_ok=True)
    (stack.run_dir / "pids").mkdir(exist_ok=True)
    (stack.dagster_home / "dagster.yaml").write_text(yaml.safe_dump(_instance_yaml(stack), sort_keys=False))
    stack.workspace.write_text(yaml.safe_dump(_workspace_yaml(stack), sort_keys=False))
    stack.worker_config.write_text(_worker_config_yaml(stack.queue))
    migrate.upgrade(stack.warehouse_url)
    this_month = partitions.month_start(dt.date.today())
    partitions.create_month_partitions(get_engine(stack.warehouse_url), [this_month, partitions.next_month(this_month)])
    migrated = subprocess.run([str(Path(sys.executable).parent / "dagster"), "instance", "migrate"], env=env,
                              capture_output=True, text=True, timeout=300)
    if migrated.returncode != 0:
        raise StackError(f"dagster instance migrate failed:\n{migrated.stdout[-2000:]}{migrated.stderr[-2000:]}")


def _create_database(server: str, name: str) -> None:
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}).first()
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


def _instance_yaml(stack: Stack) -> dict:
    """deploy/dagster.yaml with this server's host, port, user and database written in (so `dagster` commands
    need only DAGSTER_HOME)."""
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    url = sa.engine.make_url(stack.postgres)
    postgres_db = instance["storage"]["postgres"]["postgres_db"]
    postgres_db.update(hostname=url.host or "127.0.0.1", port=url.port or 5432, username=url.username or "postgres",
                       db_name=stack.dagster_db)
    postgres_db.pop("password")  # libpq reads PGPASSWORD (or ~/.pgpass) itself
    instance["concurrency"]["runs"]["max_concurrent_runs"] = stack.max_concurrent_runs
    return instance


def _workspace_yaml(stack: Stack) -> dict:
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    workspace["load_from"][0]["grpc_server"].update(host=stack.host, port=stack.code_server_port)
    return workspace


def _worker_config_yaml(queue: str) -> str:
    """The file `dagster-celery worker start -y` reads: the same block a job's `execution` config holds, so the
    workers and the executor agree on broker and queue."""
    return yaml.safe_dump({"execution": {"config": celery_executor_config(queue)}}, sort_keys=False)
