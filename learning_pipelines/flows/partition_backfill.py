"""One month of an unpartitioned review_logs copied into its monthly partition, during the online migration
(db/partition_migration.py has the runbook): in resumable batches, then compared and constrained."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable

import sqlalchemy as sa

from learning_pipelines.db import partition_migration
from learning_pipelines.flows.refusals import Refused


@dataclasses.dataclass(frozen=True)
class MonthCopy:
    month: dt.date
    resumed_after_rows: int  # rows an earlier, interrupted run had copied
    batches: int
    rows_read: int
    rows_inserted: int
    comparison: partition_migration.MonthComparison
    constrained: list[str]  # foreign keys validated on the month's partition by this run
    seconds: float

    def metadata(self) -> dict:
        return {
            "dagster/row_count": self.comparison.new_rows,
            "rows_copied_this_run": self.rows_read,
            "rows_already_mirrored": self.rows_read - self.rows_inserted,
            "resumed_after_rows": self.resumed_after_rows,
            "batches": self.batches,
            "foreign_keys_validated_now": ", ".join(self.constrained) or "none",
            "rows_per_second": self.rows_read / self.seconds if self.seconds else 0.0,
        }


def copy_month(engine: sa.Engine, month: dt.date, batch_size: int, pause_between_batches_s: float,
               log: Callable[..., None]) -> MonthCopy:
    """Batches keyed by (reviewed_at, id), each committed with its progress, so a killed run resumes after its
    last batch; rows are locked FOR SHARE while copied, so a concurrent update or delete waits and is then mirrored
    by the trigger. Then the month is compared in one snapshot, and its foreign keys validated when it matches."""
    with engine.begin() as conn:
        if partition_migration.layout(conn) != "migrating":
            raise Refused(partition_migration.progress_report(conn)["next_step"])
        before = partition_migration.month_progress(conn, month)
    resumed_from = int(before["rows_copied"]) if before and before["finished_at"] is None else 0
    if resumed_from:
        log("resuming after the rows an earlier run copied", rows_copied=resumed_from)
    started, batches, rows_read, rows_inserted = time.perf_counter(), 0, 0, 0
    while True:
        with engine.begin() as conn:
            batch = partition_migration.copy_month_batch(conn, month, batch_size)
        batches += 1
        rows_read += batch.rows_read
        rows_inserted += batch.rows_inserted
        if batch.finished:
            break
        if batches % 20 == 0:
            log("rows copied", rows_copied=resumed_from + rows_read)
        time.sleep(pause_between_batches_s)
    seconds = time.perf_counter() - started
    with engine.begin() as conn:
        comparison = partition_migration.verify_month(conn, month)
    constrained = partition_migration.constrain_month(engine, month) if comparison.matches else []
    return MonthCopy(month, resumed_from, batches, rows_read, rows_inserted, comparison, constrained, seconds)
