"""Online move of an unpartitioned review_logs into monthly partitions (migrations 0006-0008 and
the review_logs_partition_backfill job), on the test PostgreSQL, while a writer keeps writing."""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command
from prometheus_client import generate_latest

from learning_pipelines import cli
from learning_pipelines.db import maintenance, migrate, partition_migration
from learning_pipelines.db.engine import DATABASE_URL_ENV, get_engine
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.review_logs_partitioning import review_logs_partition_backfill_sensor, review_logs_partitioned
from learning_pipelines.observability.exporter import build_registry
from tests.support import partition_rehearsal

ROOT = Path(__file__).resolve().parents[2]
FIRST_MONTH = dt.date(2025, 1, 1)
MONTHS = [dt.date(2025 + m // 12, m % 12 + 1, 1) for m in range(14)]


def _legacy_database(url: str, n_rows: int, n_months: int = 14) -> pd.DataFrame:
    migrate.upgrade(url, "0005")
    seeded = partition_rehearsal.synthetic_reviews(n_rows, FIRST_MONTH, n_months)
    with get_engine(url).begin() as conn:
        partition_rehearsal.install_legacy_review_logs(conn)
        partition_rehearsal.seed_legacy(conn, seeded)
    return seeded


def _backfill(url: str, month: dt.date, batch_size: int = 5000, raise_on_error: bool = True):
    return dg.materialize(
        [review_logs_partitioned], partition_key=month.isoformat(),
        resources={"warehouse": Warehouse(database_url=url)},
        run_config={"ops": {"review_logs_partitioned": {"config": {"batch_size": batch_size}}}},
        raise_on_error=raise_on_error,
    )


def _progress(url: str, month: dt.date) -> dict:
    with get_engine(url).connect() as conn:
        return partition_migration.month_progress(conn, month)


def _kill_mid_month(url: str, month: dt.date, dagster_home: Path) -> dict:
    """Starts the month in a real `dagster asset materialize` process, SIGKILLs it mid-month."""
    dagster_home.mkdir()
    log = dagster_home / "materialize.log"
    run_config = {"ops": {"review_logs_partitioned": {"config": {"batch_size": 500, "pause_between_batches_s": 0.3}}}}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "learning_pipelines.definitions",
         "--select", "review_logs_partitioned", "--partition", month.isoformat(), "--config-json", json.dumps(run_config)],
        cwd=ROOT, env={**os.environ, DATABASE_URL_ENV: url, "DAGSTER_HOME": str(dagster_home)},
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (_progress(url, month)["rows_copied"] or 0) < 2000:
        assert process.poll() is None, f"the backfill ended before it could be killed:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return _progress(url, month)


@pytest.mark.slow
def test_online_partitioning_under_concurrent_writes_with_a_killed_backfill(empty_postgres_url, tmp_path):
    url = empty_postgres_url
    seeded = _legacy_database(url, 200_000)
    writer = partition_rehearsal.ConcurrentWriter(url, seeded["id"].to_numpy(), MONTHS)
    writer.start()
    try:
        migrate.upgrade(url, "0006")
        killed_month = MONTHS[3]
        at_kill = _kill_mid_month(url, killed_month, tmp_path / "dagster_home")
        assert at_kill["finished_at"] is None and 0 < at_kill["rows_copied"] < (seeded["reviewed_at"].dt.month == 4).sum()

        for month in MONTHS:
            result = _backfill(url, month)
            [check] = result.get_asset_check_evaluations()
            assert check.passed, check.metadata
            metadata = result.get_asset_materialization_events()[0].materialization.metadata
            if month == killed_month:
                assert metadata["resumed_after_rows"].value == at_kill["rows_copied"]
        with get_engine(url).connect() as conn:
            assert partition_migration.progress_report(conn)["unverified_months"] == []

        migrate.upgrade(url, "0007")
        time.sleep(0.5)  # writes against the swapped table, mirrored back into the old one
        migrate.upgrade(url, "0008")
        time.sleep(0.5)
    finally:
        writer.stop()

    assert writer.counts["failed"] == 0, writer.errors[:5]
    assert all(writer.counts[k] > 0 for k in ("insert", "update", "move", "delete"))
    engine = get_engine(url)
    with engine.connect() as conn:
        assert partition_migration.layout(conn) == "partitioned"
        actual = partition_rehearsal.table_rows(conn)
        n_rows, n_ids = conn.execute(sa.text("SELECT count(*), count(DISTINCT id) FROM review_logs")).one()
        sequence_owner = conn.execute(sa.text("SELECT pg_get_serial_sequence('review_logs', 'id')")).scalar()
        n_partitions, n_attached_keys = conn.execute(sa.text(
            "SELECT count(DISTINCT i.inhrelid), count(k.oid) FROM pg_inherits i LEFT JOIN pg_constraint k "
            "ON k.conrelid = i.inhrelid AND k.contype = 'f' AND k.conparentid <> 0 AND k.convalidated "
            "WHERE i.inhparent = 'review_logs'::regclass")).one()
    expected = partition_rehearsal.expected_rows(seeded, writer.changes)
    actual["reviewed_at"] = pd.to_datetime(actual["reviewed_at"], utc=True)
    assert n_rows == n_ids == len(expected)
    deleted = [review_id for review_id, row in writer.changes.items() if row is None]
    assert not actual["id"].isin(deleted).any(), "a deleted row came back"
    pd.testing.assert_frame_equal(actual.astype(expected.dtypes.to_dict()), expected)
    assert sequence_owner == "public.review_logs_id_seq"
    assert n_attached_keys == 2 * n_partitions  # both foreign keys validated on every partition
    with engine.begin() as conn:  # the application's id default survives the swap and the drop
        conn.execute(sa.text("INSERT INTO review_logs (reviewed_at, user_id, concept_id, rating, review_duration_ms) "
                             "VALUES ('2026-02-03T00:00Z', 1, 1, 3, 100)"))
    migrate.upgrade(url, "head")  # later migrations apply to the swapped table as to one partitioned from the start
    command.check(migrate.alembic_config(url))  # the swapped table is exactly the one migrations define
    assert maintenance.verify(engine) == []
    with engine.connect() as conn:
        numbered = conn.execute(sa.text("SELECT count(ingest_seq) FROM review_logs")).scalar_one()
    assert numbered == 0, "rows stored before 0009 keep no ingestion number"


def test_swap_refuses_while_a_month_is_unverified(empty_postgres_url):
    url = empty_postgres_url
    _legacy_database(url, 3000, n_months=3)
    migrate.upgrade(url, "0006")
    _backfill(url, MONTHS[0])
    # Prometheus shows the move's progress.
    metrics = generate_latest(build_registry(dg.DagsterInstance.ephemeral(), get_engine(url))).decode()
    assert 'review_logs_partition_migration_months{state="verified"} 1.0' in metrics
    assert 'review_logs_partition_migration_months{state="pending"} 2.0' in metrics
    copied = _progress(url, MONTHS[0])["rows_copied"]
    assert f"review_logs_partition_migration_rows_copied {float(copied)}" in metrics and copied > 0
    # The sensor asks for a run of each month not verified yet.
    sensor_context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(),
                                             resources={"warehouse": Warehouse(database_url=url)})
    requests = review_logs_partition_backfill_sensor(sensor_context).run_requests
    assert [(r.partition_key, r.run_key) for r in requests] == [("2025-02-01", "2025-02-01:0"),
                                                                 ("2025-03-01", "2025-03-01:0")]
    # Raised by migrations/frozen/online_partitioning_0006.py: its own MigrationRefused.
    with pytest.raises(RuntimeError, match=r"swap refused: 2 month\(s\) not verified yet \(2025-02, 2025-03\)"):
        migrate.upgrade(url, "0007")
    assert migrate.current_revision(get_engine(url)) == "0006"

    engine = get_engine(url)
    with engine.begin() as holder:  # a second run of a month already being copied stops with a clear message
        partition_migration.copy_month_batch(holder, MONTHS[1], 500)
        refused = pytest.raises(partition_migration.MigrationRefused, match="being copied by another run")
        with engine.begin() as conn, refused:
            partition_migration.copy_month_batch(conn, MONTHS[1], 500)
    for month in MONTHS[1:3]:
        _backfill(url, month)
    with get_engine(url).begin() as conn:  # a row lost behind the trigger's back
        conn.execute(sa.text("DELETE FROM review_logs_partitioned WHERE id = (SELECT min(id) FROM review_logs_partitioned "
                             "WHERE reviewed_at < '2025-02-01')"))
    result = _backfill(url, MONTHS[0], raise_on_error=False)
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["rows_unpartitioned"].value == check.metadata["rows_partitioned"].value + 1
    with pytest.raises(RuntimeError, match=r"swap refused: 1 month\(s\) not verified yet \(2025-01\)"):
        migrate.upgrade(url, "0007")


