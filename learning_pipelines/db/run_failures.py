"""Writes of pipeline_run_failures: one row per failed run, kept by the run failure sensor."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from learning_pipelines.db import tables

failures = tables.pipeline_run_failures


def record(conn: sa.Connection, report: dict, webhook_status: str) -> None:
    """Stores the failure report (`run_id`, `job`, `step`, `error_class`, `message`, `failed_at` as ISO
    text) with what came of the webhook post; a run reported again replaces its row."""
    conn.execute(failures.delete().where(failures.c.run_id == report["run_id"]))
    conn.execute(failures.insert().values(
        run_id=report["run_id"], job_name=report["job"], step_key=report["step"],
        error_class=report["error_class"], message=report["message"],
        failed_at=dt.datetime.fromisoformat(report["failed_at"]), webhook_status=webhook_status))
