"""`learning-pipelines db ...`: the warehouse schema (Alembic), backup, restore, verify, partition status."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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


def register(commands) -> None:
    db = commands.add_parser("db", help="warehouse schema (Alembic)")
    db.add_argument("db_command", choices=["upgrade", "downgrade", "current", "backup", "restore", "verify",
                                              "partition-status"])
    db.add_argument("revision", nargs="?", default=None,
                    help="upgrade/downgrade: the revision (default head/base); backup/restore: the file")
    db.add_argument("--database-url")
    db.set_defaults(handler=_db)
