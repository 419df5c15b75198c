"""FSRS-6 memory model: per-learner and global weights, their checks, the daily shadow evaluation."""

import datetime as dt
import hashlib
import time

import dagster as dg
from pydantic import Field

from learning_pipelines import settings
from learning_pipelines.db import fsrs_params
from learning_pipelines.db.memory_states import current_weights
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.review_logs import review_logs
from learning_pipelines.domain import fsrs_policy, fsrs_training
from learning_pipelines.domain.fsrs_optimizer import FitConfig

SHADOW_FIRST_DAY = "2024-01-01"


class FsrsFitConfig(dg.Config):
    """How far one optimization run fits (defaults: domain.fsrs_training's and fsrs_optimizer.FitConfig's)."""

    own_fit_iterations: int = Field(FitConfig.max_iterations, description="most Levenberg-Marquardt iterations of "
                                    "each eligible learner's own fit")
    global_fit_iterations: int = Field(FitConfig.max_iterations, description="most Levenberg-Marquardt iterations "
                                       "of the pooled global fit")
    global_fit_max_reviews: int = Field(fsrs_training.GLOBAL_FIT_MAX_REVIEWS, description="most reviews the "
                                        "pooled fit sees, sampled by whole cards")

    def to_training_config(self) -> fsrs_training.TrainingConfig:
        return fsrs_training.TrainingConfig(self.global_fit_max_reviews,
                                            global_fit=FitConfig(max_iterations=self.global_fit_iterations),
                                            own_fit=FitConfig(max_iterations=self.own_fit_iterations))


@dg.asset(
    group_name="fsrs",
    deps=[review_logs],
    kinds={"python", "sql"},
    pool="fsrs_optimization",
    owners=["team:learning-intelligence"],
    check_specs=[dg.AssetCheckSpec("tuned_not_worse_than_global", asset="fsrs_parameters",
                                   description="On each trained learner's held-out latest reviews, own weights "
                                               "score a logloss no worse than the global weights (aggregated).")],
)
def fsrs_parameters(context: dg.AssetExecutionContext, config: FsrsFitConfig,
                    warehouse: Warehouse) -> dg.MaterializeResult:
    """Global FSRS-6 weights from everyone's reviews, and own weights for eligible learners of the
    TUNED_ELIGIBLE group (at least 300 reviews, 7-day cooldown passed). Each learner's latest 10 %
    of reviews are held out of training and used to compare own against global weights."""
    started = time.perf_counter()
    with warehouse.begin() as conn:
        inputs = fsrs_params.training_inputs(conn)
    trained = fsrs_training.train(inputs.reviews, inputs.previous, dt.datetime.now(dt.timezone.utc),
                                  config.to_training_config(), log=context.log.info)
    with warehouse.begin() as conn:
        fsrs_params.record_training(conn, trained)
    own_ll, global_ll = trained.holdout_logloss_own, trained.holdout_logloss_global
    return dg.MaterializeResult(
        metadata={
            "n_learners": len(trained.user_params),
            "n_learners_trained": trained.n_trained,
            "n_learners_with_own_weights": trained.n_learners_with_own_weights,
            "global_logloss": dg.MetadataValue.float(trained.global_logloss),
            "holdout_logloss_own": dg.MetadataValue.float(own_ll),
            "holdout_logloss_global": dg.MetadataValue.float(global_ll),
            "global_weights": dg.MetadataValue.json([round(float(w), 4) for w in trained.global_weights]),
            "seconds": dg.MetadataValue.float(time.perf_counter() - started),
        },
        check_results=[dg.AssetCheckResult(
            check_name="tuned_not_worse_than_global", passed=trained.tuned_not_worse_than_global,
            metadata={"holdout_logloss_own": own_ll, "holdout_logloss_global": global_ll,
                      "n_holdout_reviews": trained.n_holdout_reviews, "n_learners": len(trained.holdout_scores)})],
    )


@dg.asset_check(asset=fsrs_parameters, blocking=True, description="Every stored weight vector (the latest "
                "global one, every learner's own) lies inside the FSRS-6 clamping bounds.")
