"""`learning-pipelines demo`: simulated learners into the warehouse, every job run once."""

from __future__ import annotations

import argparse
import sys

from learning_pipelines.cli.failures import REFUSED


def _demo(args: argparse.Namespace) -> int:
    from learning_pipelines.db import migrate
    from learning_pipelines.demo import run_demo
    from learning_pipelines.domain.time_zones import InvalidTimeZone

    migrate.upgrade()
    try:
        report = run_demo(args.learners, args.seed, materialize=not args.no_materialize)
    except InvalidTimeZone as error:  # the simulation's, before anything is written
        print(f"error: {error}", file=sys.stderr)
        return REFUSED
    print(report.render())
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
    demo.add_argument("--no-materialize", action="store_true", help="only load the simulated data")
    demo.set_defaults(handler=_demo)
