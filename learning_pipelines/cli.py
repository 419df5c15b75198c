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
    return status


def _db(args: argparse.Namespace) -> int:
    from learning_pipelines.db import migrate
    from learning_pipelines.db.engine import get_engine, resolve_database_url

    if args.db_command == "upgrade":
        migrate.upgrade(args.database_url, args.revision)
    elif args.db_command == "downgrade":
        migrate.downgrade(args.database_url, args.revision)
    current = migrate.current_revision(get_engine(args.database_url))
    print(f"{resolve_database_url(args.database_url)}: at revision {current} (head {migrate.head_revision()})")
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

    db = commands.add_parser("db", help="warehouse schema (Alembic)")
    db.add_argument("db_command", choices=["upgrade", "downgrade", "current"])
    db.add_argument("revision", nargs="?", default=None)
    db.add_argument("--database-url")
    db.set_defaults(handler=_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "db_command", None) and args.revision is None:
        args.revision = "head" if args.db_command == "upgrade" else "base"
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
