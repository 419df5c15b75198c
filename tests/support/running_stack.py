"""The production stack (learning_pipelines/deploy/stack.py) for one test: its own databases, ports and Celery queue,
everything stopped, dropped and deleted afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import kombu
import sqlalchemy as sa

from learning_pipelines.deploy import stack as stacks
from learning_pipelines.deploy.topology import Stack
from learning_pipelines.settings import CELERY_BROKER_ENV
from tests.conftest import TEST_BROKER_URL, TEST_PG_URL, _admin_engine

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_stack(run_dir: Path, workers: int = 2, warehouse_db: str | None = None,
                  learner_shards: int | None = None) -> Iterator[Stack]:
    """`warehouse_db`: an existing database on the test server to use (and drop afterwards) as the warehouse."""
    name = f"lp_test_{uuid.uuid4().hex[:10]}"
    stack = Stack(run_dir=run_dir, postgres=TEST_PG_URL, warehouse_db=warehouse_db or f"{name}_warehouse",
                         dagster_db=f"{name}_dagster", webserver_port=free_port(), code_server_port=free_port(),
                         metrics_port=free_port(), workers=workers, queue=name, learner_shards=learner_shards)
    previous_broker = os.environ.get(CELERY_BROKER_ENV)
    os.environ[CELERY_BROKER_ENV] = TEST_BROKER_URL
    try:
        stacks.start(stack)
        yield stack
    finally:
        stacks.stop(run_dir)
        assert stacks.running_pids(run_dir) == [], "the stack left processes behind"
        with _admin_engine().connect() as conn:
            for database in (stack.warehouse_db, stack.dagster_db):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        _delete_queue(name)
        if previous_broker is None:
            os.environ.pop(CELERY_BROKER_ENV, None)
        else:
            os.environ[CELERY_BROKER_ENV] = previous_broker


def _delete_queue(name: str) -> None:
    with kombu.Connection(TEST_BROKER_URL) as connection:
        for delete in (connection.default_channel.queue_delete, connection.default_channel.exchange_delete):
            try:
                delete(name)
            except Exception:  # noqa: BLE001  (already gone: nothing to clean)
                connection.close()
                connection.connect()


def dagster(stack: Stack, *arguments: str) -> str:
    """A `dagster` CLI command against the stack's instance and workspace; its output."""
    env = {**os.environ, "DAGSTER_HOME": str(stack.dagster_home)}
    done = subprocess.run([str(BIN / "dagster"), *arguments, "-w", str(stack.workspace)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def instance(stack: Stack) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(stack.dagster_home))


def wait_for_runs(stack: Stack, job: str, count: int, seconds: float = 420) -> list[dg.DagsterRun]:
    """The job's latest `count` runs, once all have finished."""
    with instance(stack) as dagster_instance:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            runs = dagster_instance.get_runs(filters=dg.RunsFilter(job_name=job), limit=count)
            if len(runs) == count and all(run.is_finished for run in runs):
                return runs
            time.sleep(1)
    logs = {path.name: path.read_text()[-1500:] for path in (stack.run_dir / "logs").glob("*.log")}
    raise AssertionError(f"{job}: {count} runs not finished after {seconds} s: {json.dumps(logs, indent=1)}")


def celery_workers_of_steps(stack: Stack, run_id: str) -> dict[str, list[str]]:
    """Step key -> the Celery worker of each execution of the step (dagster-celery's engine event), in order."""
    with instance(stack) as dagster_instance:
        workers: dict[str, list[str]] = {}
        for record in dagster_instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            metadata = record.dagster_event.engine_event_data.metadata
            if "Celery worker" in metadata:
                workers.setdefault(record.step_key, []).append(metadata["Celery worker"].value)
        return workers
