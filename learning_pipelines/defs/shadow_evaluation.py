"""The daily shadow evaluation of the FSRS weights in use: predicted against actual recall, per A/B group."""

import datetime as dt

import dagster as dg

from learning_pipelines import settings
from learning_pipelines.defs.fsrs import fsrs_parameters
from learning_pipelines.defs.recipe_steps import recipe_step
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.table_metadata import shown, written_table
from learning_pipelines.flows.shadow_evaluation import evaluate_day

SHADOW_FIRST_DAY = "2024-01-01"
shadow_days = dg.DailyPartitionsDefinition(start_date=SHADOW_FIRST_DAY)


@dg.asset(group_name="fsrs", deps=[dg.AssetDep(fsrs_parameters, partition_mapping=dg.AllPartitionMapping())],
          partitions_def=shadow_days, kinds={"python", "sql"},
          owners=["team:learning-intelligence"], metadata=written_table("eval_metrics_daily"))
@recipe_step
def fsrs_shadow_evaluation(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Predicted against actual recall for one day's reviews, per A/B group: BASELINE_GLOBAL learners
    are scored with the global weights, TUNED_ELIGIBLE with their own (global until they have them).
    Writes one row per group to eval_metrics_daily (replacing the day's rows)."""
    window = context.partition_time_window
    summary = evaluate_day(warehouse.engine, window.start.date(), window.start.astimezone(dt.timezone.utc),
                           window.end.astimezone(dt.timezone.utc))
    return dg.MaterializeResult(metadata=shown(summary.metadata()))


fsrs_shadow_evaluation_job = dg.define_asset_job(
    "fsrs_shadow_evaluation_job", selection=[fsrs_shadow_evaluation],
    description="Scores one day's recall predictions per A/B group into eval_metrics_daily.")


@dg.schedule(cron_schedule="30 3 * * *", job=fsrs_shadow_evaluation_job, execution_timezone="UTC",
             default_status=settings.DEFAULT_SCHEDULE_STATUS, description="Scores yesterday (UTC) nightly at 03:30.")
def fsrs_shadow_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = (context.scheduled_execution_time - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"fsrs_shadow:{day}", partition_key=day)
