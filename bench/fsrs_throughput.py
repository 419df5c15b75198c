"""FSRS-6 fitting throughput: our batched torch fit of many learners at once against fsrs-rs-python's
compute_parameters one learner at a time, same simulated reviews, same run.

    .venv/bin/python bench/fsrs_throughput.py [--learners 200] [--cards 90]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import publish  # noqa: E402

from learning_pipelines.domain.fsrs_optimizer import fit_reviews  # noqa: E402
from learning_pipelines.domain.fsrs_replay import predict_reviews  # noqa: E402
from learning_pipelines.domain.metrics import log_loss  # noqa: E402
from learning_pipelines.domain.review_history import with_learner_days  # noqa: E402
from learning_pipelines.domain.simulate import simulate_platform  # noqa: E402


def simulated_reviews(n_learners: int, mean_cards: float):
    platform = simulate_platform(n_learners=n_learners, n_concepts=400, n_resources=5, days=365,
                                 mean_cards_per_learner=mean_cards,
                                 as_of=dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc), seed=11)
    reviews = platform.review_logs.merge(platform.users[["user_id", "timezone", "day_start_hour"]], on="user_id")
    reviews = with_learner_days(reviews)
    return reviews.sort_values("reviewed_at", kind="stable").reset_index(drop=True)


def fsrs_rs_items(learner):
    import fsrs_rs_python as rs
    import numba

    items = []
    for _, card in learner.groupby("concept_id", sort=False):
        days = card["learner_day"].to_numpy()
        delta = np.diff(days, prepend=days[0])
        history = [rs.FSRSReview(int(r), int(d)) for r, d in zip(card["rating"], delta)]
        items += [rs.FSRSItem(history[: i + 1]) for i in range(1, len(history)) if (delta[1: i + 1] > 0).any()]
    return items


def mean_learner_logloss(reviews, weights_by_user) -> float:
    predictions = predict_reviews(reviews, weights_by_user).predictions
    scored = predictions.loc[predictions["elapsed_days"] > 0]
    return float(np.mean([log_loss(g["recalled"], g["retrievability"]) for _, g in scored.groupby("user_id")]))


REPEATS = 3


def main() -> None:
    import fsrs_rs_python as rs
    import numba

    parser = argparse.ArgumentParser()
    parser.add_argument("--learners", type=int, default=200)
    parser.add_argument("--cards", type=float, default=90.0, help="mean cards per learner (~1,000 reviews at 90)")
    args = parser.parse_args()
    reviews = simulated_reviews(args.learners, args.cards)
    n_reviews = len(reviews)

    # The kernel compiles on the first call after an install (then cached on disk): timed apart.
    started = time.perf_counter()
    fit_reviews(reviews.loc[reviews["user_id"] == reviews["user_id"].iloc[0]])
    warmup_seconds = time.perf_counter() - started
    # Both sides run REPEATS times, interleaved; the median time counts (this machine's timings wander).
    ours_times, rs_times = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        table, result = fit_reviews(reviews)
        ours_times.append(time.perf_counter() - started)
        theirs, rs_seconds = {}, 0.0
        for user_id, learner in reviews.groupby("user_id"):
            items = fsrs_rs_items(learner)
            started = time.perf_counter()
            theirs[int(user_id)] = np.array(rs.FSRS(rs.DEFAULT_PARAMETERS).compute_parameters(items))
            rs_seconds += time.perf_counter() - started
        rs_times.append(rs_seconds)
    ours_seconds, rs_seconds = float(np.median(ours_times)), float(np.median(rs_times))
    ours = {int(u): np.array(w) for u, w in zip(table["user_id"], table["weights"])}

    ours_ll, rs_ll = mean_learner_logloss(reviews, ours), mean_learner_logloss(reviews, theirs)
    ours_rate, rs_rate = n_reviews / ours_seconds, n_reviews / rs_seconds
    lines = [
        f"`bench/fsrs_throughput.py`: {args.learners} simulated learners, {n_reviews:,} reviews "
        f"({n_reviews / args.learners:,.0f} per learner); ours: numpy around a numba-compiled replay kernel, "
        f"learners in parallel on {numba.get_num_threads()} threads.",
        "",
        f"| fit (median of {REPEATS} runs) | seconds | reviews/s | mean per-learner logloss |",
        "|---|---:|---:|---:|",
        f"| ours, all learners in one batched problem ({result.iterations} iterations) | {ours_seconds:.2f} "
        f"| {ours_rate:,.0f} | {ours_ll:.4f} |",
        f"| fsrs-rs-python `compute_parameters`, one learner at a time | {rs_seconds:.2f} | {rs_rate:,.0f} | {rs_ll:.4f} |",
        "",
        f"Speed ratio (ours / fsrs-rs): **{ours_rate / rs_rate:.2f}** (goal >= 1). "
        f"Logloss, ours relative to fsrs-rs: {100 * (ours_ll - rs_ll) / rs_ll:+.2f} % (negative: ours predicts better; "
        "goal: no more than 1 % worse).",
        "fsrs-rs time counts the calls only, not building its items; ours counts everything after the "
        f"review frame is in memory, with the kernel compiled (the untimed first call took {warmup_seconds:.1f} s: it "
        "compiles, about 8 s, after an install and loads numba's on-disk cache after that). History: torch autograd + Adam took 54 s here (ratio 0.01); numpy with "
        "forward-mode Jacobian arrays 2.1 s (ratio 0.30).",
    ]
    publish("FSRS-6 fitting throughput", lines)


if __name__ == "__main__":
    main()
