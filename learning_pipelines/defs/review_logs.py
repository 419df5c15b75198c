"""Review logs, one month per partition: validated in the warehouse, placed in each card's history."""

import datetime as dt
import json

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, partitions, tables
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.domain.review_history import card_intervals, with_learner_days
from learning_pipelines.ingest.validation import review_rule_violations

# Reviews before 2000 are rejected on import, so the first month partition is January 2000.
FIRST_MONTH = "2000-01-01"
# Above this share of rejected rows a month is not trusted downstream (platform data-quality bar).
MAX_REJECT_RATE = 0.05
_DELETE_CHUNK = 5000

review_log_months = dg.MonthlyPartitionsDefinition(start_date=FIRST_MONTH, end_offset=1)


@dg.asset(
    partitions_def=review_log_months,
    group_name="reviews",
    kinds={"sql", "pandas"},
    check_specs=[
        dg.AssetCheckSpec("reject_rate_below_threshold", asset="review_logs", blocking=True,
                          description=f"Rejected rows of the month are at most {MAX_REJECT_RATE:.0%} of it."),
        dg.AssetCheckSpec("no_future_reviews", asset="review_logs",
                          description="No review of the month is timestamped after the check ran."),
    ],
)
def review_logs(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Validates one month of `review_logs` in the warehouse and writes `review_log_intervals`.

    Rows that break a rule (written by something other than our importers) move to
    `review_log_rejects` with their reason; every other row stays. Re-running a month replaces
    its intervals, so it is idempotent.
    """
    window = context.partition_time_window
    start, end = window.start.astimezone(dt.timezone.utc), window.end.astimezone(dt.timezone.utc)
    now = dt.datetime.now(dt.timezone.utc)
    source = f"review_logs asset, partition {context.partition_key}"
    with warehouse.begin() as conn:
        partitions.ensure_month_partitions(conn, [start.date()])
        month = bulk.read_frame(conn, _month_reviews(start, end))
        reasons = review_rule_violations(month, now)
        bad = month.loc[reasons != ""]
        if len(bad):
            _quarantine(conn, bad, reasons[reasons != ""], source, now, start, end)
            context.log.warning(f"{len(bad)} review(s) of {context.partition_key} moved to review_log_rejects")
        month = month.loc[reasons == ""]
        intervals = _intervals(conn, month, start, end)
        bulk.replace_time_window(conn, tables.review_log_intervals, "reviewed_at", start, end, intervals)
        month_rejects = conn.execute(
            sa.select(sa.func.count()).select_from(tables.review_log_rejects)
            .where(tables.review_log_rejects.c.reviewed_at >= start, tables.review_log_rejects.c.reviewed_at < end)
        ).scalar_one()
        future = conn.execute(
            sa.select(sa.func.count()).select_from(tables.review_logs)
            .where(tables.review_logs.c.reviewed_at >= start, tables.review_logs.c.reviewed_at < end, tables.review_logs.c.reviewed_at > now)
        ).scalar_one()

    n_reviews = len(month)
    reject_rate = month_rejects / (n_reviews + month_rejects) if n_reviews + month_rejects else 0.0
    elapsed = intervals["elapsed_days"].dropna()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n_reviews,
            "n_learners": int(month["user_id"].nunique()),
            "n_cards": int(month[["user_id", "concept_id"]].drop_duplicates().shape[0]),
            "n_quarantined_now": len(bad),
            "n_rejects_in_month": int(month_rejects),
            "reject_rate": dg.MetadataValue.float(float(reject_rate)),
            "mean_elapsed_days": dg.MetadataValue.float(float(elapsed.mean()) if len(elapsed) else 0.0),
            "same_day_share": dg.MetadataValue.float(float((elapsed == 0).mean()) if len(elapsed) else 0.0),
            "ratings": dg.MetadataValue.json({str(k): int(v) for k, v in month["rating"].value_counts().sort_index().items()}),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="reject_rate_below_threshold", passed=reject_rate <= MAX_REJECT_RATE,
                metadata={"reject_rate": float(reject_rate), "threshold": MAX_REJECT_RATE,
                          "n_rejects": int(month_rejects), "n_reviews": n_reviews}),
            dg.AssetCheckResult(check_name="no_future_reviews", passed=future == 0,
                                metadata={"n_future_reviews": int(future)}),
        ],
    )


def _month_reviews(start: dt.datetime, end: dt.datetime) -> sa.Select:
    return (
        sa.select(tables.review_logs, tables.users.c.timezone, tables.users.c.day_start_hour)
        .join(tables.users, tables.users.c.user_id == tables.review_logs.c.user_id)
        .where(tables.review_logs.c.reviewed_at >= start, tables.review_logs.c.reviewed_at < end)
    )


def _quarantine(conn, bad: pd.DataFrame, reasons: pd.Series, source: str, now, start, end) -> None:
    columns = [c.name for c in tables.review_logs.columns]
    bulk.bulk_insert(conn, tables.review_log_rejects, pd.DataFrame({
        "source": source,
        "review_id": bad["id"].to_numpy(),
        "reviewed_at": bad["reviewed_at"].to_numpy(),
        "raw_row": [json.dumps(row, default=str) for row in bad[columns].to_dict("records")],
        "reason": reasons.to_numpy(),
        "rejected_at": now,
    }))
    ids = bad["id"].astype("int64").tolist()
    for offset in range(0, len(ids), _DELETE_CHUNK):
        conn.execute(tables.review_logs.delete().where(
            tables.review_logs.c.id.in_(ids[offset:offset + _DELETE_CHUNK]),
            tables.review_logs.c.reviewed_at >= start, tables.review_logs.c.reviewed_at < end))


def _intervals(conn, month: pd.DataFrame, start, end) -> pd.DataFrame:
    """Intervals of the month's reviews, continuing each card's history from earlier months."""
    earlier = tables.review_logs.alias("earlier")
    month_cards = (sa.select(tables.review_logs.c.user_id, tables.review_logs.c.concept_id).distinct()
                   .where(tables.review_logs.c.reviewed_at >= start, tables.review_logs.c.reviewed_at < end).subquery())
    prior = bulk.read_frame(conn, (
        sa.select(earlier.c.user_id, earlier.c.concept_id, sa.func.count().label("n_prior_reviews"),
                  sa.func.max(earlier.c.reviewed_at).label("last_reviewed_at"), tables.users.c.timezone,
                  tables.users.c.day_start_hour)
        .join(month_cards, sa.and_(month_cards.c.user_id == earlier.c.user_id,
                                   month_cards.c.concept_id == earlier.c.concept_id))
        .join(tables.users, tables.users.c.user_id == earlier.c.user_id)
        .where(earlier.c.reviewed_at < start)
        .group_by(earlier.c.user_id, earlier.c.concept_id, tables.users.c.timezone, tables.users.c.day_start_hour)
    ))
    prior["last_reviewed_at"] = pd.to_datetime(prior["last_reviewed_at"], utc=True, format="ISO8601")
    prior = with_learner_days(prior, "last_reviewed_at", "last_learner_day")
    reviews = with_learner_days(month.rename(columns={"id": "review_id"}))
    return card_intervals(reviews[["review_id", "user_id", "concept_id", "reviewed_at", "learner_day"]],
                          prior[["user_id", "concept_id", "n_prior_reviews", "last_learner_day"]])


review_logs_job = dg.define_asset_job(
    "review_logs_job", selection=["review_logs"],
    tags={"dagster/max_runtime": str(2 * 60 * 60)},
)


@dg.schedule(cron_schedule="0 1 * * *", job=review_logs_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def review_logs_nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Re-validates the current month every night at 01:00, before the 02:00 revision queues."""
    month_key = context.scheduled_execution_time.strftime("%Y-%m-01")
    return dg.RunRequest(run_key=f"review_logs:{context.scheduled_execution_time:%Y-%m-%d}", partition_key=month_key)
