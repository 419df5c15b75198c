"""Review logs, one month per partition: validated in the warehouse, placed in each card's history."""

import datetime as dt

import dagster as dg

from learning_pipelines import settings
from learning_pipelines.db.review_logs import month_counts
from learning_pipelines.defs.learner_calendars import warn_of_calendar_fallbacks
from learning_pipelines.defs.recipe_steps import recipe_step
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.table_metadata import shown, written_table
from learning_pipelines.flows.review_months import revalidate_month
from learning_pipelines.observability.structured_logs import asset_logger

# Reviews before 2000 are rejected on import, so the first month partition is January 2000.
FIRST_MONTH = "2000-01-01"
# Above this share of rejected rows a month is not trusted downstream (platform data-quality bar).
MAX_REJECT_RATE = 0.05

review_log_months = dg.MonthlyPartitionsDefinition(start_date=FIRST_MONTH, end_offset=1)


def _utc_window(window: dg.TimeWindow) -> tuple[dt.datetime, dt.datetime]:
    return window.start.astimezone(dt.timezone.utc), window.end.astimezone(dt.timezone.utc)


@dg.asset(partitions_def=review_log_months, group_name="reviews", kinds={"sql", "pandas"},
          owners=["team:learning-intelligence"],
          metadata=written_table("review_logs", "review_log_rejects", "review_log_intervals"))
@recipe_step
def review_logs(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Validates one month of `review_logs` in the warehouse and writes `review_log_intervals`.

    Rows that break a rule (written by something other than our importers) move to
    `review_log_rejects` with their reason; every other row stays. Re-running a month replaces
    its intervals, so it is idempotent.
    """
    start, end = _utc_window(context.partition_time_window)
    checked = revalidate_month(warehouse.engine, start, end, f"review_logs asset, partition {context.partition_key}",
                               dt.datetime.now(dt.timezone.utc))
    if checked.n_quarantined:
        asset_logger(context).warning("reviews moved to review_log_rejects", n_rejected=checked.n_quarantined)
    warn_of_calendar_fallbacks(context, checked.calendar_fallbacks)
    return dg.MaterializeResult(metadata=shown(checked.metadata()))


@dg.asset_check(asset=review_logs, partitions_def=review_log_months, blocking=True,
                description=f"Rejected rows of the month are at most {MAX_REJECT_RATE:.0%} of it.")
def reject_rate_below_threshold(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.begin() as conn:
        counts = month_counts(conn, *_utc_window(context.partition_time_window), dt.datetime.now(dt.timezone.utc))
    return dg.AssetCheckResult(passed=counts.reject_rate <= MAX_REJECT_RATE, metadata={
        "reject_rate": counts.reject_rate, "threshold": MAX_REJECT_RATE,
        "n_rejects": counts.n_rejects, "n_reviews": counts.n_reviews})


@dg.asset_check(asset=review_logs, partitions_def=review_log_months,
                description="No review of the month is timestamped after the check ran.")
def no_future_reviews(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.begin() as conn:
        counts = month_counts(conn, *_utc_window(context.partition_time_window), dt.datetime.now(dt.timezone.utc))
    return dg.AssetCheckResult(passed=counts.n_future == 0, metadata={"n_future_reviews": counts.n_future})


review_logs_job = dg.define_asset_job(
    "review_logs_job", selection=[review_logs],
    tags={"dagster/max_runtime": str(2 * 60 * 60)},
    description="Validates a month of review_logs (quarantining bad rows) and rewrites its review_log_intervals, "
                "then checks its reject rate and that no review lies in the future.",
)


@dg.schedule(cron_schedule="0 1 * * *", job=review_logs_job, execution_timezone="UTC",
             default_status=settings.DEFAULT_SCHEDULE_STATUS,
             description="Re-validates the current month every night at 01:00 UTC.")
def review_logs_nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Re-validates the current month every night at 01:00 UTC."""
    month_key = context.scheduled_execution_time.strftime("%Y-%m-01")
    return dg.RunRequest(run_key=f"review_logs:{context.scheduled_execution_time:%Y-%m-%d}", partition_key=month_key)
