"""Revision queues: each learner's due concepts by theme, ranked, for their day, built before their day starts."""

import datetime as dt

import dagster as dg
from pydantic import Field

from learning_pipelines import settings
from learning_pipelines.defs.card_memory_states import card_memory_states
from learning_pipelines.defs.learner_shards import SHARD_STEP_TAGS, learner_shards
from learning_pipelines.defs.recipe_steps import recipe_step
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.table_metadata import shown, written_table
from learning_pipelines.domain.rollovers import window_of
from learning_pipelines.flows.revision_queues import build_shards_day
from learning_pipelines.observability.structured_logs import asset_logger

# Through tomorrow (UTC): learners east of UTC roll into tomorrow during today (Pacific/Kiritimati, UTC+14, at
# 14:00 UTC with day_start_hour 4).
queue_days = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_offset=2, timezone=settings.SCHEDULE_TIMEZONE)
# Each day's queues are built window by window: a window's run builds a range of the day's shard partitions together.
queue_days_by_shard = dg.MultiPartitionsDefinition({"day": queue_days, "shard": learner_shards})
# Set on the queue runs that follow a rollover window's refresh of the memory states: every review committed
# before this moment (ISO 8601) is in the states the queues are built from.
STATES_CUTOFF_TAG = "learning_pipelines/states_cutoff"
# Set on the refresh of the memory states for a rollover window: the window (ISO 8601, UTC) whose queues follow it.
ROLLOVER_WINDOW_TAG = "learning_pipelines/rollover_window"


class QueueWindowConfig(dg.Config):
    """Which learners of the shards' day a run builds."""

    window_start: str = Field("", description="a rollover window's start (ISO 8601, UTC, on the 15-minute grid): "
                              "only the learners whose day starts in it; empty: every learner of the shards")

    def window(self) -> dt.datetime | None:
        if not self.window_start.strip():
            return None
        try:
            start = dt.datetime.fromisoformat(self.window_start.strip())
        except ValueError:
            raise dg.Failure(description=f"window_start {self.window_start!r} is not an ISO 8601 time",
                             allow_retries=False) from None
        start = start if start.tzinfo else start.replace(tzinfo=dt.timezone.utc)
        if start != window_of(start):
            raise dg.Failure(description=f"window_start {self.window_start!r} is not on the 15-minute grid (UTC)",
                             allow_retries=False)
        return start


@dg.asset(
    group_name="revision",
    deps=[card_memory_states],
    partitions_def=queue_days_by_shard,
    kinds={"python", "sql"},
    owners=["team:learning-intelligence"],
    metadata=written_table("revision_queue_theme", "revision_queue_user_summary", "queue_stats_daily",
                           "tag_quality_debt_log", "revision_queue_windows"),
    # In the asset's own step, on what it has just stored: one Celery task per run, not three.
    check_specs=[
        dg.AssetCheckSpec("every_due_concept_accounted_for", asset="revision_queues", blocking=True,
                          description="Every due card of the run's learners is in a mapped theme or logged in "
                                      "tag_quality_debt_log."),
        dg.AssetCheckSpec("summary_totals_match_theme_rows", asset="revision_queues", blocking=True,
                          description="Each learner's due/overdue totals equal the sum of their theme rows."),
    ],
)
@recipe_step
def revision_queues(context: dg.AssetExecutionContext, config: QueueWindowConfig,
                    warehouse: Warehouse) -> dg.MaterializeResult:
    """For the partition's day and learner shard (or a range of one day's shards, built together: a rollover
    window's run), the learners whose rollover into that day (their day_start_hour in their time zone) falls in the
    run's window (every learner of the shards when the run names none): per learner and theme, concepts due by the
    end of the learner's own day (overdue ones counted apart), themes ranked by due count then weaker mastery; a
    summary per learner valid over their day's UTC bounds; totals per shard and window; fallbacks logged as
    tag-quality debt.

    Built only from memory states that include every review stored before the cutoff (recorded in each summary
    row): the window's refresh (revision_queue_shards_after_states), else the run's start. A learner whose day has
    ended is left out (their states have moved on). Re-running replaces exactly those learners' rows of the day in
    one transaction."""
    day, shards = day_and_shards(context.partition_keys)
    built = build_shards_day(warehouse.engine, day, shards, states_cutoff(context), run_started_at(context),
                             config.window(), states_refreshed_in(context))
    log = asset_logger(context)
    for row in built.rejected_preferences.itertuples():
        log.warning("preferences rejected; using the defaults", user_id=int(row.user_id), problem=row.problem)
    return dg.MaterializeResult(metadata=shown(built.metadata()), check_results=_stored_checks(built.stored))


def day_and_shards(partition_keys: list[str]) -> tuple[dt.date, list[str]]:
    """The day and the learner shards of a run's partitions: one (day, shard), or a range of one day's shards (a
    rollover window's run builds its shards together)."""
    keys = [queue_days_by_shard.get_partition_key_from_str(key).keys_by_dimension for key in partition_keys]
    days = sorted({key["day"] for key in keys})
    if len(days) != 1:
        raise dg.Failure(description=f"a run builds the shards of one day, not of {', '.join(days)}: "
                                     "launch one run per day", allow_retries=False)
    return dt.date.fromisoformat(days[0]), [key["shard"] for key in keys]


def _stored_checks(stored: dict[str, int]) -> list[dg.AssetCheckResult]:
    accounted = stored["due_in_mapped_themes"] + stored["logged_as_debt"] == stored["due_today_total"]
    return [dg.AssetCheckResult(check_name="every_due_concept_accounted_for", passed=accounted, metadata={
                key: stored[key] for key in ("due_in_mapped_themes", "logged_as_debt", "due_today_total")}),
            dg.AssetCheckResult(check_name="summary_totals_match_theme_rows", passed=stored["learners_mismatched"] == 0,
                                metadata={"learners_mismatched": stored["learners_mismatched"]})]


def states_cutoff(context: dg.AssetExecutionContext) -> dt.datetime:
    """Every review committed before this must be in the memory states: the window's refresh's own cutoff for
    the shards it launched, else the run's start."""
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


revision_queues_job = dg.define_asset_job(
    "revision_queues_job", selection=[revision_queues], tags=SHARD_STEP_TAGS,
    description="The revision queues of one day of a learner shard (a partition) or of a range of the day's shards "
                "built together, from memory states that include every review committed before the cutoff, for the "
                "learners of a rollover window (run config window_start) or all of them. Before each window "
                "revision_queue_rollover_windows refreshes the states and revision_queue_shards_after_states launches "
                "one run over every shard of the window's day.")
