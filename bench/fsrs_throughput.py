"""FSRS-6 fitting: our batched fit of many learners at once, as the fsrs_parameters asset and `fsrs fit` run it
(with the keep-or-replace rule: domain/fsrs_selection.py), against fsrs-rs-python's compute_parameters one learner
at a time, same reviews, same run. Three parts:

1. throughput and mean per-learner logloss on simulated learners (median of interleaved runs, the rule's
   replays counted), with a profile of where our fit's time goes;
2. every real collection of ../shared/data/fsrs (the one-learner file and anki/*.csv, each with its day start
   from ../shared/data/README.md): both fits on all reviews (scored on all: in-sample) and on all but the latest
   25 % (scored on those: held out), scored by the project's evaluator; the logloss ratio ours / fsrs-rs with
   its 95 % paired bootstrap interval (cards resampled);
3. small collections (2,000 to 5,000 reviews) cut from the one-learner file's cards, the same two ways;
4. the demo's learners (`make demo`'s simulation): every learner shard's tuned_not_worse_than_global check, and why
   own weights lose to the global ones where they do: each held-out prediction's expected logloss under the
   simulator's true weights (no outcome noise), for the weights the rule keeps and for every learner's fit kept.

    .venv/bin/python bench/fsrs_throughput.py [--learners 200] [--cards 90] [--repeats 5]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
from report import machine, publish  # noqa: E402

from learning_pipelines.db.tables import srs_user_params  # noqa: E402
from learning_pipelines.domain import fsrs_policy, fsrs_training  # noqa: E402
from learning_pipelines.domain.fsrs_optimizer import fit_reviews  # noqa: E402
from learning_pipelines.domain.fsrs_replay import predict_reviews  # noqa: E402
from learning_pipelines.domain.fsrs_selection import REPLACED, fit_or_keep_reviews  # noqa: E402
from learning_pipelines.domain.learner_shards import shard_of  # noqa: E402
from learning_pipelines.domain.metrics import log_loss, recall_metrics, review_log_losses  # noqa: E402
from learning_pipelines.domain.review_history import with_learner_days  # noqa: E402
from learning_pipelines.domain.simulate import simulate_platform  # noqa: E402
from tests.support.fsrs_data import (  # noqa: E402
    REAL_DATA,
    fsrs_rs_training_items,
    real_collections,
    real_reviews,
    small_collections,
)

FSRS_OPTIMIZER_LOGLOSS = 0.4505  # fsrs-optimizer 6.5.0 on the whole one-learner file (../shared/data/README.md)
CUT_SEEDS = (0, 1, 2)  # each seed shuffles the cards anew: about 4 collections per seed
HELD_OUT_SHARE = 0.25
BOOTSTRAP_RESAMPLES = 2000
# The goals of issue 28: in-sample, ours no worse than fsrs-rs beyond this ratio on any collection; held out, on
# none beyond its interval.
IN_SAMPLE_TOLERANCE = 1.003
# `make demo`'s simulation (learning_pipelines/cli/demo.py), its day fixed; the demo has 16 learner shards.
DEMO_LEARNERS, DEMO_SEED, DEMO_SHARDS = 1000, 7, 16
DEMO_AS_OF = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
# Where our fit's time goes: cProfile's cumulative time of these functions, in this order of nesting.
PROFILE_PARTS = {
    "card_histories": "layout: cards' reviews made consecutive (counting sort)",
    "training_weights": "recency weights and outlier filter",
    "validation_split": "validation split (each learner's latest quarter)",
    "pretrain_initial_stability": "pre-training of w0..w3",
    "loss_grad_fisher": "compiled replay with derivatives (loss and gradient per part, Fisher matrix)",
    "unit_losses": "compiled replay, loss only (current and default weights on the split, the last step's)",
    "solve": "Levenberg-Marquardt steps (batched 21 x 21 solves)",
}


def simulated_reviews(n_learners: int, mean_cards: float):
    platform = simulate_platform(n_learners=n_learners, n_concepts=400, n_resources=5, days=365,
                                 mean_cards_per_learner=mean_cards,
                                 as_of=dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc), seed=11)
    reviews = platform.review_logs.merge(platform.users[["user_id", "timezone", "day_start_hour"]], on="user_id")
    reviews = with_learner_days(reviews)
    return reviews.sort_values("reviewed_at", kind="stable").reset_index(drop=True)


def fsrs_rs_fit(items) -> np.ndarray:
    import fsrs_rs_python as rs

    return np.array(rs.FSRS(rs.DEFAULT_PARAMETERS).compute_parameters(items))


def ours_fit(reviews):
    """Our weights as the asset fits them (from the defaults: the weights in use of a learner without own)."""
    return fit_or_keep_reviews(reviews)[0]


def mean_learner_logloss(reviews, weights_by_user) -> float:
    predictions = predict_reviews(reviews, weights_by_user).predictions
    scored = predictions.loc[predictions["elapsed_days"] > 0]
    return float(np.mean([log_loss(g["recalled"], g["retrievability"]) for _, g in scored.groupby("user_id")]))


def throughput(reviews, repeats: int) -> dict:
    """Both fits `repeats` times, interleaved; medians. fsrs-rs's items are built once, untimed."""
    learners = {int(u): fsrs_rs_training_items(learner) for u, learner in reviews.groupby("user_id")}
    started = time.perf_counter()
    ours_fit(reviews.loc[reviews["user_id"] == reviews["user_id"].iloc[0]])
    warmup = time.perf_counter() - started
    ours_times, rs_times = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        table, selection = fit_or_keep_reviews(reviews)
        ours_times.append(time.perf_counter() - started)
        theirs, rs_seconds = {}, 0.0
        for user_id, items in learners.items():
            started = time.perf_counter()
            theirs[user_id] = fsrs_rs_fit(items)
            rs_seconds += time.perf_counter() - started
        rs_times.append(rs_seconds)
    ours = {int(u): np.array(w) for u, w in zip(table["user_id"], table["weights"])}
    return {"ours_seconds": float(np.median(ours_times)), "fsrs_rs_seconds": float(np.median(rs_times)),
            "ours_runs": ours_times, "fsrs_rs_runs": rs_times, "iterations": selection.iterations,
            "n_replaced": int(selection.replaced.sum()),
            "ours_logloss": mean_learner_logloss(reviews, ours),
            "fsrs_rs_logloss": mean_learner_logloss(reviews, theirs),
            "warmup_seconds": warmup}


