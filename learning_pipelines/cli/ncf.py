"""`learning-pipelines ncf evaluate`: NeuMF on any interactions file, no warehouse needed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _ncf(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import logging

    import pandas as pd

    from learning_pipelines.domain.ncf_config import NcfConfig
    from learning_pipelines.domain.ncf_fit import evaluate_neumf
    from learning_pipelines.domain.ncf_search import progress

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
    # Progress on stderr (the scores alone on stdout): a search on MovieLens-1M takes minutes.
    shown = logging.StreamHandler(sys.stderr)
    shown.setFormatter(logging.Formatter("ncf: %(message)s"))
    progress.addHandler(shown)
    progress.setLevel(logging.INFO)
    # As ncf_model trains by default: the configuration chosen on validation, unless --epochs fixes one.
    config = dataclasses.replace(NcfConfig(), seed=args.seed, epochs=args.epochs) if args.epochs else None
    print(json.dumps(evaluate_neumf(interactions, config, seed=args.seed)))
    return 0


def register(commands) -> None:
    ncf_parser = commands.add_parser("ncf", help="NCF on any interactions file (no warehouse)")
    ncf_commands = ncf_parser.add_subparsers(dest="ncf_command", required=True)
    ncf_eval = ncf_commands.add_parser("evaluate", help="train NeuMF and score it under leave-one-out (HR@10, NDCG@10)")
    ncf_eval.add_argument("file", type=Path)
    ncf_eval.add_argument("--format", choices=["movielens", "csv"], default="movielens",
                          help="movielens: tab-separated user, item, rating, time; csv: columns user, item[, time]")
    ncf_eval.add_argument("--seed", type=int, default=7)
    ncf_eval.add_argument("--epochs", type=int,
                          help="train the default configuration this many epochs; default: choose the configuration "
                               "and epochs on each user's second-latest interaction, as ncf_model does")
    ncf_eval.set_defaults(handler=_ncf)
