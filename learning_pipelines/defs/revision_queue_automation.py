"""What builds every learner's queue before their day starts: every 15-minute window of rollovers gets a refresh of
the memory states (its cutoff) BUILD_LEAD before it, then the window's day of every learner shard from them, in one
run (LEARNING_PIPELINES_WINDOW_RUN_SHARDS shards a run when set)."""

import datetime as dt

import dagster as dg
import pandas as pd

from learning_pipelines import settings
from learning_pipelines.db import reads
from learning_pipelines.defs.card_memory_states import card_memory_states, card_memory_states_job
from learning_pipelines.defs.learner_shards import shard_groups
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.revision_queues import ROLLOVER_WINDOW_TAG, STATES_CUTOFF_TAG, revision_queues_job
from learning_pipelines.domain import rollovers

# A first evaluation (or one after the sensor was off) builds the windows of the last day late: every learner
# whose current day has no queue yet gets one.
CATCH_UP = dt.timedelta(days=1)
_WINDOWS_SEPARATOR = ","


@dg.sensor(job=card_memory_states_job, minimum_interval_seconds=60, default_status=settings.DEFAULT_SENSOR_STATUS,
           description="Every learner's queue before their day starts: for each 15-minute window holding some "
                       "learners' rollover (day_start_hour in their time zone), refreshes card_memory_states 15 "
                       "minutes before the window (the cutoff), after which revision_queue_shards_after_states builds "
                       "every learner shard of the window. Windows missed (sensor off, daemon down) are built late.")
def revision_queue_rollover_windows(context: dg.SensorEvaluationContext, warehouse: Warehouse) -> dg.SensorResult:
    now = dt.datetime.now(dt.timezone.utc)
    after = dt.datetime.fromisoformat(context.cursor) if context.cursor else now - CATCH_UP
    with warehouse.begin() as conn:
        calendars = reads.calendars_in_use(conn)
    due = rollovers.windows_due(calendars, after, now)
    if due.empty:
        return dg.SensorResult(skip_reason=f"no learner rolls over in a window due since {after:%Y-%m-%d %H:%M} UTC",
                               cursor=now.isoformat())
    windows = sorted({window.to_pydatetime() for window in due["window_start"]})
    listed = _WINDOWS_SEPARATOR.join(window.isoformat() for window in windows)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"rollover_windows:{listed}",
                                                       tags={ROLLOVER_WINDOW_TAG: listed})], cursor=now.isoformat())


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[card_memory_states_job],
                      request_job=revision_queues_job, minimum_interval_seconds=30,
                      default_status=settings.DEFAULT_SENSOR_STATUS,
                      description="After a rollover window's refresh of card_memory_states "
                                  "(revision_queue_rollover_windows), launches the queues of every learner shard of "
                                  "each day its learners roll into, all shards in one run (a range of the day's "
                                  "shard partitions; LEARNING_PIPELINES_WINDOW_RUN_SHARDS shards a run when set), "
                                  "with the window and the refresh's cutoff, so reviews arriving meanwhile do not "
                                  "hold it back.")
def revision_queue_shards_after_states(context: dg.RunStatusSensorContext, warehouse: Warehouse):
    run = context.dagster_run
    listed = run.tags.get(ROLLOVER_WINDOW_TAG)
    if not listed:
        return dg.SkipReason(f"run {run.run_id} was not a rollover window's refresh")
    refreshed = [event.asset_materialization for event in
                 context.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
                 if event.asset_materialization.asset_key == card_memory_states.key]
    if not refreshed:
        return dg.SkipReason(f"run {run.run_id} left card_memory_states as they were")
    cutoff = dt.datetime.fromtimestamp(refreshed[-1].metadata["as_of"].value, dt.timezone.utc).isoformat()
    with warehouse.begin() as conn:
        calendars = reads.calendars_in_use(conn)
    requests, now = [], dt.datetime.now(dt.timezone.utc)
    for window in map(dt.datetime.fromisoformat, listed.split(_WINDOWS_SEPARATOR)):
        rolling = rollovers.rolling_over_in(calendars, window)
        # A day that has ended for every learner rolling into it (an old refresh re-executed) is not built.
        for day in sorted(set(rolling.loc[rolling["day_ends_at"] > pd.Timestamp(now), "queue_date"])):
            requests += shard_groups(f"revision_queues:{window.isoformat()}:{day}:{run.run_id}",
                                     settings.WINDOW_RUN_SHARDS,
                                     lambda shard, day=day: dg.MultiPartitionKey({"day": str(day), "shard": shard}),
                                     tags={STATES_CUTOFF_TAG: cutoff, ROLLOVER_WINDOW_TAG: window.isoformat()},
                                     run_config={"ops": {"revision_queues": {"config": {
                                         "window_start": window.isoformat()}}}})
    return requests or dg.SkipReason(f"no learner rolls over in {listed} into a day that has not ended")
