"""`learning-pipelines`: the command line of the code location, one module per subcommand."""

from __future__ import annotations

import argparse
import os
import sys

from learning_pipelines.cli import db, demo, deploy, fsrs, imports, learners, metrics, ncf, recommend, rejects, stack
from learning_pipelines.cli.failures import FAILED, REFUSED, one_line_failure, stdout_reader_gone


class _OneLineParser(argparse.ArgumentParser):
    """argparse, with a bad argument said in one line (its usage is one `--help` away), exit 2."""

    def error(self, message: str):
        self.exit(REFUSED, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="learning-pipelines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (demo, imports, rejects, fsrs, recommend, ncf, metrics, learners, db, stack, deploy):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command `argv` names; its exit code. The error boundary: a failure that is not a bug (the warehouse
    failing or unreachable, whatever wraps its error; a file that cannot be read; a reader of stdout that has gone)
    is one line on stderr, not a traceback (cli/failures.py)."""
    if os.environ.get("SENTRY_DSN"):  # only then load the SDK (and Dagster): most commands start in milliseconds
        from learning_pipelines.observability import error_tracking

        error_tracking.init()  # an uncaught error of a command is reported from here on
    args = build_parser().parse_args(argv)
    try:
        status = args.handler(args)
        sys.stdout.flush()  # a reader that has gone (`| head`) is found here, not at the interpreter's exit
        return status
    except BrokenPipeError:
        if not stdout_reader_gone():
            raise
        # The Python docs' recipe (library/signal.html, "Note on SIGPIPE"): what is left for stdout goes to
        # devnull, so the interpreter's own flush at exit cannot fail again; the reader has what it wanted.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return FAILED
    except Exception as error:
        status = one_line_failure(error, getattr(args, "database_url", None))
        if status is None:
            raise
        return status


if __name__ == "__main__":
    sys.exit(main())
