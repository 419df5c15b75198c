"""`learning-pipelines import`: review files into the warehouse, and the months they wrote told to Dagster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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


def register(commands) -> None:
    importer = commands.add_parser("import", help="import review logs (CSV, Parquet, Anki collection)")
    importer.add_argument("files", nargs="+", type=Path)
    importer.add_argument("--user-id", type=int, help="learner of files without a user_id column")
    importer.add_argument("--register-unknown", action="store_true",
                          help="create learners and concepts seen for the first time instead of rejecting them")
    importer.add_argument("--database-url", help="default: $LEARNING_PIPELINES_DATABASE_URL or the embedded SQLite")
    importer.set_defaults(handler=_import)
