"""`learning-pipelines`: the command line of the code location, one module per subcommand."""

from __future__ import annotations

import argparse
import sys

from learning_pipelines.cli import db, demo, fsrs, imports, learners, metrics, ncf, recommend


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="learning-pipelines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (demo, imports, fsrs, recommend, ncf, metrics, learners, db):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
