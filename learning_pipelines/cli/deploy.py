"""`learning-pipelines deploy verify`: is this deployment whole and fast enough to serve."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

DEFAULT_RUN_DIR = Path(".stack")


def _verify(args: argparse.Namespace) -> int:
    # Libraries that log without configuring logging (dagster-postgres' retries) would print to stderr.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        # Imported here, not at the top: every command loads this module (cli/__init__.py), and these load Dagster
        # and the assets; and a setting of the environment that settings.py refuses becomes one line, exit 2.
        from learning_pipelines.deploy import targets, verify
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        target = targets.resolve_target(args.run_dir, os.environ, args.metrics_url, args.code_server)
    except targets.TargetMissing as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        report = verify.verify(target)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(report.as_json() if args.json else report.render())
    return 0 if report.ok else 1


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, like 127.0.0.1:4266, not {text!r}")
    return host, int(port)


def register(commands) -> None:
    deploy = commands.add_parser("deploy", help="check a deployment", description=__doc__)
    actions = deploy.add_subparsers(dest="action", required=True)
    verify = actions.add_parser(
        "verify", help="check, in order, that every part of the deployment answers and is fast enough; exit 1 on "
                       "any failure",
        description="Checks, in order: the warehouse is at the Alembic head; Dagster's storage is migrated; this "
                    "month's and next month's review_logs partitions exist; the daemons' heartbeats are fresh; the "
                    "code location loads in the gRPC code server; enough Celery workers listen on the queue; the "
                    "metrics endpoint answers; a smoke ingest of 10,000 synthetic reviews into a throw-away schema "
                    "runs at >= 1,000 rows/s and one learner's revision queue reads in <= 100 ms. What to check "
                    "comes from the flags below, else RUN_DIR/stack.json, else (a deployment without one) DAGSTER_HOME, "
                    "LEARNING_PIPELINES_DATABASE_URL, LEARNING_PIPELINES_CELERY_BROKER and "
                    "LEARNING_PIPELINES_CELERY_QUEUE. Exit 0 when every check passes, 1 when "
                    "one fails, 2 when nothing says what to check.")
    verify.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR,
                        help="the stack's run directory, holding stack.json (default .stack)")
    verify.add_argument("--json", action="store_true",
                        help='print one JSON object {"ok", "checks": [{"name", "ok", "detail", "remedy"}]} '
                             "instead of the table")
    verify.add_argument("--metrics-url", help="the metrics endpoint (default: stack.json's)")
    verify.add_argument("--code-server", type=_host_port, metavar="HOST:PORT",
                        help="the gRPC code server (default: stack.json's)")
    verify.set_defaults(handler=_verify)
