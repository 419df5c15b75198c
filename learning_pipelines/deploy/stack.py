"""Starting and stopping the production topology on one machine (`make stack`; what it is made of is
deploy/topology.py): every process in the background, and `start` returns only once the stack is ready, as the
checks of `deploy verify` (deploy/verify.py) see it."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from learning_pipelines.deploy import processes, verify
from learning_pipelines.deploy.stack_setup import prepare
from learning_pipelines.deploy.targets import resolve_target
from learning_pipelines.deploy.topology import DESCRIPTION, POSTGRES_ENV, Stack, StackError, describe, read_description

# What a stack that has just started takes a few seconds to have (the daemons need the storage check first):
# `start` and `restart_workers` wait for these.
READINESS = tuple(check for check in verify.CHECKS if check.name in ("dagster_storage", "daemons", "celery_workers"))


def start(stack: Stack, wait_seconds: float = 180) -> dict[str, int]:
    """Starts every process and waits until the code server, webserver and metrics exporter answer.
    Refuses to start over a running stack in the same directory."""
    if sa.engine.make_url(stack.postgres).password is not None:
        raise StackError(f"${POSTGRES_ENV} must not hold a password: set PGPASSWORD (or ~/.pgpass) instead")
    if running_pids(stack.run_dir):
        raise StackError(f"a stack is already running from {stack.run_dir}: stop it first (`make stack-stop`)")
    for name, port in (("webserver", stack.webserver_port), ("code server", stack.code_server_port),
                       ("metrics exporter", stack.metrics_port)):
        if processes.listening(stack.host, port):
            raise StackError(f"port {port} (the {name}'s) is in use on {stack.host}: stop what listens there "
                             "or choose another port")
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    marker = uuid.uuid4().hex
    env = stack.environment(marker)
    pids: dict[str, int] = {}
    try:
        prepare(stack, env)
        (stack.run_dir / DESCRIPTION).write_text(json.dumps(describe(stack, marker), indent=2))
        commands = stack.commands()
        for name in commands:
            if name == "daemon":
                processes.wait_for_port(stack.host, stack.code_server_port, stack.run_dir, "code_server",
                                        wait_seconds)
            pids[name] = processes.spawn(stack.run_dir, name, commands[name], env)
        for name, port in (("webserver", stack.webserver_port), ("metrics", stack.metrics_port)):
            processes.wait_for_port(stack.host, port, stack.run_dir, name, wait_seconds)
        _wait_until_ready(stack, wait_seconds)
    except Exception as error:
        stop(stack.run_dir)  # only what this start spawned: the marker is new
        if isinstance(error, StackError):
            raise
        raise StackError(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from error
    _forget_worker_config(stack)
    return pids


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
            processes.terminate(lambda group=group: [pid for pid in processes.marked(description["marker"])
                                                     if processes.group_of(pid) == group], grace_seconds)
        restarted[name] = processes.spawn(run_dir, name, command, env)
    _wait_until_ready(stack, 180)
    _forget_worker_config(stack)
    return restarted


def running_pids(run_dir: Path) -> list[int]:
    description = read_description(run_dir)
    return processes.marked(description["marker"]) if description else []


def stop(run_dir: Path, grace_seconds: float = 20) -> list[int]:
    """Stops every process the stack in `run_dir` started, children included, and nothing else: SIGTERM first,
    SIGKILL for whatever is left after `grace_seconds`. Returns the pids it stopped."""
    description = read_description(run_dir)
    if description is None:
        return []
    stopped = processes.terminate(lambda: processes.marked(description["marker"]), grace_seconds)
    for pid_file in (run_dir / "pids").glob("*.pid"):
        pid_file.unlink()
    return stopped


def _wait_until_ready(stack: Stack, seconds: float) -> None:
    """Until the daemons have sent heartbeats and every worker listens on the queue."""
    target = resolve_target(stack.run_dir, os.environ)
    deadline = time.monotonic() + seconds
    while not (report := verify.verify(target, READINESS)).ok:
        if time.monotonic() > deadline:
            failed = "; ".join(f"{check.name}: {check.detail}" for check in report.checks if not check.ok)
            raise StackError(f"not ready after {seconds:.0f} s ({failed}); logs in {stack.run_dir / 'logs'}")
        time.sleep(1)


def _forget_worker_config(stack: Stack) -> None:
    """`dagster-celery worker start` writes the resolved broker URL (its password included) into a config module
    under DAGSTER_HOME for the worker to import at start; once the workers run, it is not needed on disk."""
    shutil.rmtree(stack.dagster_home / "dagster_celery", ignore_errors=True)
