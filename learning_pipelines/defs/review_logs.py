"""Review logs, one month per partition: validated in the warehouse, placed in each card's history."""

import datetime as dt

import dagster as dg

from learning_pipelines import settings
from learning_pipelines.db import partitions, review_logs as store
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.table_metadata import preview, written_table
from learning_pipelines.domain.review_history import card_intervals, with_learner_days
from learning_pipelines.ingest.validation import review_rule_violations
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
def review_logs(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Validates one month of `review_logs` in the warehouse and writes `review_log_intervals`.

    Rows that break a rule (written by something other than our importers) move to
    `review_log_rejects` with their reason; every other row stays. Re-running a month replaces
    its intervals, so it is idempotent.
    """
    log = asset_logger(context)
    start, end = _utc_window(context.partition_time_window)
    now = dt.datetime.now(dt.timezone.utc)
    # Before the transaction: created inside it, the partition's locks would be held for the whole run.
    partitions.create_month_partitions(warehouse.engine, [start.date()])
    with warehouse.begin() as conn:
        month = store.month_reviews(conn, start, end)
        reasons = review_rule_violations(month, now)
        bad = month.loc[reasons != ""]
        if len(bad):
            store.quarantine(conn, bad, reasons[reasons != ""], f"review_logs asset, partition {context.partition_key}",
                             now, start, end)
            log.warning("reviews moved to review_log_rejects", n_rejected=len(bad))
        month = month.loc[reasons == ""]
        prior = with_learner_days(store.earlier_card_history(conn, start, end), "last_reviewed_at", "last_learner_day")
        reviews = with_learner_days(month.rename(columns={"id": "review_id"}))
        intervals = card_intervals(reviews[["review_id", "user_id", "concept_id", "reviewed_at", "learner_day"]],
                                   prior[["user_id", "concept_id", "n_prior_reviews", "last_learner_day"]])
        store.replace_intervals(conn, start, end, intervals)
        counts = store.month_counts(conn, start, end, now)

    elapsed = intervals["elapsed_days"].dropna()
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(month),
        "preview": preview(month, ["id", "user_id", "concept_id", "reviewed_at", "rating"]),
        "n_learners": int(month["user_id"].nunique()),
        "n_cards": int(month[["user_id", "concept_id"]].drop_duplicates().shape[0]),
        "n_quarantined_now": len(bad),
        "n_rejects_in_month": counts.n_rejects,
        "reject_rate": dg.MetadataValue.float(counts.reject_rate),
        "mean_elapsed_days": dg.MetadataValue.float(float(elapsed.mean()) if len(elapsed) else 0.0),
        "same_day_share": dg.MetadataValue.float(float((elapsed == 0).mean()) if len(elapsed) else 0.0),
        "ratings": dg.MetadataValue.json({str(k): int(v)
                                          for k, v in month["rating"].value_counts().sort_index().items()}),
    })


@dg.asset_check(asset=review_logs, partitions_def=review_log_months, blocking=True,
                description=f"Rejected rows of the month are at most {MAX_REJECT_RATE:.0%} of it.")
def reject_rate_below_threshold(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.begin() as conn:
        counts = store.month_counts(conn, *_utc_window(context.partition_time_window), dt.datetime.now(dt.timezone.utc))
    return dg.AssetCheckResult(passed=counts.reject_rate <= MAX_REJECT_RATE, metadata={
        "reject_rate": counts.reject_rate, "threshold": MAX_REJECT_RATE,
        "n_rejects": counts.n_rejects, "n_reviews": counts.n_reviews})


@dg.asset_check(asset=review_logs, partitions_def=review_log_months,
                description="No review of the month is timestamped after the check ran.")
def no_future_reviews(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.begin() as conn:
        counts = store.month_counts(conn, *_utc_window(context.partition_time_window), dt.datetime.now(dt.timezone.utc))
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
    """Re-validates the current month every night at 01:00, before the 02:00 revision queues."""
    month_key = context.scheduled_execution_time.strftime("%Y-%m-01")
    return dg.RunRequest(run_key=f"review_logs:{context.scheduled_execution_time:%Y-%m-%d}", partition_key=month_key)
