"""Online partitioning of an unpartitioned review_logs: backfill rows/s with a concurrent writer.

2,000,000 legacy rows over 24 months, stored in time order as an append-only log is. Migration 0006, then every month
through the review_logs_partition_backfill asset (batches of 50,000, FOR SHARE, verified per month) while a
writer inserts, updates, moves rows across months and deletes; then 0007 and 0008, and the final
table compared row by row with what must be there. Beside it, in the same run, the offline
reference: one `INSERT INTO ... SELECT` of the whole table into an empty partitioned copy
(no batches, no row locks, no verification: what a maintenance window would run), while the
same writer runs.

    .venv/bin/python bench/partition_backfill.py [--rows 2000000] [--months 24]

Prints one JSON object as its last line; writes its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.support
import dagster as dg
import pandas as pd
import sqlalchemy as sa
from report import machine, publish
from scratch import ADMIN_URL, scratch_postgres

from learning_pipelines.db import migrate, partition_migration
from learning_pipelines.db.engine import get_engine
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.review_logs_partitioning import review_logs_partitioned
from tests.support import partition_rehearsal

FIRST_MONTH = dt.date(2024, 1, 1)
GOAL_ROWS_PER_SECOND = 40_000  # the backfill, end to end, while the app writes
# How the old table stores its rows: the section's label and the key of its figures.
LAYOUTS = {"in_time_order": "in time order (an append-only log)",
           "shuffled": "shuffled (ids unrelated to time: worst case)"}


def offline_copy_seconds(url: str) -> float:
    """The reference: the whole table in one statement into an empty partitioned table."""
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE offline_copy (LIKE review_logs_partitioned INCLUDING ALL) "
                             "PARTITION BY RANGE (reviewed_at)")
        for name, bounds in conn.execute(sa.text(
                "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'review_logs_partitioned'::regclass")):
            conn.exec_driver_sql(f"CREATE TABLE offline_{name} PARTITION OF offline_copy {bounds}")
        conn.exec_driver_sql("ALTER TABLE offline_copy ADD FOREIGN KEY (user_id) REFERENCES users, "
                             "ADD FOREIGN KEY (concept_id) REFERENCES concepts")
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO offline_copy SELECT {', '.join(partition_migration.COLUMNS)} FROM review_logs")
    # Not dropped here: DROP TABLE takes ACCESS EXCLUSIVE on users and concepts (their foreign-key
    # triggers), which deadlocks with the writer; the scratch database goes away at the end.
    return time.perf_counter() - started


def run(n_rows: int, n_months: int, time_ordered: bool) -> dict:
    months = [dt.date(FIRST_MONTH.year + m // 12, m % 12 + 1, 1) for m in range(n_months)]
    with scratch_postgres() as url:
        migrate.upgrade(url, "0005")
        seeded = partition_rehearsal.synthetic_reviews(n_rows, FIRST_MONTH, n_months, n_users=5000, n_concepts=2000,
                                                       time_ordered=time_ordered)
        engine = get_engine(url)
        with engine.begin() as conn:
            partition_rehearsal.install_legacy_review_logs(conn)
            partition_rehearsal.seed_legacy(conn, seeded)
            conn.exec_driver_sql("ANALYZE review_logs")
        writer = partition_rehearsal.ConcurrentWriter(url, seeded["id"].to_numpy(), months, pause_s=0.0)
        writer.start()
        try:
            migrate.upgrade(url, "0006")
            ops_before = sum(writer.counts.values())
            instance = dg.DagsterInstance.ephemeral()
            started = time.perf_counter()
            copied, copy_seconds = 0, 0.0
            for month in months:
                result = dg.materialize([review_logs_partitioned], partition_key=month.isoformat(), instance=instance,
                                        resources={"warehouse": Warehouse(database_url=url)})
                assert all(check.passed for check in result.get_asset_check_evaluations()), month
                metadata = result.get_asset_materialization_events()[0].materialization.metadata
                rows, rate = metadata["rows_copied_this_run"].value, metadata["rows_per_second"].value
                copied += rows
                copy_seconds += rows / rate if rate else 0.0
            backfill_seconds = time.perf_counter() - started
            writer_ops = sum(writer.counts.values()) - ops_before
            reference_seconds = offline_copy_seconds(url)
            swap_started = time.perf_counter()
            migrate.upgrade(url, "0007")
            swap_seconds = time.perf_counter() - swap_started
            migrate.upgrade(url, "0008")
        finally:
            writer.stop()
        with engine.connect() as conn:
            actual = partition_rehearsal.table_rows(conn)
        engine.dispose()
    actual["reviewed_at"] = pd.to_datetime(actual["reviewed_at"], utc=True)
    expected = partition_rehearsal.expected_rows(seeded, writer.changes)
    identical = len(actual) == len(expected) and actual.astype(expected.dtypes.to_dict()).equals(expected)
    if not identical or writer.counts["failed"]:
        raise SystemExit(f"rows differ after the migration (identical={identical}, writer={writer.counts}, "
                         f"{writer.errors[:3]})")
    return {"copied": copied, "backfill_seconds": backfill_seconds, "copy_seconds": copy_seconds,
            "reference_seconds": reference_seconds, "swap_seconds": swap_seconds,
            "writer_rate": writer_ops / backfill_seconds, "writes": dict(writer.counts), "expected_rows": len(expected)}


def rates(n_rows: int, r: dict) -> dict:
    """One layout's figures: rows/s end to end, of which copying, the reference's; ours / reference."""
    ours, reference = r["copied"] / r["backfill_seconds"], n_rows / r["reference_seconds"]
    return {"rows_per_second": round(ours), "copying_rows_per_second": round(r["copied"] / r["copy_seconds"]),
            "reference_rows_per_second": round(reference), "ratio": round(ours / reference, 3),
            "backfill_seconds": round(r["backfill_seconds"], 2), "reference_seconds": round(r["reference_seconds"], 2),
            "writer_tx_per_second": round(r["writer_rate"], 1), "swap_lock_seconds": round(r["swap_seconds"], 3),
            "rows_after": r["expected_rows"]}


def report(n_rows: int, n_months: int, results: dict[str, dict]) -> tuple[list[str], dict]:
    lines = [
        f"`bench/partition_backfill.py --rows {n_rows} --months {n_months}`: {n_rows:,} rows of an unpartitioned "
        f"review_logs (PostgreSQL {_server_version()}) over {n_months} months, moved by migration 0006, the "
        f"backfill job ({n_months} Dagster runs: batches of 50,000, FOR SHARE, per-month count + checksum and "
        "foreign keys), 0007 and 0008, while one writer runs single-row inserts, updates, moves across months and "
        "deletes. Reference, same database and moment: one `INSERT ... SELECT` of the whole table into an empty "
        "partitioned copy with the same keys (no batches, row locks or checks; what a maintenance window would run).",
        "",
        "| old table stored | backfill rows/s, end to end | of which copying | reference rows/s | ratio | writer tx/s "
        "| swap lock |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    figures = {"rows": n_rows, "months": n_months, "goal_rows_per_second": GOAL_ROWS_PER_SECOND}
    for layout, r in results.items():
        figures[layout] = rates(n_rows, r)
        ours, reference = r["copied"] / r["backfill_seconds"], n_rows / r["reference_seconds"]
        lines.append(f"| {LAYOUTS[layout]} | **{ours:,.0f}** | {r['copied'] / r['copy_seconds']:,.0f} "
                     f"| {reference:,.0f} | {ours / reference:.2f} | {r['writer_rate']:,.0f} | {r['swap_seconds']:.2f} s |")
    lines += ["", f"Goal: at least {GOAL_ROWS_PER_SECOND:,} rows/s with zero loss. In every run review_logs afterwards "
              "equals the expected rows exactly (seeded rows with every committed write applied), no duplicate, no "
              "deleted row back: "
              + "; ".join(f"{LAYOUTS[layout]}: {r['expected_rows']:,} rows after {r['writes']['insert']:,} inserts, "
                          f"{r['writes']['update']:,} updates, {r['writes']['move']:,} moves, "
                          f"{r['writes']['delete']:,} deletes" for layout, r in results.items()) + "."]
    return lines, {**figures, "machine": machine()}


def _server_version() -> str:
    with sa.create_engine(ADMIN_URL).connect() as conn:
        return conn.execute(sa.text("SHOW server_version")).scalar().split()[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--months", type=int, default=24)
    args = parser.parse_args()
    results = {layout: run(args.rows, args.months, time_ordered=layout == "in_time_order") for layout in LAYOUTS}
    publish("Online partitioning backfill", *report(args.rows, args.months, results))


if __name__ == "__main__":
    main()