def profile(reviews) -> tuple[float, list[tuple[str, float]]]:
    """One profiled fit: its total time and each PROFILE_PARTS share of it."""
    profiler = cProfile.Profile()
    profiler.runcall(fit_or_keep_reviews, reviews)
    stats = pstats.Stats(profiler).stats
    total = max(cumulative for (_, _, name), (_, _, _, cumulative, _) in stats.items() if name == "fit_or_keep_reviews")
    parts = [(label, sum(cumulative for (_, _, name), (_, _, _, cumulative, _) in stats.items() if name == function))
             for function, label in PROFILE_PARTS.items()]
    return total, parts


def scored_reviews(collection, weights, held_out_from: int | None = None):
    """The project's evaluator on one collection: its predictions (every review a day or more after the card's
    previous one; from row `held_out_from` on when given)."""
    predictions = predict_reviews(collection, {int(collection["user_id"].iloc[0]): weights}).predictions
    predictions = predictions.loc[predictions["elapsed_days"] > 0]
    if held_out_from is not None:
        predictions = predictions.loc[predictions["row"] >= held_out_from]
    return predictions


def paired_ratio(ours, theirs, card, seed: int = 0) -> tuple[float, float, float]:
    """The logloss ratio ours / theirs over the same reviews, and its 95 % bootstrap interval: whole cards
    resampled (a card's reviews are not independent draws), both fits' losses of a card together."""
    cards, card_index = np.unique(card, return_inverse=True)
    ours_by_card, theirs_by_card = np.bincount(card_index, ours), np.bincount(card_index, theirs)
    rng = np.random.default_rng(seed)
    picks = rng.multinomial(len(cards), np.full(len(cards), 1 / len(cards)), size=BOOTSTRAP_RESAMPLES)
    ratios = (picks @ ours_by_card) / (picks @ theirs_by_card)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(ours.sum() / theirs.sum()), float(low), float(high)


