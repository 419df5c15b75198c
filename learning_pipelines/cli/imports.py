"""`learning-pipelines import`: review files into the warehouse, and the months they wrote told to Dagster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from learning_pipelines import errors
from learning_pipelines.cli.arguments import warehouse_id
from learning_pipelines.cli.failures import FAILED, REFUSED


def _import(args: argparse.Namespace) -> int:
    from learning_pipelines.db.engine import get_engine
    from learning_pipelines.db.maintenance import hide_password
    from learning_pipelines.db.partitions import PartitionLockTimeout
    from learning_pipelines.domain.time_zones import InvalidTimeZone
    from learning_pipelines.ingest.importer import import_review_file
    from learning_pipelines.ingest.readers import ReadLimits
    from learning_pipelines.ingest.validation import ReviewFileError

    if args.timezone is not None and not args.register_unknown:
        print("error: --timezone is the time zone of the learners --register-unknown registers: give both, or "
              "neither", file=sys.stderr)
        return REFUSED
    engine = get_engine(args.database_url)
    limits = ReadLimits(max_unpacked_bytes=args.max_unpacked_mib * 2**20, anki_read_seconds=args.anki_time_limit_s)
    status = 0
    for path in args.files:
        try:
            summary = import_review_file(engine, path, user_id=args.user_id, register_unknown=args.register_unknown,
                                         register_timezone=args.timezone or "UTC", limits=limits)
        except InvalidTimeZone as error:  # of the command, not of a file: no file is imported
            print(f"error: {error} (--timezone)", file=sys.stderr)
            return REFUSED
        except ReviewFileError as error:
            print(f"error: {errors.one_line(error)}", file=sys.stderr)
            status = max(status, REFUSED)
            continue
        except Exception as error:
            # A database error of any wrapper (pandas wraps SQLAlchemy's): this file's transaction was rolled
            # back, the next file is tried. No connection at all, or anything else, goes on to the command
            # line's error boundary (learning_pipelines/cli/__init__.py).
            failure = errors.database_failure(error)
            if isinstance(error, PartitionLockTimeout):
                reason = f"{type(error).__name__}: {errors.one_line(error)}"
            elif failure is not None and not failure.connecting:
                reason = hide_password(failure.text(), engine.url)
            else:
                raise
            print(f"error: {path}: not imported, nothing was stored (database error {reason})", file=sys.stderr)
            status = max(status, FAILED)
            continue
        print(summary.message())
        if summary.loaded_by_month:
            _tell_dagster(summary.loaded_by_month, summary.source)
    return status


def _tell_dagster(loaded_by_month: dict[str, int], source: str) -> None:
    """Report the months an import wrote to the Dagster instance, so automation sees them. The instance is found as
    every command finds it: $DAGSTER_HOME, else the repository's dagster_home/ (db.engine.dagster_home)."""
    import dagster as dg

    from learning_pipelines.dagster_reports import report_review_months
    from learning_pipelines.db.engine import dagster_home

    home = dagster_home()
    if not home.is_dir():
        print(f"note: no Dagster instance at {home} (set DAGSTER_HOME to the instance's directory), so Dagster was "
              f"not told of the months written ({', '.join(m[:7] for m in sorted(loaded_by_month))}): "
              "review_logs_arrivals_sensor reports them within a minute where it runs (schedules and sensors are on "
              "with LEARNING_PIPELINES_AUTOMATION=on, as in the production stack), or materialize review_logs for "
              "those months", file=sys.stderr)
        return
    with dg.DagsterInstance.from_config(str(home.resolve())) as instance:
        months = report_review_months(instance, loaded_by_month, source)
    print(f"  reported to Dagster: review_logs {', '.join(m[:7] for m in months)} (instance {home})")


def register(commands) -> None:
    importer = commands.add_parser("import", help="import review logs (CSV, Parquet, Anki collection)")
    importer.add_argument("files", nargs="+", type=Path, help="review files: .csv/.tsv, .parquet, .anki2/.colpkg/.apkg")
    importer.add_argument("--user-id", type=warehouse_id, help="learner of files without a user_id column")
    importer.add_argument("--register-unknown", action="store_true",
                          help="create learners and concepts (positive ids) seen for the first time instead of "
                               "rejecting them")
    importer.add_argument("--timezone", metavar="ZONE",
                          help="time zone of the learners --register-unknown registers: an IANA key as tzdata spells "
                               "it, e.g. America/New_York (default UTC)")
    importer.add_argument("--max-unpacked-mib", type=int, default=512,
                          help="refuse an Anki package whose collection unpacks to more than this (default 512)")
    importer.add_argument("--anki-time-limit-s", type=float, default=120.0,
                          help="refuse an Anki collection whose revlog takes longer than this to read (default 120)")
    importer.add_argument("--database-url", help="default: $LEARNING_PIPELINES_DATABASE_URL or the embedded SQLite")
    importer.set_defaults(handler=_import)
