"""The production Dagster instance (deploy/dagster.yaml): runs, events and schedules in PostgreSQL, in a
database apart from the warehouse's, the code location served by a gRPC code server
(deploy/workspace.yaml), and a run launched into the queue, dequeued by a real daemon and run to success."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from learning_pipelines.db import migrate
from learning_pipelines.db.engine import DATABASE_URL_ENV
from tests.conftest import scratch_postgres_database
from tests.support.running_stack import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
JOB = "card_memory_states_job"


def _start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    # Its own process group, so the whole group stops by pid (the daemon ignores SIGTERM).
    return subprocess.Popen(command, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"nothing listening on {port} after {seconds} s: {log.read_text()[-3000:]}")


@pytest.mark.slow
def test_a_run_goes_through_the_queue_of_the_postgresql_instance(empty_postgres_url, tmp_path, monkeypatch):
    migrate.upgrade(empty_postgres_url)  # the warehouse, in its own database
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    workspace = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())
    workspace["load_from"][0]["grpc_server"]["port"] = port
    (tmp_path / "workspace.yaml").write_text(yaml.safe_dump(workspace))

    with scratch_postgres_database() as dagster_url:
        url = sa.engine.make_url(dagster_url)
        for name, value in {"DAGSTER_PG_HOST": url.host, "DAGSTER_PG_PORT": str(url.port or 5432),
                            "DAGSTER_PG_USER": url.username, "DAGSTER_PG_PASSWORD": url.password or "",
                            "DAGSTER_PG_DB": url.database}.items():
            monkeypatch.setenv(name, value)  # the instance reads them here and in every process it starts
        env = {**os.environ, "DAGSTER_HOME": str(home), DATABASE_URL_ENV: empty_postgres_url}
        migrated = subprocess.run([str(BIN / "dagster"), "instance", "migrate"], env=env, capture_output=True,
                                  text=True, timeout=180)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        server = _start([str(BIN / "dagster"), "code-server", "start", "-m", "learning_pipelines.definitions",
                         "-h", "127.0.0.1", "-p", str(port), "--location-name", "learning_pipelines"],
                        env, tmp_path / "code_server.log")
        daemon = None
        try:
            _wait_for_port(port, server, tmp_path / "code_server.log")
            daemon = _start([str(BIN / "dagster-daemon"), "run", "-w", str(tmp_path / "workspace.yaml")], env,
                            tmp_path / "daemon.log")
            launched = subprocess.run([str(BIN / "dagster"), "job", "launch", "-w", str(tmp_path / "workspace.yaml"),
                                       "-j", JOB], env=env, capture_output=True, text=True, timeout=180)
            assert launched.returncode == 0, launched.stdout + launched.stderr
            with dg.DagsterInstance.from_config(str(home)) as instance:
                assert type(instance.run_storage).__name__ == "PostgresRunStorage"
                deadline, statuses = time.time() + 240, []
                while time.time() < deadline:
                    run = instance.get_runs(limit=1)[0]
                    statuses.append(run.status)
                    if run.is_finished:
                        break
                    time.sleep(1)
                log_tail = (tmp_path / "daemon.log").read_text()[-3000:]
                assert run.status == dg.DagsterRunStatus.SUCCESS, (statuses[-5:], log_tail)
                assert statuses[0] in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                                       dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)
                events = instance.all_logs(run.run_id)
                kinds = [event.dagster_event.event_type for event in events if event.dagster_event]
                enqueued, started = dg.DagsterEventType.RUN_ENQUEUED, dg.DagsterEventType.RUN_START
                assert enqueued in kinds and kinds.index(enqueued) < kinds.index(started), kinds[:6]
                assert run.job_name == JOB and run.remote_job_origin.location_name == "learning_pipelines"
        finally:
            if daemon is not None:
                _stop(daemon)
            _stop(server)


def test_the_production_instance_queues_monitors_and_retries_as_development_does():
    """deploy/dagster.yaml differs from dagster_home/dagster.yaml only in its storage."""
    production = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    development = yaml.safe_load((ROOT / "dagster_home" / "dagster.yaml").read_text())
    assert set(production.pop("storage")["postgres"]["postgres_db"]["password"]) == {"env"}
    assert production == development
