"""Imports started together, each into a month review_logs has no partition for yet, on the test
PostgreSQL while a reader keeps querying: none deadlocks, every row lands once in its month, and no
reader waits longer than the partition DDL's lock timeout, which gives up after a bounded number of
attempts with one clear error."""

import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from learning_pipelines.db import migrate, partitions
from learning_pipelines.db.engine import get_engine
from learning_pipelines.ingest.importer import import_review_file

ROUNDS = 3
IMPORTS_AT_ONCE = 4
ROWS_PER_FILE = 2000
CARDS_PER_FILE = 50
FIRST_MONTH = dt.date(2023, 1, 1)
# Lock waits are bounded by the DDL's lock_timeout; the rest is the DDL itself and the query.
READER_SLACK_S = 1.0


def _month(index: int) -> dt.date:
    return dt.date(FIRST_MONTH.year + index // 12, index % 12 + 1, 1)


def _write_review_file(path, month: dt.date, learner_id: int) -> None:
    """ROWS_PER_FILE reviews of a learner and cards nobody has seen, one a minute from the month's start."""
    start = dt.datetime.combine(month, dt.time(), dt.timezone.utc)
    lines = ["user_id,card_id,review_rating,review_time,review_duration"]
    lines += [f"{learner_id},{learner_id * 1000 + i % CARDS_PER_FILE},{i % 4 + 1},"
              f"{(start + dt.timedelta(minutes=i)).isoformat()},5000" for i in range(ROWS_PER_FILE)]
    path.write_text("\n".join(lines) + "\n")


class _Reader(threading.Thread):
    """Counts review_logs and reads one learner's reviews in turn, timing every query, until stopped."""

    def __init__(self, url: str, learner_id: int):
        super().__init__(daemon=True)
        # A stuck reader fails the test instead of hanging it.
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool,
                                       connect_args={"options": "-c statement_timeout=30000"})
        self.learner_id = learner_id
        self.waits_s: list[float] = []
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        queries = [(sa.text("SELECT count(*) FROM review_logs"), {}),
                   (sa.text("SELECT count(*), max(reviewed_at) FROM review_logs WHERE user_id = :learner"),
                    {"learner": self.learner_id})]
        with self.engine.connect() as conn:
            while not self._stop_event.is_set():
                statement, params = queries[len(self.waits_s) % 2]
                started = time.monotonic()
                try:
                    with conn.begin():
                        conn.execute(statement, params).all()
                except sa.exc.DBAPIError as error:
                    self.errors.append(str(error).splitlines()[0])
                    continue
                self.waits_s.append(time.monotonic() - started)
                self._stop_event.wait(0.01)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.engine.dispose()


def _import_together(engine: sa.Engine, paths: list) -> list:
    """Each file in its own thread and connection, all released at once; a summary or the error per file."""
    barrier = threading.Barrier(len(paths))

    def run(path):
        barrier.wait()
        try:
            return import_review_file(engine, path, register_unknown=True)
        except Exception as error:  # noqa: BLE001 - the test asserts on whatever each import raised
            return error

    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(run, paths))


def test_concurrent_imports_into_new_months_never_deadlock_and_lose_no_row(empty_postgres_url, tmp_path):
    migrate.upgrade(empty_postgres_url)
    engine = get_engine(empty_postgres_url)
    reader = _Reader(empty_postgres_url, learner_id=1)
    reader.start()
    outcomes = []
    try:
        for round_number in range(ROUNDS):
            paths = []
            for k in range(IMPORTS_AT_ONCE):
                index = round_number * IMPORTS_AT_ONCE + k
                paths.append(tmp_path / f"reviews_{index}.csv")
                _write_review_file(paths[-1], _month(index), learner_id=index + 1)
            outcomes += _import_together(engine, paths)
    finally:
        reader.stop()

    failures = [f"{type(o).__name__}: {str(o).splitlines()[0][:200]}" for o in outcomes if isinstance(o, Exception)]
    assert failures == []
    assert [summary.n_loaded for summary in outcomes] == [ROWS_PER_FILE] * ROUNDS * IMPORTS_AT_ONCE
    n_files = ROUNDS * IMPORTS_AT_ONCE
    with engine.connect() as conn:
        n_rows, n_ids = conn.execute(sa.text("SELECT count(*), count(DISTINCT id) FROM review_logs")).one()
        placed = dict(conn.execute(sa.text(
            "SELECT tableoid::regclass::text, count(*) FROM review_logs GROUP BY 1")).all())
    assert n_rows == n_ids == n_files * ROWS_PER_FILE
    assert placed == {partitions.month_partition_name(_month(i)): ROWS_PER_FILE for i in range(n_files)}

    assert reader.errors == []
    assert len(reader.waits_s) > 10, "the reader kept querying while the imports ran"
    assert max(reader.waits_s) < partitions.DDL_LOCK_TIMEOUT_MS / 1000 + READER_SLACK_S


def _hold_review_logs(url: str) -> sa.Connection:
    """A transaction that has read review_logs and stays open: partition DDL must wait for it."""
    conn = sa.create_engine(url, poolclass=sa.pool.NullPool).connect()
    conn.begin()
    conn.execute(sa.text("SELECT count(*) FROM review_logs")).scalar()
    return conn


def test_partition_ddl_gives_up_with_one_clear_error_and_readers_never_queue_past_its_lock_timeout(
        empty_postgres_url, monkeypatch):
    monkeypatch.setattr(partitions, "DDL_LOCK_TIMEOUT_MS", 300)
    monkeypatch.setattr(partitions, "DDL_ATTEMPTS", 3)
    migrate.upgrade(empty_postgres_url)
    engine = get_engine(empty_postgres_url)
    holder = _hold_review_logs(empty_postgres_url)
    reader = _Reader(empty_postgres_url, learner_id=1)
    reader.start()
    try:
        with pytest.raises(partitions.PartitionLockTimeout,
                           match=r"review_logs partition\(s\) for 2023-01: .* through 3 attempts"):
            partitions.create_month_partitions(engine, [dt.date(2023, 1, 1)])
    finally:
        reader.stop()
    assert reader.errors == []
    assert len(reader.waits_s) > 3
    assert max(reader.waits_s) < 0.3 + READER_SLACK_S
    holder.execute(sa.text("SELECT 1")).scalar()  # the transaction in the way was left alone
    holder.commit()
    holder.close()
    assert partitions.create_month_partitions(engine, [dt.date(2023, 1, 1)]) == [dt.date(2023, 1, 1)]


def test_partition_ddl_retries_until_a_transaction_in_the_way_ends(empty_postgres_url, monkeypatch):
    monkeypatch.setattr(partitions, "DDL_LOCK_TIMEOUT_MS", 200)
    migrate.upgrade(empty_postgres_url)
    engine = get_engine(empty_postgres_url)
    holder = _hold_review_logs(empty_postgres_url)
    ending = threading.Timer(0.5, holder.commit)
    ending.start()
    try:
        created = partitions.create_month_partitions(engine, [dt.date(2023, 1, 1), dt.date(2023, 2, 1)])
    finally:
        ending.join()
        holder.close()
    assert created == [dt.date(2023, 1, 1), dt.date(2023, 2, 1)]
    assert partitions.create_month_partitions(engine, [dt.date(2023, 1, 1)]) == []
