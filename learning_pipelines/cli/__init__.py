"""`learning-pipelines`: the command line of the code location, one module per subcommand."""

from __future__ import annotations

import argparse
import os
import sys

from learning_pipelines.cli import db, demo, deploy, fsrs, imports, learners, metrics, ncf, recommend, stack


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="learning-pipelines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (demo, imports, fsrs, recommend, ncf, metrics, learners, db, stack, deploy):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    if os.environ.get("SENTRY_DSN"):  # only then load the SDK (and Dagster): most commands start in milliseconds
        from learning_pipelines.observability import error_tracking

        error_tracking.init()  # an uncaught error of a command is reported from here on
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
