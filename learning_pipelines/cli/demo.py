"""`learning-pipelines demo`: simulated learners into the warehouse, every job run once."""

from __future__ import annotations

import argparse


def _demo(args: argparse.Namespace) -> int:
    from learning_pipelines.db import migrate
    from learning_pipelines.demo import run_demo

    migrate.upgrade()
    print(run_demo(args.learners, args.seed, materialize=not args.no_materialize).render())
    return 0


def register(commands) -> None:
    demo = commands.add_parser("demo", help="load simulated learners and materialize every asset")
    demo.add_argument("--learners", type=int, default=1000)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--no-materialize", action="store_true", help="only load the simulated data")
    demo.set_defaults(handler=_demo)
