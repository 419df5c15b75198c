"""Nightly revision queues: each learner's due concepts by theme, ranked, for today."""

import datetime as dt
import time
import zoneinfo

import dagster as dg

from learning_pipelines import settings
from learning_pipelines.db import memory_states, revision_queues as store
from learning_pipelines.db.reads import concept_graph
from learning_pipelines.defs.memory_states import card_memory_states
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.domain import revision
from learning_pipelines.domain.chunking import LEARNER_CHUNK
from learning_pipelines.observability.structured_logs import asset_logger

queue_days = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_offset=1, timezone=settings.SCHEDULE_TIMEZONE)


@dg.asset(
    group_name="revision",
    deps=[card_memory_states],
    partitions_def=queue_days,
    kinds={"python", "sql"},
    owners=["team:learning-intelligence"],
)
def revision_queues(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """For the partition's day: per learner and theme, concepts due by the end of the learner's own day
    (overdue ones counted apart), themes ranked by due count then weaker mastery; a summary per learner
    with the recommended themes; the day's totals; fallbacks logged as tag-quality debt.

    Built only from memory states that include every review stored before the run started (its
    cutoff, recorded in each summary row); a past day is refused, since its states are gone.
    Re-running a day replaces that day's rows in one transaction."""
    started = time.perf_counter()
    day = dt.date.fromisoformat(context.partition_key)
    cutoff = run_started_at(context)
    today = cutoff.astimezone(zoneinfo.ZoneInfo(settings.SCHEDULE_TIMEZONE)).date()
    if day < today:
        raise dg.Failure(description=f"revision_queues for {day} would be built from today's memory states; "
                                     f"queues are built for the current day ({today}) or later only.",
                         allow_retries=False)
    with warehouse.begin() as conn:
        stale = None if states_refreshed_in(context) else memory_states.why_not_covering(conn, cutoff)
        if stale:
            raise dg.Failure(description=f"{stale}. Run revision_queues_job: it brings card_memory_states up to "
                                         "date first.", allow_retries=False)
        calendars, preferences = store.learners_with_cards(conn)
        learners, rejected = revision.effective_preferences(calendars, preferences)
        concept_ids, theme_map, edges = concept_graph(conn)
        concept_themes = revision.concept_theme_keys(concept_ids["concept_id"].to_numpy(), theme_map, edges)
        store.clear_day(conn, day)
        totals = []
        for offset in range(0, len(learners), LEARNER_CHUNK):
            chunk = learners.iloc[offset:offset + LEARNER_CHUNK]
            queues = revision.build_queues(store.card_states(conn, chunk["user_id"].tolist()), chunk, concept_themes, day)
            store.write_chunk(conn, day, queues, chunk, dt.datetime.now(dt.timezone.utc), cutoff)
            totals.append(revision.theme_totals(queues))
        stats = revision.day_stats(totals)
        store.write_day_stats(conn, day, stats)
    log = asset_logger(context)
    for row in rejected.itertuples():
        log.warning("preferences rejected; using the defaults", user_id=int(row.user_id), problem=row.problem)
    everything = stats.set_index("theme_key").loc[revision.ALL_THEMES]
    return dg.MaterializeResult(metadata={
        "n_learners": len(learners),
        "due_today_total": int(everything["due_today"]),
        "overdue_total": int(everything["overdue"]),
        "n_rejected_preferences": len(rejected),
        "cutoff": dg.MetadataValue.timestamp(cutoff),
        "seconds": dg.MetadataValue.float(time.perf_counter() - started),
        "themes": dg.MetadataValue.md(stats.sort_values("due_today", ascending=False).head(10).to_markdown(index=False)),
    })


def states_refreshed_in(context: dg.AssetExecutionContext) -> bool:
    """Whether this run brought card_memory_states up to date before this step (revision_queues_job does):
    then every review stored before the run started is in them, whatever the clocks say."""
    latest = context.instance.get_latest_materialization_event(card_memory_states.key)
    return latest is not None and latest.run_id == context.run.run_id


def run_started_at(context: dg.AssetExecutionContext) -> dt.datetime:
    """When this run started (now, for a run that has no start recorded yet)."""
    started = context.instance.get_run_stats(context.run.run_id).start_time
    return dt.datetime.fromtimestamp(started, dt.timezone.utc) if started else dt.datetime.now(dt.timezone.utc)


@dg.asset_check(asset=revision_queues, blocking=True, partitions_def=queue_days,
                description="Every due card is in a mapped theme or logged in tag_quality_debt_log.")
def every_due_concept_accounted_for(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.begin() as conn:
        stored = store.stored_consistency(conn, dt.date.fromisoformat(context.partition_key))
    accounted = stored["due_in_mapped_themes"] + stored["logged_as_debt"] == stored["due_today_total"]
    return dg.AssetCheckResult(passed=accounted, metadata={k: stored[k] for k in (
        "due_in_mapped_themes", "logged_as_debt", "due_today_total")})


@dg.asset_check(asset=revision_queues, blocking=True, partitions_def=queue_days,
                description="Each learner's due/overdue totals equal the sum of their theme rows.")
def summary_totals_match_theme_rows(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.begin() as conn:
        stored = store.stored_consistency(conn, dt.date.fromisoformat(context.partition_key))
    return dg.AssetCheckResult(passed=stored["learners_mismatched"] == 0,
                               metadata={"learners_mismatched": stored["learners_mismatched"]})


revision_queues_job = dg.define_asset_job(
    "revision_queues_job", selection=[card_memory_states, revision_queues],
    # A retried run starts over from the memory states, so its queues are covered by its own start.
    tags={"dagster/max_runtime": str(2 * 60 * 60), "dagster/retry_strategy": "ALL_STEPS"},
    description="Brings card_memory_states up to every stored review, then builds the day's revision queues from them.")


@dg.schedule(cron_schedule="0 2 * * *", job=revision_queues_job, execution_timezone=settings.SCHEDULE_TIMEZONE,
             default_status=settings.DEFAULT_SCHEDULE_STATUS,
             description=("Today's queues at 02:00 (LEARNING_PIPELINES_SCHEDULE_TIMEZONE, default UTC), from memory states "
                          "brought up to the run's start in the same run."))
def revision_queues_nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"revision_queues:{day}", partition_key=day)
