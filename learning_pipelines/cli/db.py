"""`learning-pipelines db ...`: the warehouse schema (Alembic), backup, restore, verify, partition status."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

Action = Callable[[argparse.Namespace, str], int]


def _upgrade(args: argparse.Namespace, url: str) -> int:
    from alembic.util import CommandError

    from learning_pipelines.db import migrate

    try:
        migrate.upgrade(url, args.revision)
    except CommandError as error:
        print(f"error: cannot upgrade to {args.revision}: {error}", file=sys.stderr)
        return 2
    return _current(args, url)


def _downgrade(args: argparse.Namespace, url: str) -> int:
    from alembic.script.revision import RevisionError

    from learning_pipelines.db import migrate
    from learning_pipelines.db.engine import get_engine
    from learning_pipelines.db.maintenance import shown_url

    try:
        undone = migrate.migrations_undone(get_engine(url), args.revision)
    except RevisionError as error:
        print(f"error: cannot downgrade to {args.revision}: {error}", file=sys.stderr)
        return 2
    if not undone:
        print(f"{shown_url(url)}: already at {args.revision}, nothing to undo")
        return 0
    if not args.yes:
        lines = [f"error: downgrading to {args.revision} would undo these {len(undone)} migration(s), losing what "
                 "they added (tables, columns and their rows):"]
        lines += [f"  {script.revision} {script.doc}" for script in undone]
        lines.append("back up first (`learning-pipelines db backup FILE`), then run again with --yes")
        print("\n".join(lines), file=sys.stderr)
        return 2
    migrate.downgrade(url, args.revision)
    return _current(args, url)


def _current(args: argparse.Namespace, url: str) -> int:
    from learning_pipelines.db import migrate
    from learning_pipelines.db.engine import get_engine
    from learning_pipelines.db.maintenance import shown_url

    current = migrate.current_revision(get_engine(url))
    print(f"{shown_url(url)}: at revision {current} (head {migrate.head_revision()})")
    return 0


def _backup(args: argparse.Namespace, url: str) -> int:
    from learning_pipelines.db import maintenance
    from learning_pipelines.db.engine import get_engine

    print(f"backup written to {maintenance.backup(get_engine(url), args.file)}")
    return 0


def _restore(args: argparse.Namespace, url: str) -> int:
    from learning_pipelines.db import maintenance
    from learning_pipelines.db.engine import get_engine

    if not args.file.is_file():
        print(f"error: no backup at {args.file}", file=sys.stderr)
        return 2
    engine = get_engine(url)
    if not args.yes:
        holding = maintenance.tables_holding_rows(engine)
        if holding:
            shown = ", ".join(holding[:5]) + (", ..." if len(holding) > 5 else "")
            print(f"error: {maintenance.shown_url(url)} holds rows in {len(holding)} table(s) ({shown}); restoring "
                  f"{args.file} replaces all of it with the backup: back it up first if you need it, then run "
                  "again with --yes", file=sys.stderr)
            return 2
    maintenance.restore(engine, args.file)
    print(f"restored {maintenance.shown_url(url)} from {args.file}")
    return 0


def _verify(args: argparse.Namespace, url: str) -> int:
    from learning_pipelines.db import maintenance
    from learning_pipelines.db.engine import get_engine

    problems = maintenance.verify(get_engine(url))
    for problem in problems:
        print(f"problem: {problem}")
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def _partition_status(args: argparse.Namespace, url: str) -> int:
    import json

    from learning_pipelines.db import partition_migration
    from learning_pipelines.db.engine import get_engine

    with get_engine(url).connect() as conn:
        print(json.dumps(partition_migration.progress_report(conn), indent=2, default=str))
    return 0


def _handled(action: Action) -> Callable[[argparse.Namespace], int]:
    """The subcommand against the warehouse the arguments name; a failed backup or restore becomes one line on
    stderr (password hidden) and exit 1, as a database error does at the command line's error boundary."""

    def handler(args: argparse.Namespace) -> int:
        from learning_pipelines.db.engine import resolve_database_url
        from learning_pipelines.db.maintenance import MaintenanceError

        try:
            return action(args, resolve_database_url(args.database_url))
        except MaintenanceError as error:
            print(f"error: {error}", file=sys.stderr)
        return 1

    return handler


def register(commands) -> None:
    db = commands.add_parser("db", help="the warehouse: schema (Alembic), backup, restore, verify",
                             description=__doc__)
    actions = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url",
                        help="the warehouse (default: $LEARNING_PIPELINES_DATABASE_URL, else the embedded SQLite); "
                             "a URL with a password is better given through that variable, since other local "
                             "users can read a command line")

    def add(name: str, action: Action, help: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, parents=[common], help=help, description=help)
        parser.set_defaults(handler=_handled(action))
        return parser

    upgrade = add("upgrade", _upgrade, "migrate the schema up to REVISION")
    upgrade.add_argument("revision", nargs="?", default="head",
                         help="a revision id, `head` or relative like `+1` (default: head)")
    downgrade = add("downgrade", _downgrade,
                    "migrate the schema down to REVISION, dropping what the undone migrations added "
                    "(without --yes: say what would be undone and exit 2)")
    downgrade.add_argument("revision", help="a revision id, `base` (drops every table) or relative like `-1`")
    downgrade.add_argument("--yes", action="store_true",
                           help="really downgrade, losing the tables and columns the undone migrations added")
    add("current", _current, "show the schema's revision and the head revision")
    backup = add("backup", _backup,
                 "write a consistent backup while the warehouse stays online (PostgreSQL: pg_dump custom "
                 "format; SQLite: one database file)")
    backup.add_argument("file", type=Path, help="where to write the backup (replaced only once it is complete)")
    restore = add("restore", _restore,
                  "replace everything in the warehouse with a backup, in one transaction: a restore that "
                  "fails leaves the warehouse as it was")
    restore.add_argument("file", type=Path, help="a backup written by `db backup` from the same database kind")
    restore.add_argument("--yes", action="store_true",
                         help="replace a warehouse that holds rows (without it, such a restore is refused, exit 2)")
    add("verify", _verify, "check the schema is at head, no table is missing and (PostgreSQL) every month with "
                           "reviews has its partition; exit 1 on problems")
    add("partition-status", _partition_status,
        "progress of moving review_logs to monthly partitions (PostgreSQL), as JSON")
