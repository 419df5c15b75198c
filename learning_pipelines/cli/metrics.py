"""`learning-pipelines metrics`: Prometheus text from the Dagster instance and the warehouse."""

from __future__ import annotations

import argparse
import signal
import sys


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt


def _metrics(args: argparse.Namespace) -> int:
    import time

    import dagster as dg
    from prometheus_client import generate_latest, start_http_server

    from learning_pipelines.db.engine import dagster_home, get_engine
    from learning_pipelines.definitions import defs
    from learning_pipelines.observability.exporter import build_registry, code_location_jobs

    home = dagster_home()
    if not home.is_dir():
        print(f"error: no Dagster instance at {home}; set DAGSTER_HOME to the instance's directory", file=sys.stderr)
        return 2
    with dg.DagsterInstance.from_config(str(home.resolve())) as instance:
        # Every job of the code location is exported from the first scrape, at 0 until it runs.
        jobs = code_location_jobs(defs().get_repository_def())
        registry = build_registry(instance, get_engine(args.database_url), jobs)
        if args.once:
            sys.stdout.write(generate_latest(registry).decode())
            return 0
        # Stops on SIGTERM even when started with it ignored (an ignored signal is inherited across exec: a
        # supervisor or a test runner that ignores it would otherwise leave the server running).
        signal.signal(signal.SIGTERM, _interrupted)
        server, _ = start_http_server(args.port, addr=args.host, registry=registry)
        print(f"serving Prometheus metrics on http://{args.host}:{server.server_port}/metrics", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            server.shutdown()
    return 0


def register(commands) -> None:
    metrics = commands.add_parser("metrics", help="serve Prometheus metrics from the Dagster instance and warehouse")
    metrics.add_argument("--host", default="127.0.0.1")
    metrics.add_argument("--port", type=int, default=9464)
    metrics.add_argument("--once", action="store_true", help="print one scrape to stdout and exit")
    metrics.add_argument("--database-url",
                         help="the warehouse (default: $LEARNING_PIPELINES_DATABASE_URL, else the embedded SQLite)")
    metrics.set_defaults(handler=_metrics)
