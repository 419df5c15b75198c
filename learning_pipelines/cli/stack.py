"""`learning-pipelines stack start|stop|restart-workers`: the production topology on this machine (`make stack`).

deploy/ and settings are imported inside the handlers: every command loads this module (cli/__init__.py), and they
load Dagster and the assets."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

DEFAULT_RUN_DIR = Path(".stack")


def _stack_errors_exit_2(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A StackError (what could not be done, and why) becomes one line on stderr and exit 2."""
    @functools.wraps(handler)
    def handle(args: argparse.Namespace) -> int:
        from learning_pipelines.deploy.topology import StackError

        try:
            return handler(args)
        except StackError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    return handle


@_stack_errors_exit_2
def _start(args: argparse.Namespace) -> int:
    from learning_pipelines.deploy.stack import start
    from learning_pipelines.deploy.topology import DEFAULT_POSTGRES, POSTGRES_ENV, Stack
    from learning_pipelines.settings import AUTOMATION_ON

    stack = Stack(run_dir=args.run_dir.resolve(), postgres=os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES),
                  workers=args.workers, automation=AUTOMATION_ON)
    pids = start(stack)  # on failure it has stopped whatever it had spawned
    for name, pid in pids.items():
        print(f"  {name:<12} pid {pid:<8} log {stack.run_dir / 'logs' / f'{name}.log'}")
    print(f"stack up: Dagster UI {stack.webserver_url}, metrics {stack.metrics_url}, "
          f"schedules and sensors {'on' if stack.automation else 'off (LEARNING_PIPELINES_AUTOMATION=on starts them)'}")
    print("\n".join(next_steps(stack)))
    return 0


def next_steps(stack) -> list[str]:
    """What to do with a stack just started: its warehouse is empty, so first load learners, then launch a job."""
    import sqlalchemy as sa

    url = sa.engine.make_url(stack.warehouse_url)
    password = " (its password from PGPASSWORD)" if url.password else ""
    bare_url = sa.engine.URL.create(url.drivername, url.username, None, url.host, url.port, url.database,
                                    url.query).render_as_string(hide_password=False)  # psycopg2 reads PGPASSWORD
    env = f"DAGSTER_HOME={stack.dagster_home} LEARNING_PIPELINES_DATABASE_URL={bare_url}"
    return [
        f"the warehouse{password} starts empty: load the demo's 1,000 simulated learners into it with",
        f"  {env} .venv/bin/learning-pipelines demo --no-materialize",
        f"  (or your own review files: {env} .venv/bin/learning-pipelines import FILE --register-unknown)",
        "then launch a job:",
        f"  DAGSTER_HOME={stack.dagster_home} .venv/bin/dagster job launch -w {stack.workspace} -j fsrs_global_job",
        f"  it prints no run id: the run is under Runs in the UI, {stack.webserver_url}/runs",
    ]


@_stack_errors_exit_2
def _stop(args: argparse.Namespace) -> int:
    from learning_pipelines.deploy.stack import stop

    stopped = stop(args.run_dir.resolve())
    print(f"stopped {len(stopped)} process(es) of the stack in {args.run_dir}" if stopped
          else f"no stack running from {args.run_dir}")
    return 0


@_stack_errors_exit_2
def _restart_workers(args: argparse.Namespace) -> int:
    from learning_pipelines.deploy.stack import restart_workers

    restarted = restart_workers(args.run_dir.resolve())
    for name, pid in restarted.items():
        print(f"  {name:<12} restarted, pid {pid}")
    return 0


def register(commands) -> None:
    stack = commands.add_parser("stack", help="start or stop the production topology on this machine")
    actions = stack.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="create and migrate both databases, start every process in the background")
    start.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR, help="pids, logs and the instance (default .stack)")
    start.add_argument("--workers", type=int, default=2, help="Celery worker processes (default 2)")
    start.set_defaults(handler=_start)
    stop = actions.add_parser("stop", help="stop every process the stack started, children included")
    stop.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    stop.set_defaults(handler=_stop)
    restart = actions.add_parser("restart-workers", help="restart the Celery workers so they run the current code")
    restart.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    restart.set_defaults(handler=_restart_workers)
