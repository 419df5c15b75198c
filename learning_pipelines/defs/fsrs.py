"""FSRS-6 memory model: global weights fitted once, own weights per learner shard, their checks, the daily
shadow evaluation."""

import datetime as dt
import hashlib
import json
import time

import dagster as dg
from pydantic import Field

from learning_pipelines import pause_points, settings
from learning_pipelines.db import fsrs_params, learner_locks, memory_states as memory_state_store, reads
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.memory_state_replay import REPLAY_LEARNER_CHUNK, replay_learners
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.retries import retry_lost_races
from learning_pipelines.defs.review_logs import review_logs
from learning_pipelines.defs.table_metadata import preview, written_table
from learning_pipelines.domain import fsrs_policy, fsrs_training
from learning_pipelines.domain.fsrs_optimizer import FitConfig
from learning_pipelines.domain.learner_shards import shard_of
from learning_pipelines.domain.memory_states import LearnerWeights
from learning_pipelines.observability.structured_logs import asset_logger

SHADOW_FIRST_DAY = "2024-01-01"


class GlobalFitConfig(dg.Config):
    """How far the pooled fit goes (defaults: domain.fsrs_training's and fsrs_optimizer.FitConfig's)."""

    global_fit_iterations: int = Field(FitConfig.max_iterations, description="most Levenberg-Marquardt iterations "
                                       "of the pooled global fit")
    global_fit_max_reviews: int = Field(fsrs_training.GLOBAL_FIT_MAX_REVIEWS, description="most reviews the "
                                        "pooled fit sees, sampled by whole learners, then whole cards")

    def to_training_config(self) -> fsrs_training.TrainingConfig:
        return fsrs_training.TrainingConfig(self.global_fit_max_reviews,
                                            global_fit=FitConfig(max_iterations=self.global_fit_iterations))


class ShardFitConfig(dg.Config):
    """How far one learner shard's fits go, and how many learners its replay reads at once."""

    own_fit_iterations: int = Field(FitConfig.max_iterations, description="most Levenberg-Marquardt iterations of "
                                    "each eligible learner's own fit")
    learner_chunk: int = Field(REPLAY_LEARNER_CHUNK, description="learners whose memory states are replayed per "
                               "read after their weights changed")

    def to_training_config(self) -> fsrs_training.TrainingConfig:
        return fsrs_training.TrainingConfig(own_fit=FitConfig(max_iterations=self.own_fit_iterations))


@dg.asset(
    group_name="fsrs",
    deps=[review_logs],
    kinds={"python", "sql"},
    pool="fsrs_optimization",
    owners=["team:learning-intelligence"],
    metadata=written_table("fsrs_global_params"),
    check_specs=[dg.AssetCheckSpec("weights_within_bounds", asset="fsrs_global_parameters", blocking=True,
                                   description="The new global weights lie inside the FSRS-6 clamping bounds.")],
)
def fsrs_global_parameters(context: dg.AssetExecutionContext, config: GlobalFitConfig,
                           warehouse: Warehouse) -> dg.MaterializeResult:
    """Global FSRS-6 weights, fitted once on a sample of learners' reviews (outside each learner's held-out
    latest 10 %): a new fsrs_global_params version, the weights of every learner without own ones and the
    start of every own fit. Each run is followed by every learner shard of fsrs_parameters."""
    started = time.perf_counter()
    with warehouse.begin() as conn:
        sample = fsrs_params.global_training_sample(conn, config.global_fit_max_reviews)
    if sample.empty:
        raise dg.Failure(description="review_logs holds no review: import reviews first "
                                     "(learning-pipelines import reviews FILE).", allow_retries=False)
    fit = fsrs_training.fit_global(sample, dt.datetime.now(dt.timezone.utc), config.to_training_config(),
                                   log=asset_logger(context).info)
    out_of_bounds = fsrs_training.weight_vectors_out_of_bounds(LearnerWeights(fit.weights, "", {}, {}))
    with warehouse.begin() as conn:
        version = fsrs_params.record_global_fit(conn, fit)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": 1,
        "version": version,
        "global_logloss": dg.MetadataValue.float(fit.logloss),
        "n_reviews_fitted": fit.n_reviews,
        "n_learners_sampled": fit.n_learners,
        "global_weights": dg.MetadataValue.json([round(float(w), 4) for w in fit.weights]),
        "seconds": dg.MetadataValue.float(time.perf_counter() - started),
    }, data_version=dg.DataVersion(str(version)), check_results=[dg.AssetCheckResult(
        check_name="weights_within_bounds", passed=out_of_bounds == 0,
        metadata={"weight_vectors_out_of_bounds": out_of_bounds})])