def both_fits(collection, held_out_from: int | None = None) -> dict:
    """Ours and fsrs-rs fitted on the collection (on its rows before `held_out_from` when given) and scored on it
    (on the rows from there on)."""
    training = collection if held_out_from is None else collection.iloc[:held_out_from]
    table = ours_fit(training)
    weights = {"ours": np.array(table.loc[0, "weights"]), "fsrs_rs": fsrs_rs_fit(fsrs_rs_training_items(training))}
    predictions = {name: scored_reviews(collection, w, held_out_from) for name, w in weights.items()}
    losses = {name: review_log_losses(p["recalled"], p["retrievability"]) for name, p in predictions.items()}
    card = collection["concept_id"].to_numpy()[predictions["ours"]["row"].to_numpy()]
    ratio, low, high = paired_ratio(losses["ours"], losses["fsrs_rs"], card)
    metrics = {name: recall_metrics(p) for name, p in predictions.items()}
    return {"n": len(card), "ratio": ratio, "low": low, "high": high, "decision": table.loc[0, "decision"],
            **{f"{name}_{key}": m[key] for name, m in metrics.items() for key in ("logloss", "rmse_bins")}}


def real_collection_scores() -> list[dict]:
    rows = []
    for name, (path, day_start_hour) in real_collections().items():
        reviews = real_reviews(path, day_start_hour)
        cut = int(len(reviews) * (1 - HELD_OUT_SHARE))
        rows.append({"name": name, "n_reviews": len(reviews), "day_start_hour": day_start_hour,
                     "in_sample": both_fits(reviews), "held_out": both_fits(reviews, cut)})
    return rows


def collection_summary(rows: list[dict]) -> dict:
    """Means over the collections and how many miss the goals: in-sample ratio above IN_SAMPLE_TOLERANCE; held
    out, the whole interval above 1."""
    summary = {}
    for way in ("in_sample", "held_out"):
        summary |= {f"{way}_mean_ratio": float(np.mean([r[way]["ratio"] for r in rows])),
                    f"{way}_ours_mean_rmse_bins": float(np.mean([r[way]["ours_rmse_bins"] for r in rows])),
                    f"{way}_fsrs_rs_mean_rmse_bins": float(np.mean([r[way]["fsrs_rs_rmse_bins"] for r in rows]))}
    summary["collections_worse"] = sum(r["in_sample"]["ratio"] > IN_SAMPLE_TOLERANCE for r in rows)
    summary["collections_worse_held_out"] = sum(r["held_out"]["low"] > 1.0 for r in rows)
    return summary


def collection_lines(rows: list[dict], summary: dict) -> list[str]:
    def cells(score: dict) -> str:
        return (f"{score['ours_logloss']:.4f} / {score['fsrs_rs_logloss']:.4f} | **{score['ratio']:.4f}** "
                f"[{score['low']:.3f}, {score['high']:.3f}] | {score['ours_rmse_bins']:.4f} / "
                f"{score['fsrs_rs_rmse_bins']:.4f}")

    def decision(score: dict) -> str:
        return "fitted" if score["decision"] == REPLACED else "defaults kept"

    lines = [
        f"Real collections (`../{REAL_DATA.relative_to(ROOT.parent.parent)}`; ../shared/data/README.md gives their sources "
        "and day starts). Each fitted by both on all its reviews and scored on the same reviews (in-sample), and "
        f"on all but its latest {100 * HELD_OUT_SHARE:.0f} % and scored on those (held out); scored reviews: a day "
        "or more after the card's previous one. Ratio: ours / fsrs-rs logloss over the same reviews, 95 % paired "
        f"bootstrap interval in brackets ({BOOTSTRAP_RESAMPLES:,} resamples of whole cards). Ours: what the "
        "rule kept (a fit, or the defaults where they beat it on the validation split).",
        "",
        "| collection | reviews | day start | in-sample logloss ours / fsrs-rs | ratio [95 %] | RMSE(bins) ours / "
        "fsrs-rs | ours | held-out scored | held-out logloss ours / fsrs-rs | ratio [95 %] | RMSE(bins) ours / "
        "fsrs-rs | ours |",
        "|---|---:|---:|---|---|---|---|---:|---|---|---|---|",
        *[f"| {r['name']} | {r['n_reviews']:,} | {r['day_start_hour']} | {cells(r['in_sample'])} | "
          f"{decision(r['in_sample'])} | {r['held_out']['n']:,} | {cells(r['held_out'])} | "
          f"{decision(r['held_out'])} |" for r in rows],
        "",
        f"Mean ratio in-sample **{summary['in_sample_mean_ratio']:.4f}**, held out "
        f"**{summary['held_out_mean_ratio']:.4f}** (goal <= 1.0 both); mean RMSE(bins) ours / fsrs-rs in-sample "
        f"{summary['in_sample_ours_mean_rmse_bins']:.4f} / {summary['in_sample_fsrs_rs_mean_rmse_bins']:.4f}, held "
        f"out {summary['held_out_ours_mean_rmse_bins']:.4f} / {summary['held_out_fsrs_rs_mean_rmse_bins']:.4f}. "
        f"Collections where ours is worse in-sample beyond {IN_SAMPLE_TOLERANCE}: **{summary['collections_worse']}**; "
        f"held out beyond the interval (its lower end above 1): **{summary['collections_worse_held_out']}** "
        f"(goal 0 both). fsrs-optimizer 6.5.0 on the one-learner file, in-sample (published figure, not run here): "
        f"{FSRS_OPTIMIZER_LOGLOSS:.4f}.",
    ]
    return lines


