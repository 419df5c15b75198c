"""The production topology on one machine (`make stack`): which processes run, on which ports, against which two
PostgreSQL databases, in which environment; and stack.json, the description of a started stack that `stack stop`
and `deploy verify` read. Only what a stack is: starting and stopping it is deploy/stack.py."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import sqlalchemy as sa

from learning_pipelines.settings import (
    AUTOMATION_ENV,
    CELERY_BROKER_ENV,
    CELERY_QUEUE_ENV,
    DEFAULT_CELERY_BROKER,
    EXECUTOR_ENV,
)

# The PostgreSQL server the stack creates its two databases on (any database of it). A password goes in
# PGPASSWORD or ~/.pgpass, where every process's libpq finds it, never in this URL.
POSTGRES_ENV = "LEARNING_PIPELINES_STACK_POSTGRES"
DEFAULT_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
LOCATION_NAME = "learning_pipelines"
# Every process the stack starts carries this variable (children inherit it): `stop` finds them all by it,
# including run workers and Celery pool processes, and nothing it did not start.
MARKER_ENV = "LEARNING_PIPELINES_STACK_RUN"
DESCRIPTION = "stack.json"
# dagster-celery's own app module: workers load it with `-A`, it registers the step task.
WORKER_APP = "dagster_celery.app"


class StackError(RuntimeError):
    """The stack could not start: the message says which part and why."""


@dataclasses.dataclass(frozen=True)
class Stack:
    run_dir: Path
    postgres: str = DEFAULT_POSTGRES
    warehouse_db: str = "warehouse"
    dagster_db: str = "dagster"
    host: str = "127.0.0.1"
    webserver_port: int = 3000
    code_server_port: int = 4266
    metrics_port: int = 9464
    workers: int = 2
    queue: str = "learning_pipelines"
    learner_shards: int | None = None
    automation: bool = False
    # A run here only hands its steps to the queue; the Celery workers bound the work. Starting every shard run of
    # a backfill at once keeps the queue full, so a worker never waits for a run process to start.
    max_concurrent_runs: int = 16

    @property
    def dagster_home(self) -> Path:
        return self.run_dir / "dagster_home"

    @property
    def workspace(self) -> Path:
        return self.run_dir / "workspace.yaml"

    @property
    def worker_config(self) -> Path:
        return self.run_dir / "celery.yaml"

    @property
    def warehouse_url(self) -> str:
        return database_url(self.postgres, self.warehouse_db)

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def webserver_url(self) -> str:
        return f"http://{self.host}:{self.webserver_port}"

    def worker_name(self, number: int) -> str:
        """Unique on the broker (dagster-celery appends @host): workers of two stacks sharing a broker and a host
        would otherwise answer control broadcasts under one name."""
        return f"{self.queue}-worker{number}"

    def environment(self, marker: str) -> dict[str, str]:
        """What every process of the stack sees: secrets only from the caller's environment."""
        bin_dir = str(Path(sys.executable).parent)
        env = {**os.environ, "DAGSTER_HOME": str(self.dagster_home), MARKER_ENV: marker,
               "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               "LEARNING_PIPELINES_DATABASE_URL": self.warehouse_url,
               EXECUTOR_ENV: "celery", CELERY_QUEUE_ENV: self.queue,
               CELERY_BROKER_ENV: os.environ.get(CELERY_BROKER_ENV, DEFAULT_CELERY_BROKER),
               AUTOMATION_ENV: "on" if self.automation else "off"}
        if self.learner_shards is not None:
            env["LEARNING_PIPELINES_LEARNER_SHARDS"] = str(self.learner_shards)
        return env

    def commands(self) -> dict[str, list[str]]:
        bin_dir = Path(sys.executable).parent
        workspace = str(self.workspace)
        commands = {
            "code_server": [str(bin_dir / "dagster"), "code-server", "start", "-m", "learning_pipelines.definitions",
                            "-h", self.host, "-p", str(self.code_server_port), "--location-name", LOCATION_NAME],
            "daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", workspace],
            "webserver": [str(bin_dir / "dagster-webserver"), "-w", workspace, "-h", self.host,
                          "-p", str(self.webserver_port)],
            "metrics": [str(bin_dir / "learning-pipelines"), "metrics", "--host", self.host,
                        "--port", str(self.metrics_port)],
        }
        for number in range(1, self.workers + 1):
            commands[f"worker_{number}"] = [
                str(bin_dir / "dagster-celery"), "worker", "start", "-A", WORKER_APP, "-y", str(self.worker_config),
                "-q", self.queue, "-n", self.worker_name(number), "--loglevel", "INFO"]
        return commands


def database_url(server: str, database: str) -> str:
    """The URL of `database` on the PostgreSQL server `server` names."""
    return sa.engine.make_url(server).set(database=database).render_as_string(hide_password=False)


def describe(stack: Stack, marker: str) -> dict:
    """What `deploy verify` needs to find this stack; no secrets."""
    settings = {field.name: getattr(stack, field.name) for field in dataclasses.fields(stack) if field.name != "run_dir"}
    return {"marker": marker, "stack": settings, "dagster_home": str(stack.dagster_home), "workspace": str(stack.workspace),
            "warehouse_url": stack.warehouse_url,
            "metrics_url": stack.metrics_url, "webserver_url": stack.webserver_url, "queue": stack.queue,
            "workers": stack.workers, "location_name": LOCATION_NAME,
            "code_server": {"host": stack.host, "port": stack.code_server_port}}


def read_description(run_dir: Path) -> dict | None:
    path = run_dir / DESCRIPTION
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise StackError(f"{path} cannot be read ({error}): stop the stack's processes by hand, delete the file, "
                         "and start again") from None
