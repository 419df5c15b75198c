"""FSRS-6 memory model: per-learner and global weights, card memory states, daily shadow evaluation."""

import datetime as dt
import hashlib
import json
import time

import dagster as dg
import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, reads, tables
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.domain import fsrs, fsrs_policy
from learning_pipelines.domain.fsrs_optimizer import fit_pooled, fit_reviews
from learning_pipelines.domain.fsrs_replay import predict_reviews
from learning_pipelines.domain.metrics import log_loss, recall_metrics
from learning_pipelines.domain.review_history import with_learner_days

# The pooled (global) fit sees at most this many reviews, sampled by whole cards: beyond it
# the global weights stop moving and the fit only gets slower.
GLOBAL_FIT_MAX_REVIEWS = 100_000
FSRS_EXCLUSIVE_TAG = {"learning_pipelines/exclusive": "fsrs_optimization"}
SHADOW_FIRST_DAY = "2024-01-01"


def _latest_global_weights(conn: sa.Connection) -> np.ndarray:
    row = conn.execute(sa.select(tables.fsrs_global_params.c.weights)
                       .order_by(tables.fsrs_global_params.c.version.desc()).limit(1)).scalar()
    return np.array(json.loads(row)) if row else fsrs.DEFAULT_WEIGHTS


def _own_weights(conn: sa.Connection) -> dict[int, np.ndarray]:
    params = tables.srs_user_params
    rows = conn.execute(sa.select(params.c.user_id, params.c.weights).where(params.c.weights.is_not(None)))
    return {int(user_id): np.array(json.loads(weights)) for user_id, weights in rows}


def _sample_cards(reviews: pd.DataFrame, max_reviews: int, seed: int = 0) -> pd.DataFrame:
    if len(reviews) <= max_reviews:
        return reviews
    cards = reviews[["user_id", "concept_id"]].drop_duplicates().sample(frac=1.0, random_state=seed)
    sizes = reviews.groupby(["user_id", "concept_id"]).size().reindex(pd.MultiIndex.from_frame(cards)).to_numpy()
    keep = cards.iloc[: int(np.searchsorted(np.cumsum(sizes), max_reviews)) + 1]
    return reviews.merge(keep, on=["user_id", "concept_id"])


def _holdout_logloss(predictions: pd.DataFrame, holdout_rows: pd.Index) -> pd.DataFrame:
    scored = predictions.loc[predictions["row"].isin(holdout_rows) & (predictions["elapsed_days"] > 0)]
    return scored.groupby("user_id").apply(
        lambda g: pd.Series({"logloss": log_loss(g["recalled"], g["retrievability"]), "n": len(g)}),
        include_groups=False)


