"""Nightly revision queues: each learner's due concepts by theme, ranked, for today."""

import datetime as dt
import time
import zoneinfo

import dagster as dg

from learning_pipelines import pause_points, settings
from learning_pipelines.db import bulk, learner_locks, memory_states, revision_queues as store
from learning_pipelines.db.reads import concept_graph, shard_learners
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.memory_states import card_memory_states, card_memory_states_job
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.retries import retry_lost_races
from learning_pipelines.defs.table_metadata import written_table
from learning_pipelines.domain import revision
from learning_pipelines.observability.structured_logs import asset_logger

queue_days = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_offset=1, timezone=settings.SCHEDULE_TIMEZONE)
# Each day's queues are built shard by shard: the shards of a night are separate runs any worker takes.
queue_days_by_shard = dg.MultiPartitionsDefinition({"day": queue_days, "shard": learner_shards})
# Set on the shard runs that follow the nightly refresh of the memory states: every review committed
# before this moment (ISO 8601) is in the states the queues are built from.
STATES_CUTOFF_TAG = "learning_pipelines/states_cutoff"
# Set on the nightly refresh of the memory states: the day whose queues follow it.
QUEUE_DAY_TAG = "learning_pipelines/queue_day"
# Learners whose card states are read and queued at a time: few reads per shard, memory bounded by the chunk.
QUEUE_LEARNER_CHUNK = 2000


