"""`learning-pipelines rejects [--file F] [--limit N]`: the rows imports (and the review_logs asset) rejected, with
their line numbers, reasons and raw text, from review_log_rejects."""

from __future__ import annotations

import argparse
import sys


def _rejects(args: argparse.Namespace) -> int:
    from learning_pipelines.db.engine import get_engine
    from learning_pipelines.db.review_rejects import rejects_of, sources_like

    with get_engine(args.database_url).connect() as conn:
        found = rejects_of(conn, args.file, args.limit)
        near = sources_like(conn, args.file.rsplit("/", 1)[-1]) if args.file and not found.total else []
    if not found.total:
        what = f"for {args.file}" if args.file else "in the warehouse"
        hint = f"; rejects were recorded for {', '.join(near)} (--file takes the path the import was given)" if near \
            else ""
        print(f"no rejected rows {what}{hint}")
        return 0
    for row in found.rows:
        line = f"line {row['line_number']}" if row["line_number"] is not None else "whole file"
        print(f"{row['source']}: {line}: {row['reason']}")
        print(f"    raw: {row['raw_row']}")
    if found.total > len(found.rows):
        print(f"{len(found.rows)} of {found.total} rejected rows shown (--limit N shows more)", file=sys.stderr)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs at least 1, not {value}")
    return value


def register(commands) -> None:
    rejects = commands.add_parser("rejects", help="list rejected review rows: line, reason, raw text")
    rejects.add_argument("--file", metavar="F", help="only the rejects of this file, by the path its import was given "
                                                     "(default: the latest rejects of every file)")
    rejects.add_argument("--limit", metavar="N", type=_positive, default=20, help="at most N rows (default 20)")
    rejects.add_argument("--database-url", help="default: $LEARNING_PIPELINES_DATABASE_URL or the embedded SQLite")
    rejects.set_defaults(handler=_rejects)