@dg.asset(
    group_name="fsrs",
    deps=["review_logs"],
    kinds={"torch"},
    check_specs=[
        dg.AssetCheckSpec("weights_within_bounds", asset="fsrs_parameters", blocking=True,
                          description="Every fitted weight lies inside the FSRS-6 clamping bounds."),
        dg.AssetCheckSpec("tuned_not_worse_than_global", asset="fsrs_parameters",
                          description="On each trained learner's held-out latest reviews, own weights "
                                      "score a logloss no worse than the global weights (aggregated)."),
    ],
)
def fsrs_parameters(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Global FSRS-6 weights from everyone's reviews, and own weights for eligible learners of the
    TUNED_ELIGIBLE group (at least 300 reviews, 7-day cooldown passed). Each learner's latest 10 %
    of reviews are held out of training and used to compare own against global weights."""
    started = time.perf_counter()
    now = dt.datetime.now(dt.timezone.utc)
    with warehouse.begin() as conn:
        reviews = with_learner_days(reads.reviews_with_calendar(conn))
        previous = bulk.read_frame(conn, sa.select(tables.srs_user_params))
    holdout = fsrs_policy.holdout_mask(reviews)
    training = reviews.loc[~holdout]

    global_fit = fit_pooled(_sample_cards(training, GLOBAL_FIT_MAX_REVIEWS))
    global_weights = global_fit.weights[0]
    context.log.info(f"global weights fitted in {time.perf_counter() - started:.1f} s ({global_fit.iterations} iterations)")

    learners = reviews.groupby("user_id").size().rename("n_reviews").reset_index()
    learners["ab_group"] = fsrs_policy.ab_group(learners["user_id"])
    learners = learners.merge(previous.drop(columns=["n_reviews", "ab_group"]), on="user_id", how="left")
    for column in ("trained_at", "training_cooldown_until"):
        learners[column] = pd.to_datetime(learners[column], utc=True).astype("datetime64[us, UTC]")
    learners["weights"] = learners["weights"].astype(object)
    eligible = (learners["ab_group"] == fsrs_policy.TUNED_ELIGIBLE) & fsrs_policy.eligible_for_optimization(
        learners["n_reviews"], learners["training_cooldown_until"], now)
    to_train = learners.loc[eligible, "user_id"].to_numpy()
    context.log.info(f"{len(to_train)} learner(s) eligible for own weights, of {len(learners)}")

    holdout_scores = pd.DataFrame(columns=["own", "global", "n"])
    if len(to_train):
        fit_started = time.perf_counter()
        fitted, result = fit_reviews(training.loc[training["user_id"].isin(to_train)],
                                     start=np.tile(global_weights, (len(to_train), 1)))
        context.log.info(f"{len(to_train)} learners' weights fitted in {time.perf_counter() - fit_started:.1f} s "
                         f"({result.iterations} iterations)")
        own = {int(u): np.array(w) for u, w in zip(fitted["user_id"], fitted["weights"])}
        theirs = reviews.loc[reviews["user_id"].isin(to_train)]
        held_out = theirs.index[holdout[theirs.index]]
        own_scores = _holdout_logloss(predict_reviews(theirs, own).predictions, held_out)
        global_scores = _holdout_logloss(predict_reviews(theirs, {}, global_weights).predictions, held_out)
        holdout_scores = pd.DataFrame({"own": own_scores["logloss"], "global": global_scores["logloss"],
                                       "n": own_scores["n"]})
        trained = learners["user_id"].isin(own)
        learners.loc[trained, "weights"] = learners.loc[trained, "user_id"].map(lambda u: json.dumps(own[u].tolist()))
        learners.loc[trained, "trained_at"] = pd.Timestamp(now)
        learners.loc[trained, "training_cooldown_until"] = pd.Timestamp(now + fsrs_policy.TRAINING_COOLDOWN)
        learners.loc[trained, "logloss_before"] = learners.loc[trained, "user_id"].map(holdout_scores["global"])
        learners.loc[trained, "logloss_after"] = learners.loc[trained, "user_id"].map(holdout_scores["own"])
        learners.loc[trained, "n_holdout_reviews"] = learners.loc[trained, "user_id"].map(holdout_scores["n"])

    with warehouse.begin() as conn:
        conn.execute(tables.fsrs_global_params.insert().values(
            weights=json.dumps(global_weights.tolist()), n_reviews=int(global_fit.n_reviews.sum()),
            n_learners=int(training["user_id"].nunique()), logloss=float(global_fit.logloss_after[0]), trained_at=now))
        conn.execute(tables.srs_user_params.delete())
        bulk.bulk_insert(conn, tables.srs_user_params, learners[[c.name for c in tables.srs_user_params.columns]])

    all_weights = np.vstack([global_weights, *[np.array(json.loads(w)) for w in learners["weights"].dropna()]])
    out_of_bounds = int(((all_weights < fsrs.WEIGHT_BOUNDS[:, 0] - 1e-9) | (all_weights > fsrs.WEIGHT_BOUNDS[:, 1] + 1e-9)).any(axis=1).sum())
    n = holdout_scores["n"].astype(float)
    own_ll = float(np.average(holdout_scores["own"], weights=n)) if n.sum() else float("nan")
    global_ll = float(np.average(holdout_scores["global"], weights=n)) if n.sum() else float("nan")
    seconds = time.perf_counter() - started
    return dg.MaterializeResult(
        metadata={
            "n_learners": len(learners),
            "n_learners_trained": len(to_train),
            "n_learners_with_own_weights": int(learners["weights"].notna().sum()),
            "global_logloss": dg.MetadataValue.float(float(global_fit.logloss_after[0])),
            "holdout_logloss_own": dg.MetadataValue.float(own_ll),
            "holdout_logloss_global": dg.MetadataValue.float(global_ll),
            "global_weights": dg.MetadataValue.json([round(float(w), 4) for w in global_weights]),
            "seconds": dg.MetadataValue.float(seconds),
        },
        check_results=[
            dg.AssetCheckResult(check_name="weights_within_bounds", passed=out_of_bounds == 0,
                                metadata={"weight_vectors_out_of_bounds": out_of_bounds}),
            dg.AssetCheckResult(
                check_name="tuned_not_worse_than_global", passed=bool(not n.sum() or own_ll <= global_ll),
                metadata={"holdout_logloss_own": own_ll, "holdout_logloss_global": global_ll,
                          "n_holdout_reviews": int(n.sum()), "n_learners": len(holdout_scores)}),
        ],
    )


shadow_days = dg.DailyPartitionsDefinition(start_date=SHADOW_FIRST_DAY)


@dg.asset(group_name="fsrs", deps=["fsrs_parameters"], partitions_def=shadow_days)
def fsrs_shadow_evaluation(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Predicted against actual recall for one day's reviews, per A/B group: BASELINE_GLOBAL learners
    are scored with the global weights, TUNED_ELIGIBLE with their own (global until they have them).
    Writes one row per group to eval_metrics_daily (replacing the day's rows)."""
    window = context.partition_time_window
    day_start, day_end = window.start.astimezone(dt.timezone.utc), window.end.astimezone(dt.timezone.utc)
    with warehouse.begin() as conn:
        today = reads.reviews_with_calendar(conn, start=day_start, end=day_end)
        learners = today["user_id"].unique().tolist()
        history = with_learner_days(reads.reviews_with_calendar(conn, end=day_end, user_ids=learners)) \
            if learners else today.assign(learner_day=0)
        own = _own_weights(conn)
        global_weights = _latest_global_weights(conn)
    groups = dict(zip(learners, fsrs_policy.ab_group(learners))) if learners else {}
    tuned = {u: w for u, w in own.items() if groups.get(u) == fsrs_policy.TUNED_ELIGIBLE}
    predictions = predict_reviews(history, tuned, global_weights).predictions if len(history) else pd.DataFrame(
        columns=["row", "user_id", "retrievability", "recalled", "elapsed_days", "review_number", "lapses_before"])
    on_day = predictions.loc[history.loc[predictions["row"], "reviewed_at"].to_numpy() >= day_start] \
        if len(predictions) else predictions
    on_day = on_day.assign(ab_group=on_day["user_id"].map(groups))
    now = dt.datetime.now(dt.timezone.utc)
    rows, metadata = [], {}
    for group in (fsrs_policy.BASELINE_GLOBAL, fsrs_policy.TUNED_ELIGIBLE):
        scored = on_day.loc[(on_day["ab_group"] == group) & (on_day["elapsed_days"] > 0)]
        metrics = recall_metrics(scored) if len(scored) else {"n_reviews": 0}
        rows.append({"day": window.start.date(), "ab_group": group, "n_reviews": len(scored),
                     "n_learners": int(scored["user_id"].nunique()),
                     "logloss": metrics.get("logloss"), "brier": metrics.get("brier"), "ece": metrics.get("ece"),
                     "rmse_bins": metrics.get("rmse_bins"),
                     "mean_predicted": float(scored["retrievability"].mean()) if len(scored) else None,
                     "mean_recalled": float(scored["recalled"].mean()) if len(scored) else None,
                     "evaluated_at": now})
        metadata[f"n_reviews_{group}"] = len(scored)
        for name in ("logloss", "rmse_bins"):
            if metrics.get(name) is not None:
                metadata[f"{name}_{group}"] = dg.MetadataValue.float(float(metrics[name]))
    with warehouse.begin() as conn:
        conn.execute(tables.eval_metrics_daily.delete().where(tables.eval_metrics_daily.c.day == window.start.date()))
        bulk.bulk_insert(conn, tables.eval_metrics_daily, pd.DataFrame(rows))
    return dg.MaterializeResult(metadata=metadata)


fsrs_optimization_job = dg.define_asset_job(
    "fsrs_optimization_job", selection=["fsrs_parameters", "card_memory_states"],
    tags={**FSRS_EXCLUSIVE_TAG, "dagster/max_runtime": str(4 * 60 * 60)},
)
fsrs_shadow_evaluation_job = dg.define_asset_job("fsrs_shadow_evaluation_job", selection=["fsrs_shadow_evaluation"])


@dg.schedule(cron_schedule="0 3 * * 1", job=fsrs_optimization_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def fsrs_weekly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Weekly optimization, Monday 03:00 UTC; learners still cooling down are left as they are."""
    return dg.RunRequest(run_key=f"fsrs_weekly:{context.scheduled_execution_time:%Y-%m-%d}")


@dg.schedule(cron_schedule="30 3 * * *", job=fsrs_shadow_evaluation_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def fsrs_shadow_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Scores yesterday (UTC) every night at 03:30."""
    day = (context.scheduled_execution_time - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"fsrs_shadow:{day}", partition_key=day)


def eligible_learners(conn: sa.Connection, now: dt.datetime) -> pd.DataFrame:
    """TUNED_ELIGIBLE learners who would get own weights if the optimization ran now."""
    counts = reads.review_counts(conn)
    params = bulk.read_frame(conn, sa.select(tables.srs_user_params.c.user_id,
                                             tables.srs_user_params.c.training_cooldown_until))
    learners = counts.merge(params, on="user_id", how="left")
    learners["user_id"] = learners["user_id"].astype("int64")
    tuned = fsrs_policy.ab_group(learners["user_id"]) == fsrs_policy.TUNED_ELIGIBLE
    ok = fsrs_policy.eligible_for_optimization(learners["n_reviews"], learners["training_cooldown_until"], now)
    return learners.loc[tuned & ok, ["user_id", "n_reviews"]].sort_values("user_id").reset_index(drop=True)


@dg.sensor(job=fsrs_optimization_job, minimum_interval_seconds=3600, default_status=dg.DefaultSensorStatus.RUNNING)
def fsrs_eligibility_sensor(context: dg.SensorEvaluationContext, warehouse: Warehouse) -> dg.SensorResult:
    """Launches the optimization when learners become eligible. The run key is a fingerprint of who is
    eligible with how many reviews, so the same learners and data never launch twice."""
    with warehouse.begin() as conn:
        learners = eligible_learners(conn, dt.datetime.now(dt.timezone.utc))
    if learners.empty:
        return dg.SensorResult(skip_reason="no learner is eligible for own FSRS weights", cursor=context.cursor)
    fingerprint = hashlib.sha256(learners.to_csv(index=False).encode()).hexdigest()[:16]
    if fingerprint == context.cursor:
        return dg.SensorResult(skip_reason=f"already launched for these {len(learners)} learner(s)",
                               cursor=context.cursor)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"fsrs_eligible:{fingerprint}",
                                    tags={"fsrs/eligible_learners": str(len(learners))})],
        cursor=fingerprint,
    )
