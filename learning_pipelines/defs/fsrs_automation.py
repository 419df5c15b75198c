"""What launches the FSRS optimization: a weekly global fit, every learner shard after each global fit, and the
shards where learners became eligible for own weights."""

import datetime as dt
import json

import dagster as dg

from learning_pipelines import settings
from learning_pipelines.db import fsrs_params
from learning_pipelines.defs.fsrs import fsrs_global_job, fsrs_global_parameters, fsrs_optimization_job
from learning_pipelines.defs.learner_shards import every_shard, learner_shards
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.domain import fsrs_policy
from learning_pipelines.domain.fingerprints import fingerprint
from learning_pipelines.domain.learner_shards import shard_of


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
    return every_shard(f"fsrs_shards:{asset_event.run_id}")


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
        fingerprints[key] = fingerprint(in_shard)
        if launched.get(key) != fingerprints[key]:
            requests.append(dg.RunRequest(job_name=fsrs_optimization_job.name, partition_key=key,
                                          run_key=f"fsrs_eligible:{key}:{fingerprints[key]}",
                                          tags={"fsrs/eligible_learners": str(len(in_shard))}))
    cursor = json.dumps(fingerprints, sort_keys=True)
    if not requests:
        return dg.SensorResult(skip_reason=f"already launched for these {len(eligible)} learner(s)", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