def small_collection_scores() -> dict:
    """Per collection cut from the one-learner file: in-sample scores of both fits, and held-out scores of fits on
    its earlier reviews."""
    rows = []
    path, day_start_hour = real_collections()["one_learner"]
    reviews = real_reviews(path, day_start_hour)
    for seed in CUT_SEEDS:
        for collection in small_collections(reviews, seed):
            cut = int(len(collection) * (1 - HELD_OUT_SHARE))
            row = {"n": len(collection)}
            for way, scores in (("", both_fits(collection)), ("held_out_", both_fits(collection, cut))):
                row |= {f"{name}_{way}{metric}": scores[f"{name}_{metric}"] for name in ("ours", "fsrs_rs")
                        for metric in ("logloss", "rmse_bins")}
            rows.append(row)
    means = {key: float(np.mean([row[key] for row in rows])) for key in rows[0] if key != "n"}
    ours_better = {f"ours_better_{metric}": sum(row[f"ours_{metric}"] <= row[f"fsrs_rs_{metric}"] for row in rows)
                   for metric in ("logloss", "rmse_bins", "held_out_logloss", "held_out_rmse_bins")}
    return {"n_collections": len(rows), "min_reviews": min(r["n"] for r in rows),
            "max_reviews": max(r["n"] for r in rows)} | means | ours_better