@dg.asset(
    group_name="fsrs",
    deps=[dg.AssetDep(review_logs, partition_mapping=dg.AllPartitionMapping()), fsrs_global_parameters],
    partitions_def=learner_shards,
    kinds={"python", "sql"},
    owners=["team:learning-intelligence"],
    metadata=written_table("srs_user_params", "card_memory_states"),
    check_specs=[dg.AssetCheckSpec("tuned_not_worse_than_global", asset="fsrs_parameters",
                                   description="On the shard's trained learners' held-out latest reviews, own "
                                               "weights score a logloss no worse than the global weights."),
                 # In the asset's own step, on what it has just stored: one Celery task per shard, not two.
                 dg.AssetCheckSpec("weights_within_bounds", asset="fsrs_parameters", blocking=True,
                                   description="The latest global weights and the shard's learners' own weights, as "
                                               "stored, lie inside the FSRS-6 clamping bounds.")],
)
@retry_lost_races
def fsrs_parameters(context: dg.AssetExecutionContext, config: ShardFitConfig,
                    warehouse: Warehouse) -> dg.MaterializeResult:
    """One learner shard's own FSRS-6 weights: eligible TUNED_ELIGIBLE learners (at least 300 reviews,
    7-day cooldown passed) are fitted from the latest global weights, each scored against them on their
    held-out latest 10 % of reviews. The shard's srs_user_params rows and the memory states of its
    learners now on other weights (replayed in full) switch together in one transaction, so a re-run or a
    redelivered step replaces exactly the shard's rows."""
    started = time.perf_counter()
    with warehouse.begin() as conn:
        learners = reads.shard_learners(conn, context.partition_key)
        global_weights = fsrs_params.latest_global_weights(conn)
        inputs = fsrs_params.training_inputs(conn, learners)
    if global_weights is None:
        raise dg.Failure(description="no global FSRS weights yet: materialize fsrs_global_parameters first "
                                     "(fsrs_global_job).", allow_retries=False)
    trained = fsrs_training.train_learners(inputs.reviews, inputs.previous, global_weights,
                                           dt.datetime.now(dt.timezone.utc), config.to_training_config(),
                                           log=asset_logger(context).info)
    pause_points.reached("fsrs_parameters.fitted")
    with warehouse.begin() as conn:
        # In db/learner_locks' order: the learners that still exist (locked against `learners forget` until
        # commit), then card_memory_states' shared lock.
        existing = learner_locks.lock_existing(conn, learners)
        memory_state_store.lock_learners(conn)
        fsrs_params.replace_learner_params(conn, learners,
                                           trained.user_params.loc[trained.user_params["user_id"].isin(existing)])
        pause_points.reached("fsrs_parameters.weights_written")
        weights = memory_state_store.current_weights(conn, existing).weights
        stale = memory_state_store.learners_on_other_weights(conn, weights, existing)
        replay_learners(conn, stale, weights, config.learner_chunk)
        pause_points.reached("fsrs_parameters.before_commit")
    out_of_bounds = fsrs_training.weight_vectors_out_of_bounds(weights)
    own_ll, global_ll = trained.holdout_logloss_own, trained.holdout_logloss_global
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(trained.user_params),
            "preview": preview(trained.user_params.loc[trained.user_params["weights"].notna()],
                               ["user_id", "n_reviews", "ab_group", "logloss_before", "logloss_after"]),
            "n_learners": len(learners),
            "n_learners_with_reviews": len(trained.user_params),
            "n_learners_trained": trained.n_trained,
            "n_learners_with_own_weights": trained.n_learners_with_own_weights,
            "learners_replayed": len(stale),
            "holdout_logloss_own": dg.MetadataValue.float(own_ll),
            "holdout_logloss_global": dg.MetadataValue.float(global_ll),
            "seconds": dg.MetadataValue.float(time.perf_counter() - started),
        },
        check_results=[dg.AssetCheckResult(
            check_name="tuned_not_worse_than_global", passed=trained.tuned_not_worse_than_global,
            metadata={"holdout_logloss_own": own_ll, "holdout_logloss_global": global_ll,
                      "n_holdout_reviews": trained.n_holdout_reviews, "n_learners": len(trained.holdout_scores)}),
            dg.AssetCheckResult(check_name="weights_within_bounds", passed=out_of_bounds == 0,
                                metadata={"weight_vectors_out_of_bounds": out_of_bounds})],
    )


shadow_days = dg.DailyPartitionsDefinition(start_date=SHADOW_FIRST_DAY)


@dg.asset(group_name="fsrs", deps=[dg.AssetDep(fsrs_parameters, partition_mapping=dg.AllPartitionMapping())],
          partitions_def=shadow_days, kinds={"python", "sql"},
          owners=["team:learning-intelligence"], metadata=written_table("eval_metrics_daily"))