def weights_within_bounds(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.begin() as conn:
        weights = current_weights(conn).weights
    out_of_bounds = fsrs_training.weight_vectors_out_of_bounds(weights)
    return dg.AssetCheckResult(passed=out_of_bounds == 0, metadata={"weight_vectors_out_of_bounds": out_of_bounds})


shadow_days = dg.DailyPartitionsDefinition(start_date=SHADOW_FIRST_DAY)


@dg.asset(group_name="fsrs", deps=[fsrs_parameters], partitions_def=shadow_days, kinds={"python", "sql"},
          owners=["team:learning-intelligence"])
def fsrs_shadow_evaluation(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Predicted against actual recall for one day's reviews, per A/B group: BASELINE_GLOBAL learners
    are scored with the global weights, TUNED_ELIGIBLE with their own (global until they have them).
    Writes one row per group to eval_metrics_daily (replacing the day's rows)."""
    window = context.partition_time_window
    day_start, day_end = window.start.astimezone(dt.timezone.utc), window.end.astimezone(dt.timezone.utc)
    with warehouse.begin() as conn:
        inputs = fsrs_params.shadow_inputs(conn, day_start, day_end)
    metrics = fsrs_training.shadow_metrics(inputs.history, inputs.weights, day_start)
    with warehouse.begin() as conn:
        fsrs_params.replace_shadow_day(conn, window.start.date(), metrics, dt.datetime.now(dt.timezone.utc))
    return dg.MaterializeResult(metadata=fsrs_training.shadow_summary(metrics))


fsrs_optimization_job = dg.define_asset_job(
    "fsrs_optimization_job", selection=dg.AssetSelection.assets(fsrs_parameters, dg.AssetKey("card_memory_states")),
    tags={"dagster/max_runtime": str(4 * 60 * 60)},
    description="Fits global and eligible learners' own FSRS weights, then brings card_memory_states onto them.")
fsrs_shadow_evaluation_job = dg.define_asset_job(
    "fsrs_shadow_evaluation_job", selection=[fsrs_shadow_evaluation],
    description="Scores one day's recall predictions per A/B group into eval_metrics_daily.")


@dg.schedule(cron_schedule="0 3 * * 1", job=fsrs_optimization_job, execution_timezone="UTC",
             default_status=settings.DEFAULT_SCHEDULE_STATUS,
             description="Weekly optimization, Monday 03:00 UTC; learners still cooling down are left as they are.")
def fsrs_weekly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"fsrs_weekly:{context.scheduled_execution_time:%Y-%m-%d}")


@dg.schedule(cron_schedule="30 3 * * *", job=fsrs_shadow_evaluation_job, execution_timezone="UTC",
             default_status=settings.DEFAULT_SCHEDULE_STATUS, description="Scores yesterday (UTC) nightly at 03:30.")
def fsrs_shadow_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = (context.scheduled_execution_time - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"fsrs_shadow:{day}", partition_key=day)


@dg.sensor(job=fsrs_optimization_job, minimum_interval_seconds=3600, default_status=settings.DEFAULT_SENSOR_STATUS,
           description="Launches the optimization when learners become eligible for own weights. The run key is a "
                       "fingerprint of who is eligible with how many reviews, so the same learners and data never "
                       "launch twice.")
def fsrs_eligibility_sensor(context: dg.SensorEvaluationContext, warehouse: Warehouse) -> dg.SensorResult:
    with warehouse.begin() as conn:
        learners = fsrs_params.eligibility_inputs(conn)
    eligible = fsrs_policy.eligible_learners(learners, dt.datetime.now(dt.timezone.utc))
    if eligible.empty:
        return dg.SensorResult(skip_reason="no learner is eligible for own FSRS weights", cursor=context.cursor)
    eligible = eligible[["user_id", "n_reviews"]].sort_values("user_id")
    fingerprint = hashlib.sha256(eligible.to_csv(index=False).encode()).hexdigest()[:16]
    if fingerprint == context.cursor:
        return dg.SensorResult(skip_reason=f"already launched for these {len(eligible)} learner(s)",
                               cursor=context.cursor)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"fsrs_eligible:{fingerprint}",
                                    tags={"fsrs/eligible_learners": str(len(eligible))})],
        cursor=fingerprint,
    )
