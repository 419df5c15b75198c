"""What builds the night's revision queues: the 02:00 refresh of the memory states, then every learner shard of
the day from those states."""

import datetime as dt
import zoneinfo

import dagster as dg

from learning_pipelines import settings
from learning_pipelines.defs.card_memory_states import card_memory_states, card_memory_states_job
from learning_pipelines.defs.learner_shards import every_shard
from learning_pipelines.defs.revision_queues import QUEUE_DAY_TAG, STATES_CUTOFF_TAG, revision_queues_job


@dg.schedule(cron_schedule="0 2 * * *", job=card_memory_states_job, execution_timezone=settings.SCHEDULE_TIMEZONE,
             default_status=settings.DEFAULT_SCHEDULE_STATUS,
             description=("Today's queues at 02:00 (LEARNING_PIPELINES_SCHEDULE_TIMEZONE, default UTC): brings "
                          "card_memory_states up to every stored review, after which revision_queue_shards_after_states "
                          "launches every learner shard of the day's revision_queues from those states."))
def revision_queues_nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"revision_queues:{day}", tags={QUEUE_DAY_TAG: day})


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[card_memory_states_job],
                      request_job=revision_queues_job, minimum_interval_seconds=30,
                      default_status=settings.DEFAULT_SENSOR_STATUS,
                      description="After the nightly refresh of card_memory_states (revision_queues_nightly), launches "
                                  "every learner shard of the day's revision_queues, each told the refresh's cutoff so "
                                  "reviews arriving meanwhile do not hold it back.")
def revision_queue_shards_after_states(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    day = run.tags.get(QUEUE_DAY_TAG)
    if day is None:
        return dg.SkipReason(f"run {run.run_id} was not the nightly refresh")
    today = dt.datetime.now(zoneinfo.ZoneInfo(settings.SCHEDULE_TIMEZONE)).date()
    if dt.date.fromisoformat(day) < today:  # a late tick, or an old refresh run re-executed: its day is gone
        return dg.SkipReason(f"run {run.run_id} refreshed the states for {day}; queues are built for today "
                             f"({today}) or later only")
    refreshed = [event.asset_materialization for event in
                 context.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
                 if event.asset_materialization.asset_key == card_memory_states.key]
    if not refreshed:
        return dg.SkipReason(f"run {run.run_id} left card_memory_states as they were")
    cutoff = refreshed[-1].metadata["as_of"].value
    return every_shard(f"revision_queues:{day}:{run.run_id}",
                       tags={STATES_CUTOFF_TAG: dt.datetime.fromtimestamp(cutoff, dt.timezone.utc).isoformat()},
                       partition_key=lambda shard: dg.MultiPartitionKey({"day": day, "shard": shard}))
