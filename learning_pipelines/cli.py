"""`learning-pipelines`: the command line of the code location."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from learning_pipelines.db import migrate
    from learning_pipelines.demo import run_demo

    migrate.upgrade()
    print(run_demo(args.learners, args.seed, materialize=not args.no_materialize).render())
    return 0


def _import(args: argparse.Namespace) -> int:
    from learning_pipelines.db.engine import get_engine
    from learning_pipelines.ingest.importer import import_review_file
    from learning_pipelines.ingest.validation import ReviewFileError

    engine = get_engine(args.database_url)
    status = 0
    for path in args.files:
        try:
            summary = import_review_file(engine, path, user_id=args.user_id, register_unknown=args.register_unknown)
        except ReviewFileError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 2
            continue
        print(summary.message())
        if summary.loaded_by_month:
            _tell_dagster(summary.loaded_by_month, summary.source)
    return status


def _tell_dagster(loaded_by_month: dict[str, int], source: str) -> None:
    """Report the months an import wrote to the Dagster instance ($DAGSTER_HOME), so automation sees them."""
    import os

    import dagster as dg

    from learning_pipelines.dagster_reports import report_review_months

    if not os.environ.get("DAGSTER_HOME"):
        print("note: DAGSTER_HOME is not set, so Dagster was not told about these reviews; the "
              "review_logs_arrivals_sensor will notice them", file=sys.stderr)
        return
    with dg.DagsterInstance.get() as instance:
        months = report_review_months(instance, loaded_by_month, source)
    print(f"  reported to Dagster: review_logs {', '.join(m[:7] for m in months)}")


def _db(args: argparse.Namespace) -> int:
    from learning_pipelines.db import migrate
    from learning_pipelines.db.engine import get_engine, resolve_database_url

    from learning_pipelines.db import maintenance

    engine = get_engine(args.database_url)
    if args.db_command in ("backup", "restore"):
        if not args.revision:
            print(f"error: db {args.db_command} needs a file", file=sys.stderr)
            return 2
        if args.db_command == "backup":
            print(f"backup written to {maintenance.backup(engine, Path(args.revision))}")
        else:
            maintenance.restore(engine, Path(args.revision))
            print(f"restored {resolve_database_url(args.database_url)} from {args.revision}")
        return 0
    if args.db_command == "partition-status":
        import json

        from learning_pipelines.db import partition_migration

        with engine.connect() as conn:
            print(json.dumps(partition_migration.progress_report(conn), indent=2, default=str))
        return 0
    if args.db_command == "verify":
        problems = maintenance.verify(engine)
        for problem in problems:
            print(f"problem: {problem}")
        print("ok" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    if args.db_command == "upgrade":
        migrate.upgrade(args.database_url, args.revision)
    elif args.db_command == "downgrade":
        migrate.downgrade(args.database_url, args.revision)
    current = migrate.current_revision(engine)
    print(f"{resolve_database_url(args.database_url)}: at revision {current} (head {migrate.head_revision()})")
    return 0


def _fsrs(args: argparse.Namespace) -> int:
    import json
    import time

    import numpy as np

    from learning_pipelines.domain import fsrs
    from learning_pipelines.domain.fsrs_optimizer import fit_reviews
    from learning_pipelines.domain.fsrs_replay import predict_reviews
    from learning_pipelines.domain.metrics import recall_metrics
    from learning_pipelines.ingest.review_frames import read_valid_reviews
    from learning_pipelines.ingest.validation import ReviewFileError

    try:
        reviews, rejects = read_valid_reviews(args.file, args.day_start_hour)
    except ReviewFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if len(rejects):
        print(f"{len(rejects)} row(s) rejected; first: line {rejects['line_number'].iloc[0]}: "
              f"{rejects['reason'].iloc[0]}", file=sys.stderr)
    started = time.perf_counter()
    if args.fsrs_command == "fit":
        table, _ = fit_reviews(reviews)
        weights = {int(u): np.array(w) for u, w in zip(table["user_id"], table["weights"])}
        default = fsrs.DEFAULT_WEIGHTS
        if args.weights_out:
            Path(args.weights_out).write_text(json.dumps(
                {"model": "FSRS-6", "day_start_hour": args.day_start_hour,
                 "learners": {str(u): w.tolist() for u, w in weights.items()}}, indent=1))
    else:
        saved = json.loads(Path(args.weights).read_text()) if args.weights else {"learners": {}}
        weights = {int(u): np.array(w) for u, w in saved.get("learners", {}).items()}
        default = np.array(saved.get("global", fsrs.DEFAULT_WEIGHTS))
    metrics = recall_metrics(predict_reviews(reviews, weights, default).predictions)
    print(json.dumps({**metrics, "n_learners": int(reviews["user_id"].nunique()), "n_rejected": len(rejects),
                      "seconds": round(time.perf_counter() - started, 3)}))
    return 0


def _metrics(args: argparse.Namespace) -> int:
    import time

    import dagster as dg
    from prometheus_client import generate_latest, start_http_server

    from learning_pipelines.db.engine import get_engine
    from learning_pipelines.observability.exporter import build_registry

    instance = dg.DagsterInstance.get()
    registry = build_registry(instance, get_engine(args.database_url))
    if args.once:
        sys.stdout.write(generate_latest(registry).decode())
        return 0
    server, _ = start_http_server(args.port, addr=args.host, registry=registry)
    print(f"serving Prometheus metrics on http://{args.host}:{server.server_port}/metrics", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
    return 0


def _recommend(args: argparse.Namespace) -> int:
    import pandas as pd

    from learning_pipelines.db import ncf_store
    from learning_pipelines.db.engine import get_engine

    with get_engine(args.database_url).connect() as conn:
        rows = ncf_store.learner_recommendations(conn, args.user_id)
    if rows.empty:
        print(f"no recommendations for user {args.user_id} (materialize `recommendations` first)", file=sys.stderr)
        return 1
    print(f"recommendations for user {args.user_id} (strategy: {rows['strategy'].iloc[0]})")
    for row in rows.itertuples():
        ncf = "—" if pd.isna(row.ncf_score) else f"{row.ncf_score:.2f}"
        print(f"{row.rank:>3}. {row.title} ({row.kind}, resource {row.resource_id})  score {row.score:.3f}  "
              f"[ncf {ncf}, content {row.content_score:.2f}, graph {row.graph_score:.2f}] {row.strategy}")
    return 0


def _ncf(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    import pandas as pd

    from learning_pipelines.domain.ncf import NcfConfig, evaluate_neumf

    if args.format == "movielens":
        interactions = pd.read_csv(args.file, sep="\t", names=["user", "item", "rating", "time"])
    else:
        interactions = pd.read_csv(args.file)
        missing = {"user", "item"} - set(interactions.columns)
        if missing:
            print(f"error: {args.file}: missing column(s) {', '.join(sorted(missing))} (need user, item[, time])",
                  file=sys.stderr)
            return 2
        if "time" not in interactions:
            interactions["time"] = range(len(interactions))  # file order is time order
    config = dataclasses.replace(NcfConfig(), seed=args.seed, **({"epochs": args.epochs} if args.epochs else {}))
    print(json.dumps(evaluate_neumf(interactions, config)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="learning-pipelines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="load simulated learners and materialize every asset")
    demo.add_argument("--learners", type=int, default=1000)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--no-materialize", action="store_true", help="only load the simulated data")
    demo.set_defaults(handler=_demo)

    importer = commands.add_parser("import", help="import review logs (CSV, Parquet, Anki collection)")
    importer.add_argument("files", nargs="+", type=Path)
    importer.add_argument("--user-id", type=int, help="learner of files without a user_id column")
    importer.add_argument("--register-unknown", action="store_true",
                          help="create learners and concepts seen for the first time instead of rejecting them")
    importer.add_argument("--database-url", help="default: $LEARNING_PIPELINES_DATABASE_URL or the embedded SQLite")
    importer.set_defaults(handler=_import)

    fsrs_parser = commands.add_parser("fsrs", help="fit or score FSRS-6 weights on a review file (no warehouse)")
    fsrs_commands = fsrs_parser.add_subparsers(dest="fsrs_command", required=True)
    for name, help_text in (("fit", "fit weights (per learner when the file has user_id) and score them"),
                            ("evaluate", "score weights (default: FSRS-6 defaults) on the file")):
        sub = fsrs_commands.add_parser(name, help=help_text)
        sub.add_argument("file", type=Path, help="columns: card_id, review_rating, review_time, review_duration [, user_id]")
        sub.add_argument("--day-start-hour", type=int, default=4, help="UTC hour at which a learner's day starts")
        if name == "fit":
            sub.add_argument("--weights-out", type=Path, help="write the fitted weights as JSON")
        else:
            sub.add_argument("--weights", type=Path, help="weights JSON written by `fsrs fit --weights-out`")
        sub.set_defaults(handler=_fsrs)

    recommend = commands.add_parser("recommend", help="print a learner's recommendations and their strategy")
    recommend.add_argument("user_id", type=int)
    recommend.add_argument("--database-url")
    recommend.set_defaults(handler=_recommend)

    ncf_parser = commands.add_parser("ncf", help="NCF on any interactions file (no warehouse)")
    ncf_commands = ncf_parser.add_subparsers(dest="ncf_command", required=True)
    ncf_eval = ncf_commands.add_parser("evaluate", help="train NeuMF and score it under leave-one-out (HR@10, NDCG@10)")
    ncf_eval.add_argument("file", type=Path)
    ncf_eval.add_argument("--format", choices=["movielens", "csv"], default="movielens",
                          help="movielens: tab-separated user, item, rating, time; csv: columns user, item[, time]")
    ncf_eval.add_argument("--seed", type=int, default=7)
    ncf_eval.add_argument("--epochs", type=int, help="default: the model's configured epochs")
    ncf_eval.set_defaults(handler=_ncf)

    metrics = commands.add_parser("metrics", help="serve Prometheus metrics from the Dagster instance and warehouse")
    metrics.add_argument("--host", default="127.0.0.1")
    metrics.add_argument("--port", type=int, default=9464)
    metrics.add_argument("--once", action="store_true", help="print one scrape to stdout and exit")
    metrics.add_argument("--database-url")
    metrics.set_defaults(handler=_metrics)

    db = commands.add_parser("db", help="warehouse schema (Alembic)")
    db.add_argument("db_command", choices=["upgrade", "downgrade", "current", "backup", "restore", "verify",
                                              "partition-status"])
    db.add_argument("revision", nargs="?", default=None,
                    help="upgrade/downgrade: the revision (default head/base); backup/restore: the file")
    db.add_argument("--database-url")
    db.set_defaults(handler=_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "db_command", None) in ("upgrade", "downgrade") and args.revision is None:
        args.revision = "head" if args.db_command == "upgrade" else "base"
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
