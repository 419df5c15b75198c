"""`learning-pipelines learners forget ID...`: remove learners from every table of the warehouse."""

from __future__ import annotations

import argparse
import sys

from learning_pipelines.cli.arguments import warehouse_id


def _forget(args: argparse.Namespace) -> int:
    from learning_pipelines.db import learners
    from learning_pipelines.db.engine import get_engine

    user_ids = list(dict.fromkeys(args.user_ids))
    with get_engine(args.database_url).connect() as conn:
        transaction = conn.begin()
        removed = learners.forget(conn, user_ids)
        found = set().union(*(counts.keys() for counts in removed.values()))
        if found and not args.dry_run:
            transaction.commit()
        else:
            transaction.rollback()
    unknown = [user_id for user_id in user_ids if user_id not in found]
    if not found:
        print(f"error: no learner {', '.join(map(str, unknown))} in the warehouse (no table names them); "
              "nothing removed", file=sys.stderr)
        return 2
    named = ", ".join(str(user_id) for user_id in user_ids if user_id in found)
    print(f"{'would forget' if args.dry_run else 'forgot'} learner(s) {named} in one transaction; rows removed per table:")
    for table, counts in removed.items():
        print(f"  {table:<30} {sum(counts.values()):>12,}")
    if unknown:
        print(f"no learner {', '.join(map(str, unknown))} in the warehouse (no table names them)", file=sys.stderr)
    if args.dry_run:
        print("dry run: nothing was removed")
    return 0


def register(commands) -> None:
    learners_parser = commands.add_parser("learners", help="act on learners as a whole (privacy requests)")
    learner_commands = learners_parser.add_subparsers(dest="learners_command", required=True)
    forget = learner_commands.add_parser(
        "forget", help="remove learners from every warehouse table that holds them, in one transaction")
    forget.add_argument("user_ids", metavar="ID", type=warehouse_id, nargs="+", help="the learners' user_id")
    forget.add_argument("--dry-run", action="store_true", help="count what would be removed, remove nothing")
    forget.add_argument("--database-url", help="default: $LEARNING_PIPELINES_DATABASE_URL or the embedded SQLite")
    forget.set_defaults(handler=_forget)
