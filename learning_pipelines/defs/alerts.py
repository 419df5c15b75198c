"""Run-failure reporting: every failed run is recorded in the warehouse and, when a webhook is
configured (the `alert_webhook` resource), posted to it as JSON (job, run id, step, error class, a short
message without SQL)."""

import datetime as dt
import re

import dagster as dg

from learning_pipelines.db import run_failures
from learning_pipelines.defs.resources import AlertWebhook, Warehouse
from learning_pipelines.observability.alert_webhook import ALERT_WEBHOOK_ENV, post_alert
from learning_pipelines.observability.structured_logs import dagster_logger

MESSAGE_CHARS = 300  # enough for the error's first line; alerts are pointers to the run, not its log
# SQLAlchemy appends the statement and its bound values (learner data) after the message.
_SQL_SECTIONS = re.compile(r"\[(?:SQL|parameters): .*", re.DOTALL)


def short_message(message: str) -> str:
    """The error's first line, cut before any `[SQL: ...]` or `[parameters: ...]` section: the driver's
    DETAIL lines (which quote row values) and the statement's parameters never leave the run."""
    lines = _SQL_SECTIONS.sub("", message).strip().splitlines()
    return lines[0][:MESSAGE_CHARS] if lines else ""


def failure_report(context: dg.RunFailureSensorContext) -> dict:
    """Job, run, first failed step, its error class and a short message without SQL or its parameters."""
    step_failures = context.get_step_failure_events()
    first = step_failures[0] if step_failures else None
    error = first.event_specific_data.error if first is not None else None
    # Dagster wraps the user's exception; report the one the asset raised.
    while error is not None and error.cls_name.startswith("Dagster") and error.cause is not None:
        error = error.cause
    message = error.message if error is not None else context.failure_event.message
    return {
        "job": context.dagster_run.job_name,
        "run_id": context.dagster_run.run_id,
        "step": first.step_key if first is not None else None,
        "error_class": error.cls_name if error is not None else None,
        "message": short_message(message or "") or "run failed",
        "failed_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }


# Running by default, in development too: it only records and posts failures, it launches nothing.
@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
                       description=f"Records every failed run in pipeline_run_failures and posts it to "
                                   f"${ALERT_WEBHOOK_ENV} when that is set.")
def run_failure_reporter(context: dg.RunFailureSensorContext, warehouse: Warehouse,
                         alert_webhook: AlertWebhook) -> None:
    """Records every failed run of this code location in `pipeline_run_failures` (job, run id, step,
    error class) and posts it to the `alert_webhook` resource's URL ($LEARNING_PIPELINES_ALERT_WEBHOOK) when set."""
    report = failure_report(context)
    status = post_alert(alert_webhook.url, report) if alert_webhook.url else "no webhook configured"
    dagster_logger(context.log, sensor=context.sensor_name).info(
        "run failure reported", failed_run_id=report["run_id"], failed_job=report["job"], step=report["step"],
        webhook=status)
    with warehouse.begin() as conn:
        run_failures.record(conn, report, status)