@dg.asset(
    group_name="revision",
    deps=[card_memory_states],
    partitions_def=queue_days_by_shard,
    kinds={"python", "sql"},
    owners=["team:learning-intelligence"],
    metadata=written_table("revision_queue_theme", "revision_queue_user_summary", "queue_stats_daily",
                           "tag_quality_debt_log"),
    # In the asset's own step, on what it has just stored: one Celery task per shard, not three.
    check_specs=[
        dg.AssetCheckSpec("every_due_concept_accounted_for", asset="revision_queues", blocking=True,
                          description="Every due card of the shard's learners is in a mapped theme or logged in "
                                      "tag_quality_debt_log."),
        dg.AssetCheckSpec("summary_totals_match_theme_rows", asset="revision_queues", blocking=True,
                          description="Each learner's due/overdue totals equal the sum of their theme rows."),
    ],
)
@retry_lost_races
def revision_queues(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """For the partition's day and learner shard: per learner and theme, concepts due by the end of the
    learner's own day (overdue ones counted apart), themes ranked by due count then weaker mastery; a
    summary per learner with the recommended themes; the shard's day totals; fallbacks logged as
    tag-quality debt.

    Built only from memory states that include every review stored before the cutoff (recorded in each
    summary row): the nightly refresh's, for the shards it launches (revision_queue_shards_after_states),
    else the run's start. A past day is refused, since its states are gone. Re-running a shard's day
    replaces exactly that shard's rows of the day in one transaction."""
    started = time.perf_counter()
    keys = context.partition_key.keys_by_dimension
    day, shard = dt.date.fromisoformat(keys["day"]), keys["shard"]
    cutoff = states_cutoff(context)
    today = run_started_at(context).astimezone(zoneinfo.ZoneInfo(settings.SCHEDULE_TIMEZONE)).date()
    if day < today:
        raise dg.Failure(description=f"revision_queues for {day} would be built from today's memory states; "
                                     f"queues are built for the current day ({today}) or later only.",
                         allow_retries=False)
    with warehouse.begin() as conn:
        stale = None if states_refreshed_in(context) else memory_states.why_not_covering(conn, cutoff)
        if stale:
            raise dg.Failure(description=f"{stale}. Run card_memory_states_job first (the nightly schedule does, "
                                         "then launches every shard).", allow_retries=False)
        bulk.plan_without_jit(conn)
        # Only learners that still exist, locked against `learners forget` until commit (db/learner_locks).
        in_shard = learner_locks.lock_existing(conn, shard_learners(conn, shard))
        pause_points.reached("revision_queues.learners_locked")
        id_chunks = [in_shard[offset:offset + QUEUE_LEARNER_CHUNK]
                     for offset in range(0, len(in_shard), QUEUE_LEARNER_CHUNK)]
        totals, n_theme_rows, n_learners = [], 0, 0
        with store.card_states_read_ahead(conn, id_chunks) as chunk_states:  # the first read starts here
            calendars, preferences = store.learner_calendars(conn, in_shard)
            learners, rejected = revision.effective_preferences(calendars, preferences)
            concept_ids, theme_map, edges = concept_graph(conn)
            concept_themes = revision.concept_theme_keys(concept_ids["concept_id"].to_numpy(), theme_map, edges)
            store.clear_shard_day(conn, day, shard, in_shard)
            pause_points.reached("revision_queues.day_cleared")
            with store.chunks_written_behind(conn) as write_chunk:
                for states in chunk_states:
                    # the chunk's learners with cards (a learner without any has no queue)
                    chunk = learners.loc[learners["user_id"].isin(states["user_id"])]
                    queues = revision.build_queues(states, chunk, concept_themes, day)
                    write_chunk(day, queues, chunk, dt.datetime.now(dt.timezone.utc), cutoff)
                    totals.append(revision.theme_totals(queues))
                    n_theme_rows += len(queues.themes)
                    n_learners += len(chunk)
                    pause_points.reached("revision_queues.chunk_written")
        stats = revision.day_stats(totals)
        store.write_shard_stats(conn, day, shard, stats)
        pause_points.reached("revision_queues.before_commit")
    with warehouse.begin() as conn:
        stored = store.stored_consistency(conn, day, in_shard)
    log = asset_logger(context)
    for row in rejected.itertuples():
        log.warning("preferences rejected; using the defaults", user_id=int(row.user_id), problem=row.problem)
    everything = stats.set_index("theme_key").loc[revision.ALL_THEMES]
    return dg.MaterializeResult(metadata={
        "dagster/row_count": int(n_theme_rows),
        "n_learners": n_learners,
        "due_today_total": int(everything["due_today"]),
        "overdue_total": int(everything["overdue"]),
        "n_rejected_preferences": len(rejected),
        "cutoff": dg.MetadataValue.timestamp(cutoff),
        "seconds": dg.MetadataValue.float(time.perf_counter() - started),
        "themes": dg.MetadataValue.md("The shard's top themes by cards due today\n\n" + stats.loc[
            stats["theme_key"] != revision.ALL_THEMES].sort_values("due_today", ascending=False).head(10)
            .to_markdown(index=False)),
    }, check_results=[
        dg.AssetCheckResult(
            check_name="every_due_concept_accounted_for",
            passed=stored["due_in_mapped_themes"] + stored["logged_as_debt"] == stored["due_today_total"],
            metadata={k: stored[k] for k in ("due_in_mapped_themes", "logged_as_debt", "due_today_total")}),
        dg.AssetCheckResult(check_name="summary_totals_match_theme_rows", passed=stored["learners_mismatched"] == 0,
                            metadata={"learners_mismatched": stored["learners_mismatched"]}),
    ])


def states_cutoff(context: dg.AssetExecutionContext) -> dt.datetime:
    """Every review committed before this must be in the memory states: the nightly refresh's own cutoff
    for the shards it launched, else the run's start."""
    tagged = context.run.tags.get(STATES_CUTOFF_TAG)
    if not tagged:
        return run_started_at(context)
    try:
        cutoff = dt.datetime.fromisoformat(tagged)
    except ValueError:
        raise dg.Failure(description=f"the run's tag {STATES_CUTOFF_TAG}={tagged!r} is not an ISO 8601 time",
                         allow_retries=False) from None
    return cutoff if cutoff.tzinfo else cutoff.replace(tzinfo=dt.timezone.utc)  # a time without zone is UTC


def states_refreshed_in(context: dg.AssetExecutionContext) -> bool:
    """Whether this run brought card_memory_states up to date before this step (a run of both assets
    does): then every review stored before the run started is in them, whatever the clocks say."""
    latest = context.instance.get_latest_materialization_event(card_memory_states.key)
    return latest is not None and latest.run_id == context.run.run_id


def run_started_at(context: dg.AssetExecutionContext) -> dt.datetime:
    """When this run started (now, for a run that has no start recorded yet)."""
    started = context.instance.get_run_stats(context.run.run_id).start_time
    return dt.datetime.fromtimestamp(started, dt.timezone.utc) if started else dt.datetime.now(dt.timezone.utc)


# A shard's step stays well under RabbitMQ's consumer_timeout (30 minutes by default): with late acks,
# a step still running then is delivered again.
revision_queues_job = dg.define_asset_job(
    "revision_queues_job", selection=[revision_queues],
    tags={"dagster/max_runtime": str(25 * 60)},
    description="One learner shard's revision queues for one day, from memory states that include every review "
                "committed before the cutoff. Nightly, revision_queues_nightly refreshes the states and "
                "revision_queue_shards_after_states launches every shard of the day.")


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
    return [dg.RunRequest(run_key=f"revision_queues:{day}:{shard}:{run.run_id}",
                          partition_key=dg.MultiPartitionKey({"day": day, "shard": shard}),
                          tags={STATES_CUTOFF_TAG: dt.datetime.fromtimestamp(cutoff, dt.timezone.utc).isoformat()})
            for shard in learner_shards.get_partition_keys()]
