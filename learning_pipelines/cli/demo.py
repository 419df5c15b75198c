"""`learning-pipelines demo`: simulated learners into the warehouse, every job run once."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from learning_pipelines.cli.failures import REFUSED


@contextlib.contextmanager
def _output_into(path: Path) -> Iterator[TextIO]:
    """Everything written to stdout and stderr meanwhile (the runs' log lines, the code server's, those of any process
    started) appended to `path` instead; yields the real stdout, for the summary, which so reads whole however it is
    piped. Each run's log is in the UI too. Whatever fails afterwards is said on stderr again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    summary = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    try:
        with open(path, "ab") as log:
            for fd in saved:
                os.dup2(log.fileno(), fd)
            try:
                yield summary
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, original in saved.items():
                    os.dup2(original, fd)
    finally:
        summary.close()
        for original in saved.values():
            os.close(original)


def _demo(args: argparse.Namespace) -> int:
    from learning_pipelines.db import migrate
    from learning_pipelines.db.engine import dagster_home
    from learning_pipelines.demo import run_demo
    from learning_pipelines.domain.time_zones import InvalidTimeZone

    migrate.upgrade()
    log = dagster_home() / "logs" / "demo.log"
    try:
        with _output_into(log) as summary:
            def loaded(report) -> None:
                print("\n".join(report.header()), file=summary)
                if not args.no_materialize:
                    print(f"materializing every asset, one run per partition (their log lines: {log}):", file=summary)

            report = run_demo(args.learners, args.seed, materialize=not args.no_materialize,
                              on_run=lambda run: print(run.line(), file=summary), on_loaded=loaded)
    except InvalidTimeZone as error:  # the simulation's, before anything is written
        print(f"error: {error}", file=sys.stderr)
        return REFUSED
    print(report.render(runs_shown=True))
    return 0


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs at least 1 learner, not {value}")
    return value


def register(commands) -> None:
    demo = commands.add_parser("demo", help="load simulated learners and materialize every asset")
    demo.add_argument("--learners", type=_at_least_one, default=1000, help="simulated learners to load (1 or more)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the simulation")
    demo.add_argument("--no-materialize", action="store_true",
                      help="only load the simulated data (into the warehouse $LEARNING_PIPELINES_DATABASE_URL names, "
                           "e.g. the stack's)")
    demo.set_defaults(handler=_demo)