def test_downgrades_restore_the_unpartitioned_table(empty_postgres_url):
    url = empty_postgres_url
    _legacy_database(url, 5000, n_months=4)
    engine = get_engine(url)

    def snapshot():
        with engine.connect() as conn:
            return (partition_migration.layout(conn), partition_rehearsal.table_rows(conn),
                    partition_rehearsal.constraint_definitions(conn), partition_rehearsal.index_definitions(conn),
                    conn.execute(sa.text("SELECT pg_get_serial_sequence('review_logs', 'id')")).scalar())

    before = snapshot()
    assert before[0] == "unpartitioned"
    migrate.upgrade(url, "0006")
    for month in MONTHS[:4]:
        _backfill(url, month)
    migrate.upgrade(url, "head")
    with engine.begin() as conn:  # written after the old table is gone; must survive the rollback
        conn.execute(sa.text("UPDATE review_logs SET rating = 1 WHERE id = 7"))
        conn.execute(sa.text("DELETE FROM review_logs WHERE id = 8"))
    expected = before[1].set_index("id").drop(index=8)
    expected.loc[7, "rating"] = 1

    migrate.downgrade(url, "0007")  # rebuilds the old table, mirrored again
    with engine.connect() as conn:
        assert partition_migration.layout(conn) == "swapped"
    migrate.downgrade(url, "0006")  # swaps back
    with engine.connect() as conn:
        assert partition_migration.layout(conn) == "migrating"
    migrate.downgrade(url, "0005")  # abandons the shadow table
    after = snapshot()
    assert after[0] == "unpartitioned"
    pd.testing.assert_frame_equal(after[1].set_index("id"), expected)
    assert after[2:] == before[2:]  # same constraints, indexes and id sequence, under the same names

    migrate.upgrade(url, "0006")  # and the migration can start again
    with engine.connect() as conn:
        assert partition_migration.layout(conn) == "migrating"


def test_nothing_to_migrate_is_explained(warehouse_url, capsys):
    """SQLite and a warehouse partitioned from the start: migrations 0006-0008 are no-ops."""
    assert cli.main(["db", "partition-status", "--database-url", warehouse_url]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layout"] == ("sqlite" if warehouse_url.startswith("sqlite") else "partitioned")
    assert "no migration" in report["next_step"] or "nothing to migrate" in report["next_step"]
    skip = review_logs_partition_backfill_sensor(dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), resources={"warehouse": Warehouse(database_url=warehouse_url)}))
    assert skip.skip_reason.skip_message == report["next_step"]
    result = _backfill(warehouse_url, MONTHS[0], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert failure.description == report["next_step"]