def demo_check() -> dict:
    """The demo's learners through the global fit and every eligible learner's keep-or-replace fit
    (fsrs_training.train, as the assets compute it), then each learner shard's held-out check. Beside it, on the
    same held-out reviews (never used for any choice), each prediction's expected logloss under the simulator's true
    weights: for the weights the rule keeps, and for every learner's fit kept (the fit started from the global
    weights on all their training reviews, as before the rule)."""
    platform = simulate_platform(n_learners=DEMO_LEARNERS, seed=DEMO_SEED, as_of=DEMO_AS_OF)
    reviews = platform.review_logs.merge(platform.users[["user_id", "timezone", "day_start_hour"]], on="user_id")
    reviews = with_learner_days(reviews.sort_values("reviewed_at", kind="stable").reset_index(drop=True))
    previous = pd.DataFrame({column.name: pd.Series(dtype="int64" if column.name == "user_id" else object)
                             for column in srs_user_params.columns})
    result = fsrs_training.train(reviews, previous, DEMO_AS_OF)
    trained, global_weights = result.learners, result.global_fit.weights
    held_out = fsrs_policy.holdout_mask(reviews)
    theirs = reviews.loc[reviews["user_id"].isin(trained.holdout_scores.index)]
    stored = trained.user_params.set_index("user_id")["weights"].dropna()
    kept = {int(u): np.array(json.loads(w)) for u, w in stored.items() if u in trained.holdout_scores.index}
    every_fit, _ = fit_reviews(theirs.loc[~held_out[theirs.index]],
                               start=np.tile(global_weights, (theirs["user_id"].nunique(), 1)))
    weight_sets = {"rule": kept, "global": {}, "every_fit": dict(zip(every_fit["user_id"], every_fit["weights"])),
                   "true": dict(zip(platform.true_weights.index, platform.true_weights.to_numpy()))}
    scored = {}
    for name, weights in weight_sets.items():
        predictions = predict_reviews(theirs, {int(u): np.asarray(w) for u, w in weights.items()},
                                      global_weights).predictions
        on = predictions["row"].isin(theirs.index[held_out[theirs.index]]) & (predictions["elapsed_days"] > 0)
        scored[name] = predictions.loc[on].set_index("row").sort_index()
    truth = np.clip(scored["true"]["retrievability"].to_numpy(), 1e-6, 1 - 1e-6)
    per_review = pd.DataFrame({"shard": shard_of(scored["rule"]["user_id"].to_numpy(), DEMO_SHARDS)})
    for name in ("rule", "global", "every_fit"):
        predicted = np.clip(scored[name]["retrievability"].to_numpy(), 1e-6, 1 - 1e-6)
        per_review[name] = review_log_losses(scored[name]["recalled"], predicted)
        per_review[f"expected_{name}"] = -(truth * np.log(predicted) + (1 - truth) * np.log(1 - predicted))
    learner_shard = shard_of(trained.holdout_scores.index.to_numpy(), DEMO_SHARDS)
    shards = per_review.groupby("shard").mean()
    shards["check_passed"] = [fsrs_training.LearnerTraining(
        trained.user_params, 0, trained.holdout_scores.loc[learner_shard == shard], DEMO_AS_OF).tuned_not_worse_than_global
        for shard in shards.index]
    means = per_review.mean()
    return {
        "n_trained": trained.n_trained, "n_replaced": trained.n_replaced, "kept": trained.kept_reasons,
        "n_held_out": len(per_review), "checks_failed": int((~shards["check_passed"]).sum()),
        "plain_comparison_failed": int((shards["rule"] > shards["global"]).sum()),
        "plain_comparison_failed_every_fit": int((shards["every_fit"] > shards["global"]).sum()),
        "expected_worse_shards_rule": int((shards["expected_rule"] > shards["expected_global"]).sum()),
        "expected_worse_shards_every_fit": int((shards["expected_every_fit"] > shards["expected_global"]).sum()),
        "expected_excess_rule": float(means["expected_rule"] - means["expected_global"]),
        "expected_excess_every_fit": float(means["expected_every_fit"] - means["expected_global"]),
        "expected_excess_rule_max_shard": float((shards["expected_rule"] - shards["expected_global"]).max()),
        "observed_excess_rule": float(means["rule"] - means["global"]),
        "observed_excess_every_fit": float(means["every_fit"] - means["global"]),
    }


def demo_lines(demo: dict) -> list[str]:
    kept = "; ".join(f"{count}: {reason.removeprefix('kept: ')}" for reason, count in demo["kept"].items())
    return [
        f"The demo's learners (`make demo`'s simulation: {DEMO_LEARNERS:,} learners, seed {DEMO_SEED}, its day fixed "
        f"at {DEMO_AS_OF.date()}), through the global fit and the keep-or-replace fits as the assets compute them: "
        f"{demo['n_trained']} learners trained, new weights kept for {demo['n_replaced']}, the weights in use for the "
        f"others ({kept}). On their "
        f"{demo['n_held_out']:,} held-out reviews (never used for a choice), each prediction's expected logloss under "
        "the simulator's true weights (no outcome noise), relative to the global weights': every learner's fit kept "
        f"**{demo['expected_excess_every_fit']:+.5f}** per review (worse than global on "
        f"{demo['expected_worse_shards_every_fit']} of {DEMO_SHARDS} shards): the fits overfit a learner's few "
        f"hundred reviews; with the rule **{demo['expected_excess_rule']:+.5f}** (worse on "
        f"{demo['expected_worse_shards_rule']} shards, by at most {demo['expected_excess_rule_max_shard']:.4f}). "
        f"Observed logloss relative to global's: every fit kept {demo['observed_excess_every_fit']:+.5f}, the rule "
        f"{demo['observed_excess_rule']:+.5f}. A plain comparison of a shard's observed held-out logloss (a few "
        f"hundred reviews) fails {demo['plain_comparison_failed']} shards with the rule "
        f"({demo['plain_comparison_failed_every_fit']} with every fit kept): at that size it is decided by the "
        "outcomes' noise; `tuned_not_worse_than_global` (worse than global beyond 1.645 standard errors of the "
        f"paired difference) fails **{demo['checks_failed']}** of {DEMO_SHARDS}.",
    ]


def relative(ours: float, reference: float) -> float:
    return ours / reference - 1


