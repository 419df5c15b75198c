"""`learning-pipelines fsrs fit|evaluate`: FSRS-6 on a review file, no warehouse needed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _fsrs(args: argparse.Namespace) -> int:
    import json
    import time

    import numpy as np

    from learning_pipelines.domain import fsrs
    from learning_pipelines.domain.fsrs_replay import predict_reviews
    from learning_pipelines.domain.fsrs_selection import REPLACED, fit_or_keep_reviews
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
    decisions = {}
    if args.fsrs_command == "fit":
        table, _ = fit_or_keep_reviews(reviews)
        weights = {int(u): np.array(w) for u, w in zip(table["user_id"], table["weights"])}
        decisions = {"n_learners_fitted": int((table["decision"] == REPLACED).sum()),
                     "kept": {str(u): d for u, d in zip(table["user_id"], table["decision"]) if d != REPLACED}}
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
                      **decisions, "seconds": round(time.perf_counter() - started, 3)}))
    return 0


def register(commands) -> None:
    fsrs_parser = commands.add_parser("fsrs", help="fit or score FSRS-6 weights on a review file (no warehouse)")
    fsrs_commands = fsrs_parser.add_subparsers(dest="fsrs_command", required=True)
    for name, help_text in (("fit", "fit weights (per learner when the file has user_id), kept where they beat the "
                                    "defaults on each learner's latest reviews, and score them"),
                            ("evaluate", "score weights (default: FSRS-6 defaults) on the file")):
        sub = fsrs_commands.add_parser(name, help=help_text)
        sub.add_argument("file", type=Path, help="columns: card_id, review_rating, review_time, review_duration [, user_id]")
        sub.add_argument("--day-start-hour", type=int, default=4, help="UTC hour at which a learner's day starts")
        if name == "fit":
            sub.add_argument("--weights-out", type=Path, help="write the fitted weights as JSON")
        else:
            sub.add_argument("--weights", type=Path, help="weights JSON written by `fsrs fit --weights-out`")
        sub.set_defaults(handler=_fsrs)