def fsrs_shadow_evaluation(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Predicted against actual recall for one day's reviews, per A/B group: BASELINE_GLOBAL learners
    are scored with the global weights, TUNED_ELIGIBLE with their own (global until they have them).
    Writes one row per group to eval_metrics_daily (replacing the day's rows)."""
    window = context.partition_time_window
    day_start, day_end = window.start.astimezone(dt.timezone.utc), window.end.astimezone(dt.timezone.utc)
    with warehouse.begin() as conn:
        inputs = fsrs_params.shadow_inputs(conn, day_start, day_end)
    scores = fsrs_training.shadow_metrics(inputs.history, inputs.weights, day_start)
    with warehouse.begin() as conn:
        fsrs_params.replace_shadow_day(conn, window.start.date(), scores.metrics, dt.datetime.now(dt.timezone.utc))
    return dg.MaterializeResult(metadata={
        **fsrs_training.shadow_summary(scores.metrics),
        "dagster/row_count": len(scores.metrics),
        "calibration": dg.MetadataValue.md(
            "Predicted against observed recall of the day's reviews, in 10 bins of the prediction, per A/B group\n\n"
            + scores.calibration.to_markdown(index=False, floatfmt=".3f")),
    })


fsrs_global_job = dg.define_asset_job(
    "fsrs_global_job", selection=[fsrs_global_parameters], tags={"dagster/max_runtime": str(60 * 60)},
    description="Fits the global FSRS weights on a sample of learners; every learner shard follows "
                "(fsrs_shards_after_global).")
# A shard's step stays well under RabbitMQ's consumer_timeout (30 minutes by default): with late acks,
# a step still running then is delivered again. Past 25 minutes, use more shards.
fsrs_optimization_job = dg.define_asset_job(
    "fsrs_optimization_job", selection=[fsrs_parameters],
    tags={"dagster/max_runtime": str(25 * 60)},
    description="One learner shard: fits its eligible learners' own FSRS weights from the global ones and "
                "replays its learners' memory states on their new weights. Launch every shard as a backfill.")
fsrs_shadow_evaluation_job = dg.define_asset_job(
    "fsrs_shadow_evaluation_job", selection=[fsrs_shadow_evaluation],
    description="Scores one day's recall predictions per A/B group into eval_metrics_daily.")


@dg.schedule(cron_schedule="0 3 * * 1", job=fsrs_global_job, execution_timezone="UTC",
             default_status=settings.DEFAULT_SCHEDULE_STATUS,
             description="Weekly global fit, Monday 03:00 UTC; every learner shard follows it (fsrs_shards_after_global), "
                         "leaving learners still cooling down as they are.")
def fsrs_weekly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"fsrs_weekly:{context.scheduled_execution_time:%Y-%m-%d}")


@dg.asset_sensor(asset_key=fsrs_global_parameters.key, job=fsrs_optimization_job, minimum_interval_seconds=30,
                 default_status=settings.DEFAULT_SENSOR_STATUS,
                 description="After each new version of the global weights, launches every learner shard of "
                             "fsrs_parameters (one run each, keyed by the global run, so a shard never runs twice "
                             "for the same version).")
def fsrs_shards_after_global(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    return [dg.RunRequest(run_key=f"fsrs_shards:{asset_event.run_id}:{shard}", partition_key=shard)
            for shard in learner_shards.get_partition_keys()]


@dg.schedule(cron_schedule="30 3 * * *", job=fsrs_shadow_evaluation_job, execution_timezone="UTC",
             default_status=settings.DEFAULT_SCHEDULE_STATUS, description="Scores yesterday (UTC) nightly at 03:30.")
def fsrs_shadow_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = (context.scheduled_execution_time - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"fsrs_shadow:{day}", partition_key=day)


@dg.sensor(jobs=[fsrs_optimization_job, fsrs_global_job], minimum_interval_seconds=3600,
           default_status=settings.DEFAULT_SENSOR_STATUS,
           description="Launches the learner shards in which learners became eligible for own weights (the global "
                       "fit first when there is none). Each shard's run key is a fingerprint of who is eligible "
                       "there with how many reviews, so the same learners and data never launch twice.")
def fsrs_eligibility_sensor(context: dg.SensorEvaluationContext, warehouse: Warehouse) -> dg.SensorResult:
    with warehouse.begin() as conn:
        learners = fsrs_params.eligibility_inputs(conn)
        has_global = fsrs_params.latest_global_weights(conn) is not None
    eligible = fsrs_policy.eligible_learners(learners, dt.datetime.now(dt.timezone.utc))
    if eligible.empty:
        return dg.SensorResult(skip_reason="no learner is eligible for own FSRS weights", cursor=context.cursor)
    if not has_global:
        return dg.SensorResult(run_requests=[dg.RunRequest(job_name=fsrs_global_job.name, run_key="fsrs_global:first")],
                               cursor=context.cursor)
    launched = json.loads(context.cursor) if context.cursor and context.cursor.startswith("{") else {}
    eligible = eligible[["user_id", "n_reviews"]].sort_values("user_id")
    n_shards = len(learner_shards.get_partition_keys())
    requests, fingerprints = [], {}
    for shard, in_shard in eligible.groupby(shard_of(eligible["user_id"], n_shards)):
        key = learner_shards.get_partition_keys()[shard]
        fingerprints[key] = hashlib.sha256(in_shard.to_csv(index=False).encode()).hexdigest()[:16]
        if launched.get(key) != fingerprints[key]:
            requests.append(dg.RunRequest(job_name=fsrs_optimization_job.name, partition_key=key,
                                          run_key=f"fsrs_eligible:{key}:{fingerprints[key]}",
                                          tags={"fsrs/eligible_learners": str(len(in_shard))}))
    cursor = json.dumps(fingerprints, sort_keys=True)
    if not requests:
        return dg.SensorResult(skip_reason=f"already launched for these {len(eligible)} learner(s)", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