def main() -> None:
    import numba

    parser = argparse.ArgumentParser()
    parser.add_argument("--learners", type=int, default=200)
    parser.add_argument("--cards", type=float, default=90.0, help="mean cards per learner (~870 reviews at 90)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs of each fit (median counts)")
    args = parser.parse_args()
    reviews = simulated_reviews(args.learners, args.cards)
    n_reviews = len(reviews)
    run = throughput(reviews, args.repeats)
    load = os.getloadavg()  # over the timed runs: other work on the machine slows our two threads the more
    profiled_seconds, parts = profile(reviews)
    ours_rate, rs_rate = n_reviews / run["ours_seconds"], n_reviews / run["fsrs_rs_seconds"]
    speed_ratio = ours_rate / rs_rate
    logloss_relative = relative(run["ours_logloss"], run["fsrs_rs_logloss"])
    runs = ", ".join(f"{ours:.2f}/{rs:.2f}" for ours, rs in zip(run["ours_runs"], run["fsrs_rs_runs"]))
    lines = [
        f"`bench/fsrs_throughput.py`: {args.learners} simulated learners, {n_reviews:,} reviews "
        f"({n_reviews / args.learners:,.0f} per learner); ours: numpy around a numba-compiled replay kernel, "
        f"work in parallel on {numba.get_num_threads()} threads, as the fsrs_parameters asset fits (keep-or-replace "
        "rule included: the fit learns all but each learner's latest quarter of reviews, is scored against the "
        "weights in use on it, and where it wins learns that quarter too); fsrs-rs-python's `compute_parameters` one "
        "learner at a time (as it is called). Load average after the timed runs (1, 5, 15 min): "
        f"{', '.join(f'{x:.1f}' for x in load)}.",
        "",
        f"| fit (median of {args.repeats} interleaved runs) | seconds | reviews/s | mean per-learner logloss |",
        "|---|---:|---:|---:|",
        f"| ours, all learners in one batched problem ({run['iterations']} steps; new weights kept for "
        f"{run['n_replaced']} of {args.learners}) | {run['ours_seconds']:.3f} | {ours_rate:,.0f} "
        f"| {run['ours_logloss']:.4f} |",
        f"| fsrs-rs-python, one learner at a time | {run['fsrs_rs_seconds']:.3f} | {rs_rate:,.0f} "
        f"| {run['fsrs_rs_logloss']:.4f} |",
        "",
        f"Speed ratio (ours / fsrs-rs): **{speed_ratio:.2f}** (goal >= 4.5). Logloss, ours relative to fsrs-rs: "
        f"**{100 * logloss_relative:+.2f} %** (negative: ours predicts better; goal <= 0; in-sample, so the learners "
        "the rule leaves on the defaults count against ours). Runs, seconds ours/fsrs-rs: "
        f"{runs} (this machine is shared: single runs wander, the ratio within a run less).",
        "fsrs-rs time counts the calls only, not building its items; ours counts everything after the review frame "
        f"is in memory, with the kernel compiled (the untimed first call took {run['warmup_seconds']:.1f} s: it "
        "compiles, about 10 s, after an install and loads numba's on-disk cache after that). History: torch "
        "autograd + Adam 54 s here (ratio 0.01); numpy forward-mode Jacobian arrays 2.1 s (0.30); numba kernel over "
        "a padded (step, card) grid, 10 iterations 0.35 s (1.61); consecutive cards, sampled Fisher matrix, 5 steps "
        "without the rule (5.56 on 2026-12-02, on another machine; on 2026-12-07 here, the commit before the rule "
        "(29bd609) run minutes after the rule's 4.38: ours 0.104 s against 0.106 s with the rule, ratio 5.39 as "
        "fsrs-rs took 0.56 s instead of 0.47 s: the rule costs no time that shows, the ratio moves with fsrs-rs's "
        "time on this shared machine).",
        "",
        f"Where our fit's time goes (cProfile of one more fit, {profiled_seconds:.3f} s with the profiler's overhead):",
        "",
        "| part | share |",
        "|---|---:|",
        *[f"| {label} | {100 * seconds / profiled_seconds:.0f} % |" for label, seconds in parts],
        f"| the rest (frames, small numpy steps) | {100 * (1 - sum(s for _, s in parts) / profiled_seconds):.0f} % |",
        "",
        "The derivative replay is most of it: per review it carries d(stability)/dw and d(difficulty)/dw (21 numbers "
        "each) through a few 21-long vector updates and five exp/log (a recall's log loss is -decay x the log "
        "already taken for R), and adds one column to its work unit's Fisher factor (every k-th scored review's, k "
        "chosen for about 256 per work unit; one 21 x 21 Gram product per unit at the end). Loss and gradient are "
        "summed apart for the validation split, so the fit is scored on it by its own last replay. fsrs-rs, for "
        "comparison, runs 5 epochs of Adam over mini-batches, each a forward and a backward pass, one learner at a "
        "time on one thread.",
    ]
    figures = {"speed_ratio": round(speed_ratio, 3), "logloss_relative": round(logloss_relative, 5),
               "collections_worse": None, "collections_worse_held_out": None,
               "ours_reviews_per_s": round(ours_rate), "fsrs_rs_reviews_per_s": round(rs_rate),
               "ours_seconds": round(run["ours_seconds"], 4), "fsrs_rs_seconds": round(run["fsrs_rs_seconds"], 4),
               "ours_mean_logloss": round(run["ours_logloss"], 5),
               "fsrs_rs_mean_logloss": round(run["fsrs_rs_logloss"], 5), "n_new_weights_kept": run["n_replaced"],
               "repeats": args.repeats, "n_learners": args.learners, "n_reviews": n_reviews,
               "load_average_1m": round(load[0], 2),
               "profile_shares": {label: round(seconds / profiled_seconds, 3) for label, seconds in parts},
               "machine": machine()}

    if "one_learner" in real_collections():
        rows = real_collection_scores()
        summary = collection_summary(rows)
        small = small_collection_scores()
        lines += [
            "",
            *collection_lines(rows, summary),
            "",
            f"Small collections: the one-learner file's cards shuffled ({len(CUT_SEEDS)} seeds) and cut into "
            f"{small['n_collections']} collections of {small['min_reviews']:,} to {small['max_reviews']:,} reviews; "
            f"each fitted the same two ways. Means over the collections:",
            "",
            "| fit | logloss | RMSE(bins) | held-out logloss | held-out RMSE(bins) |",
            "|---|---:|---:|---:|---:|",
            *[f"| {label} | {small[f'{name}_logloss']:.4f} | {small[f'{name}_rmse_bins']:.4f} "
              f"| {small[f'{name}_held_out_logloss']:.4f} | {small[f'{name}_held_out_rmse_bins']:.4f} |"
              for name, label in (("ours", "ours"), ("fsrs_rs", "fsrs-rs-python"))],
            "",
            "Ours relative to fsrs-rs: logloss "
            f"{100 * relative(small['ours_logloss'], small['fsrs_rs_logloss']):+.2f} %, RMSE(bins) "
            f"{100 * relative(small['ours_rmse_bins'], small['fsrs_rs_rmse_bins']):+.2f} %; held out: logloss "
            f"{100 * relative(small['ours_held_out_logloss'], small['fsrs_rs_held_out_logloss']):+.2f} %, RMSE(bins) "
            f"{100 * relative(small['ours_held_out_rmse_bins'], small['fsrs_rs_held_out_rmse_bins']):+.2f} %. "
            f"Collections where ours is at least as good, of {small['n_collections']}: logloss "
            f"{small['ours_better_logloss']}, RMSE(bins) {small['ours_better_rmse_bins']}; held out: logloss "
            f"{small['ours_better_held_out_logloss']}, RMSE(bins) {small['ours_better_held_out_rmse_bins']}.",
        ]
        figures |= {
            "collections_worse": summary["collections_worse"],
            "collections_worse_held_out": summary["collections_worse_held_out"],
            "collections": {r["name"]: {way: {key: (round(value, 5) if isinstance(value, float) else value)
                                              for key, value in r[way].items()} for way in ("in_sample", "held_out")}
                            for r in rows},
            "collections_mean": {key: round(value, 5) for key, value in summary.items()
                                 if not key.startswith("collections_worse")},
            "small_collections": {key: (round(value, 5) if isinstance(value, float) else value)
                                  for key, value in small.items()},
        }
    else:
        lines += ["", f"Real collections and small collections skipped: {REAL_DATA} not found."]
    demo = demo_check()
    lines += ["", *demo_lines(demo)]
    figures["demo"] = {key: (round(value, 5) if isinstance(value, float) else value) for key, value in demo.items()}
    publish("FSRS-6 fitting throughput", lines, figures)


if __name__ == "__main__":
    main()
