"""The production topology on one machine (`make stack`): Dagster's storage and the warehouse in two PostgreSQL
databases, a gRPC code server, the daemon, the webserver, Celery workers and the metrics exporter, each in the
background in its own process group, with its pid and log file under one run directory."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
import yaml

from learning_pipelines.deploy.celery_steps import WORKER_APP, worker_config_yaml
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
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


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
        return _database_url(self.postgres, self.warehouse_db)

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


def _database_url(server: str, database: str) -> str:
    return sa.engine.make_url(server).set(database=database).render_as_string(hide_password=False)


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


def prepare(stack: Stack, env: dict[str, str]) -> None:
    """Both databases exist and are migrated; the run directory holds the instance, workspace and worker config."""
    from learning_pipelines.db import migrate, partitions
    from learning_pipelines.db.engine import get_engine

    for name in (stack.warehouse_db, stack.dagster_db):
        _create_database(stack.postgres, name)
    stack.dagster_home.mkdir(parents=True, exist_ok=True)
    (stack.run_dir / "logs").mkdir(exist_ok=True)
    (stack.run_dir / "pids").mkdir(exist_ok=True)
    (stack.dagster_home / "dagster.yaml").write_text(yaml.safe_dump(_instance_yaml(stack), sort_keys=False))
    stack.workspace.write_text(yaml.safe_dump(_workspace_yaml(stack), sort_keys=False))
    stack.worker_config.write_text(worker_config_yaml(stack.queue))
    migrate.upgrade(stack.warehouse_url)
    this_month = partitions.month_start(dt.date.today())
    partitions.create_month_partitions(get_engine(stack.warehouse_url), [this_month, partitions.next_month(this_month)])
    migrated = subprocess.run([str(Path(sys.executable).parent / "dagster"), "instance", "migrate"], env=env,
                              capture_output=True, text=True, timeout=300)
    if migrated.returncode != 0:
        raise StackError(f"dagster instance migrate failed:\n{migrated.stdout[-2000:]}{migrated.stderr[-2000:]}")


class StackError(RuntimeError):
    """The stack could not start: the message says which part and why."""


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def start(stack: Stack, wait_seconds: float = 180) -> dict[str, int]:
    """Starts every process and waits until the code server, webserver and metrics exporter answer.
    Refuses to start over a running stack in the same directory."""
    if sa.engine.make_url(stack.postgres).password is not None:
        raise StackError(f"${POSTGRES_ENV} must not hold a password: set PGPASSWORD (or ~/.pgpass) instead")
    if running_pids(stack.run_dir):
        raise StackError(f"a stack is already running from {stack.run_dir}: stop it first (`make stack-stop`)")
    for name, port in (("webserver", stack.webserver_port), ("code server", stack.code_server_port),
                       ("metrics exporter", stack.metrics_port)):
        if _listening(stack.host, port):
            raise StackError(f"port {port} (the {name}'s) is in use on {stack.host}: stop what listens there "
                             "or choose another port")
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    marker = uuid.uuid4().hex
    env = stack.environment(marker)
    pids: dict[str, int] = {}
    try:
        prepare(stack, env)
        (stack.run_dir / DESCRIPTION).write_text(json.dumps(_description(stack, marker), indent=2))
        commands = stack.commands()
        for name in commands:
            if name == "daemon":
                _wait_for_port(stack.host, stack.code_server_port, stack.run_dir, "code_server", wait_seconds)
            pids[name] = _spawn(stack, name, commands[name], env)
        for name, port in (("webserver", stack.webserver_port), ("metrics", stack.metrics_port)):
            _wait_for_port(stack.host, port, stack.run_dir, name, wait_seconds)
        _wait_until_ready(stack, wait_seconds)
    except Exception as error:
        stop(stack.run_dir)  # only what this start spawned: the marker is new
        if isinstance(error, StackError):
            raise
        raise StackError(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from error
    _forget_worker_config(stack)
    return pids


def _forget_worker_config(stack: Stack) -> None:
    """`dagster-celery worker start` writes the resolved broker URL (its password included) into a config module
    under DAGSTER_HOME for the worker to import at start; once the workers run, it is not needed on disk."""
    shutil.rmtree(stack.dagster_home / "dagster_celery", ignore_errors=True)


def _wait_until_ready(stack: Stack, seconds: float) -> None:
    """Until the daemons have sent heartbeats and every worker listens on the queue."""
    from learning_pipelines.deploy import verify

    target = verify.resolve_target(stack.run_dir, os.environ)
    deadline = time.monotonic() + seconds
    while not (report := verify.verify(target, verify.READINESS)).ok:
        if time.monotonic() > deadline:
            failed = "; ".join(f"{check.name}: {check.detail}" for check in report.checks if not check.ok)
            raise StackError(f"not ready after {seconds:.0f} s ({failed}); logs in {stack.run_dir / 'logs'}")
        time.sleep(1)


def _spawn(stack: Stack, name: str, command: list[str], env: dict[str, str]) -> int:
    with open(stack.run_dir / "logs" / f"{name}.log", "a") as log:
        # Its own session and process group: SIGTERM reaches it (a background job of bash would ignore it) and
        # stopping the group stops its children.
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=stack.run_dir)
    (stack.run_dir / "pids" / f"{name}.pid").write_text(str(process.pid))
    return process.pid


def restart_workers(run_dir: Path, grace_seconds: float = 20) -> dict[str, int]:
    """Stops each Celery worker (its process group) and starts it again: workers keep the code they imported at
    start, so a code change reaches them only this way (the code server picks it up with the UI's Reload)."""
    description = read_description(run_dir)
    if description is None:
        raise StackError(f"no stack was started from {run_dir}")
    stack = Stack(**{**description["stack"], "run_dir": run_dir})
    env = stack.environment(description["marker"])
    restarted = {}
    for name, command in stack.commands().items():
        if not name.startswith("worker_"):
            continue
        pid_file = run_dir / "pids" / f"{name}.pid"
        if pid_file.is_file():
            group = int(pid_file.read_text())
            _terminate(lambda: [pid for pid in _marked(description["marker"]) if _group_of(pid) == group],
                       grace_seconds)
        restarted[name] = _spawn(stack, name, command, env)
    _wait_until_ready(stack, 180)
    _forget_worker_config(stack)
    return restarted


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _description(stack: Stack, marker: str) -> dict:
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


def _wait_for_port(host: str, port: int, run_dir: Path, name: str, seconds: float) -> None:
    pid_file = run_dir / "pids" / f"{name}.pid"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _listening(host, port):
            return
        if pid_file.is_file() and not _alive(int(pid_file.read_text())):
            raise StackError(f"the {name} exited while starting; its log: {run_dir / 'logs' / f'{name}.log'}")
        time.sleep(0.5)
    raise StackError(f"the {name} is not listening on {host}:{port} after {seconds:.0f} s; "
                     f"its log: {run_dir / 'logs' / f'{name}.log'}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _marked(marker: str) -> list[int]:
    """Live processes whose environment carries the stack's marker."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and _alive(int(entry.name)):
                found.append(int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


def running_pids(run_dir: Path) -> list[int]:
    description = read_description(run_dir)
    return _marked(description["marker"]) if description else []


def stop(run_dir: Path, grace_seconds: float = 20) -> list[int]:
    """Stops every process the stack in `run_dir` started, children included, and nothing else: SIGTERM first,
    SIGKILL for whatever is left after `grace_seconds`. Returns the pids it stopped."""
    description = read_description(run_dir)
    if description is None:
        return []
    stopped = _terminate(lambda: _marked(description["marker"]), grace_seconds)
    for pid_file in (run_dir / "pids").glob("*.pid"):
        pid_file.unlink()
    return stopped


def _terminate(find: Callable[[], list[int]], grace_seconds: float) -> list[int]:
    """SIGTERM to the processes `find` lists; after `grace_seconds`, SIGKILL to whatever it lists then, again until
    it lists none (a process that appeared meanwhile included) or 10 s have passed. Returns the first list."""
    first = find()
    for pid in first:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while find() and time.monotonic() < deadline:
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while (left := find()) and time.monotonic() < deadline:
        for pid in left:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.1)
    return first


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
