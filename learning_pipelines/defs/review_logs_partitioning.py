"""Backfill of the online move of an unpartitioned review_logs into monthly partitions.

Runs between migrations 0006 and 0007 (see db/partition_migration.py and the README runbook),
one month per partition: turn on `review_logs_partition_backfill_sensor`, or launch a backfill of
`review_logs_partition_backfill` over the months that `learning-pipelines db partition-status` lists.
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from learning_pipelines.db import partition_migration
from learning_pipelines.db.partition_migration import MonthComparison
from learning_pipelines.defs.recipe_steps import recipe_step
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.review_logs import review_log_months
from learning_pipelines.defs.table_metadata import shown
from learning_pipelines.flows.partition_backfill import copy_month
from learning_pipelines.observability.structured_logs import asset_logger


class BackfillConfig(dg.Config):
    batch_size: int = Field(default=50_000, gt=0, description="Rows copied per transaction.")
    pause_between_batches_s: float = Field(
        default=0.0, ge=0, description="Sleep between batches, to leave the database breathing room at peak hours.")


@dg.asset(
    partitions_def=review_log_months,
    group_name="maintenance",
    kinds={"postgres"},
    owners=["team:learning-intelligence"],
    check_specs=[dg.AssetCheckSpec(
        "month_matches_unpartitioned_table", asset="review_logs_partitioned", blocking=True,
        description="Row count and checksum of the month are equal in review_logs and review_logs_partitioned, "
                    "read in one snapshot. Migration 0007 swaps only when every month passed.")],
    tags={"learning_pipelines/maintenance": "review_logs_partitioning"},
)
@recipe_step
def review_logs_partitioned(context: dg.AssetExecutionContext, config: BackfillConfig,
                            warehouse: Warehouse) -> dg.MaterializeResult:
    """One month of the unpartitioned review_logs copied into its monthly partition: in batches committed with
    their progress (a killed run resumes after its last batch), rows locked FOR SHARE while copied so that a
    concurrent update or delete waits and is then mirrored by the trigger; then compared with the old table."""
    month = context.partition_time_window.start.astimezone(dt.timezone.utc).date()
    copied = copy_month(warehouse.engine, month, config.batch_size, config.pause_between_batches_s,
                        log=asset_logger(context).info)
    return dg.MaterializeResult(metadata=shown(copied.metadata()), check_results=[_month_check(copied.comparison)])


def _month_check(comparison: MonthComparison) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name="month_matches_unpartitioned_table", passed=comparison.matches,
        description=None if comparison.matches else
        f"{comparison.month:%Y-%m} differs: {comparison.old_rows} rows in review_logs, {comparison.new_rows} in "
        "review_logs_partitioned. Re-run the month; if it persists, check that the mirror trigger is enabled.",
        metadata={"month": comparison.month.isoformat(), "rows_unpartitioned": comparison.old_rows,
                  "rows_partitioned": comparison.new_rows, "checksum_unpartitioned": comparison.old_checksum,
                  "checksum_partitioned": comparison.new_checksum})


review_logs_partition_backfill = dg.define_asset_job(
    "review_logs_partition_backfill", selection=[review_logs_partitioned],
    # A killed run resumes where it stopped, so a stuck one may as well be failed by run monitoring.
    tags={"dagster/max_runtime": str(6 * 60 * 60)},
    description="Copies months of an unpartitioned review_logs into review_logs_partitioned "
                "(between migrations 0006 and 0007); resumable, verified per month.",
)


@dg.sensor(job=review_logs_partition_backfill, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.STOPPED,
           description="During the online partitioning of review_logs (after migration 0006): launches the "
                       "backfill of every month not verified yet. Off until an operator turns it on.")
def review_logs_partition_backfill_sensor(context: dg.SensorEvaluationContext, warehouse: Warehouse) -> dg.SensorResult:
    """Drives the backfill once migration 0006 ran: a run for every month not verified yet that has
    none in flight. Off by default: an operator turns it on for the move (runbook in the README).

    The run key holds the rows copied so far, so a month is launched again only after a run made
    progress; a month whose run failed without progress waits for a person.
    """
    with warehouse.begin() as conn:
        report = partition_migration.progress_report(conn)
    if report["layout"] != "migrating":
        return dg.SensorResult(skip_reason=report["next_step"])
    in_flight = {run.tags.get("dagster/partition") for run in context.instance.get_runs(dg.RunsFilter(
        job_name=review_logs_partition_backfill.name,
        statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                  dg.DagsterRunStatus.STARTED]))}
    requests = [
        dg.RunRequest(partition_key=month["month"], run_key=f"{month['month']}:{month['rows_copied']}")
        for month in report["months"] if month["verified_at"] is None and month["month"] not in in_flight
    ]
    if requests:
        return dg.SensorResult(run_requests=requests)
    return dg.SensorResult(skip_reason=(
        f"{len(report['unverified_months'])} month(s) unverified, each with a run in flight" if report["unverified_months"]
        else "every month is verified: run `alembic upgrade 0007`"))
