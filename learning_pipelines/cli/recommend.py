"""`learning-pipelines recommend USER`: a learner's recommendations and the strategy that served them."""

from __future__ import annotations

import argparse
import sys

from learning_pipelines.cli.arguments import warehouse_id


def _recommend(args: argparse.Namespace) -> int:
    import pandas as pd

    from learning_pipelines.db import learners, ncf_store
    from learning_pipelines.db.engine import get_engine

    with get_engine(args.database_url).connect() as conn:
        registered = learners.registered_learners(conn, [args.user_id])
        rows = ncf_store.learner_recommendations(conn, args.user_id)
    if not registered:
        print(f"error: no learner {args.user_id} in the warehouse", file=sys.stderr)
        return 2
    if rows.empty:
        print(f"no recommendations for user {args.user_id} (materialize `recommendations` first)", file=sys.stderr)
        return 1
    print(f"recommendations for user {args.user_id} (strategy: {rows['strategy'].iloc[0]})")
    for row in rows.itertuples():
        ncf = "—" if pd.isna(row.ncf_score) else f"{row.ncf_score:.2f}"
        print(f"{row.rank:>3}. {row.title} ({row.kind}, resource {row.resource_id})  score {row.score:.3f}  "
              f"[ncf {ncf}, content {row.content_score:.2f}, graph {row.graph_score:.2f}] {row.strategy}")
    return 0


def register(commands) -> None:
    recommend = commands.add_parser("recommend", help="print a learner's recommendations and their strategy")
    recommend.add_argument("user_id", type=warehouse_id, help="the learner's user_id")
    recommend.add_argument("--database-url")
    recommend.set_defaults(handler=_recommend)
