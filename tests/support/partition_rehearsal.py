"""Rehearsing the online partitioning on a scratch PostgreSQL database (tests/test_online_partitioning.py
and bench/partition_backfill.py).

`install_legacy_review_logs` replaces review_logs by the unpartitioned shape that platforms from
before partitioning run (bigserial id, primary key on id alone, PostgreSQL's default names);
`ConcurrentWriter` plays the application writing into it during the whole migration and
remembers every committed change, so the final table can be compared with what must be there.
"""

from __future__ import annotations

import datetime as dt
import random
import threading

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, partitions, tables
from learning_pipelines.db.partition_migration import COLUMNS

_COLUMN_LIST = ", ".join(COLUMNS)


def install_legacy_review_logs(conn: sa.Connection) -> None:
    conn.exec_driver_sql("DROP TABLE review_logs CASCADE")
    conn.exec_driver_sql(
        "CREATE TABLE review_logs (id bigserial PRIMARY KEY, reviewed_at timestamptz NOT NULL, "
        "user_id bigint NOT NULL REFERENCES users (user_id), concept_id bigint NOT NULL REFERENCES concepts (concept_id), "
        "rating smallint NOT NULL CHECK (rating BETWEEN 1 AND 4), review_duration_ms integer NOT NULL "
        "CHECK (review_duration_ms >= 0), state smallint CHECK (state IS NULL OR state BETWEEN 0 AND 3))"
    )
    conn.exec_driver_sql("CREATE INDEX review_logs_reviewed_at_idx ON review_logs (reviewed_at)")
    conn.exec_driver_sql("CREATE INDEX review_logs_card_idx ON review_logs (user_id, concept_id, reviewed_at)")


def synthetic_reviews(n_rows: int, first_month: dt.date, n_months: int, n_users: int = 500,
                      n_concepts: int = 200, seed: int = 0, time_ordered: bool = True) -> pd.DataFrame:
    """Rows spread evenly over `n_months` whole UTC months, ids 1..n_rows (the order they are stored
    in) ascending with time as in a log written while the reviews happened, or unrelated to it."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(first_month, tz="UTC")
    span_s = int((start + pd.DateOffset(months=n_months) - start).total_seconds())
    offsets = rng.integers(0, span_s, n_rows)
    return pd.DataFrame({
        "id": np.arange(1, n_rows + 1, dtype=np.int64),
        "reviewed_at": start + pd.to_timedelta(np.sort(offsets) if time_ordered else offsets, unit="s"),
        "user_id": rng.integers(1, n_users + 1, n_rows),
        "concept_id": rng.integers(1, n_concepts + 1, n_rows),
        "rating": rng.integers(1, 5, n_rows).astype(np.int16),
        "review_duration_ms": rng.integers(500, 60_000, n_rows).astype(np.int32),
        "state": rng.integers(0, 4, n_rows).astype(np.int16),
    })


def seed_legacy(conn: sa.Connection, reviews: pd.DataFrame) -> None:
    """Learners, concepts and the reviews, written into the (legacy) review_logs."""
    bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": np.unique(reviews["user_id"])}))
    concept_ids = np.unique(reviews["concept_id"])
    bulk.bulk_insert(conn, tables.concepts, pd.DataFrame({"concept_id": concept_ids,
                                                          "name": [f"concept {i}" for i in concept_ids]}))
    bulk.bulk_insert(conn, tables.review_logs, reviews)
    conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('review_logs', 'id'), (SELECT max(id) FROM review_logs))")


def table_rows(conn: sa.Connection, table: str = "review_logs") -> pd.DataFrame:
    return pd.read_sql_query(sa.text(f"SELECT {_COLUMN_LIST} FROM {table} ORDER BY id"), conn)


def constraint_definitions(conn: sa.Connection, table: str = "review_logs") -> list[tuple[str, str]]:
    return [tuple(row) for row in conn.execute(sa.text(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass(:t) "
        "ORDER BY contype = 'f', conname"), {"t": table})]


def index_definitions(conn: sa.Connection, table: str = "review_logs") -> list[tuple[str, str]]:
    """Indexes that no constraint owns."""
    return [tuple(row) for row in conn.execute(sa.text(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = to_regclass(:t) AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) "
        "ORDER BY c.relname"), {"t": table})]


def expected_rows(seeded: pd.DataFrame, changes: dict[int, tuple | None]) -> pd.DataFrame:
    """The seeded rows with every committed change applied (None: deleted)."""
    untouched = seeded.loc[~seeded["id"].isin(list(changes))]
    live = [row for row in changes.values() if row is not None]
    changed = pd.DataFrame(live, columns=list(COLUMNS)).astype(seeded.dtypes.to_dict()) if live else seeded.iloc[:0]
    return pd.concat([untouched, changed]).sort_values("id").reset_index(drop=True)


class ConcurrentWriter(threading.Thread):
    """Inserts, updates (a share of them moving a row to another month) and deletes, one row per
    transaction, until stopped; `changes` holds the committed outcome of every touched id."""

    def __init__(self, url: str, seeded_ids: np.ndarray, months: list[dt.date], seed: int = 1,
                 pause_s: float = 0.001) -> None:
        super().__init__(daemon=True)
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.months = months
        self.pause_s = pause_s
        self.random = random.Random(seed)
        self.live = list(map(int, seeded_ids))
        self.changes: dict[int, tuple | None] = {}
        self.counts = {"insert": 0, "update": 0, "move": 0, "delete": 0, "failed": 0}
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.engine.dispose()

    def run(self) -> None:
        with self.engine.connect() as conn:
            while not self._stop_event.is_set():
                kind = self.random.choices(["insert", "update", "move", "delete"], [4, 3, 1, 2])[0]
                try:
                    with conn.begin():
                        outcome = getattr(self, f"_write_{kind}")(conn)
                except sa.exc.DBAPIError as error:
                    self.counts["failed"] += 1
                    self.errors.append(str(error).splitlines()[0])
                    continue
                if outcome is not None:
                    self._remember(kind, *outcome)
                    self.counts[kind] += 1
                self._stop_event.wait(self.pause_s)

    def _remember(self, kind: str, review_id: int, row: tuple | None) -> None:
        if kind == "insert":
            self.live.append(review_id)
        self.changes[review_id] = row

    def _existing_id(self) -> int:
        # Deleted ids stay in `live` (cheap removal); drawing skips them.
        while True:
            review_id = self.random.choice(self.live)
            if self.changes.get(review_id, ()) is not None:
                return review_id

    def _moment(self) -> dt.datetime:
        month_start, _ = partitions.month_bounds(self.random.choice(self.months))
        return month_start + dt.timedelta(
            seconds=self.random.randrange(28 * 86400))

    def _write_insert(self, conn):
        row = conn.execute(sa.text(
            "INSERT INTO review_logs (reviewed_at, user_id, concept_id, rating, review_duration_ms, state) "
            "VALUES (:at, (SELECT min(user_id) FROM users), (SELECT min(concept_id) FROM concepts), :rating, :ms, 1) "
            f"RETURNING {_COLUMN_LIST}"
        ), {"at": self._moment(), "rating": self.random.randint(1, 4), "ms": self.random.randint(500, 9000)}).one()
        return row.id, tuple(row)

    def _write_update(self, conn):
        row = conn.execute(sa.text(
            f"UPDATE review_logs SET rating = :rating, review_duration_ms = :ms WHERE id = :id RETURNING {_COLUMN_LIST}"
        ), {"id": self._existing_id(), "rating": self.random.randint(1, 4),
            "ms": self.random.randint(500, 9000)}).one_or_none()
        return (row.id, tuple(row)) if row else None

    def _write_move(self, conn):
        row = conn.execute(sa.text(
            f"UPDATE review_logs SET reviewed_at = :at WHERE id = :id RETURNING {_COLUMN_LIST}"
        ), {"id": self._existing_id(), "at": self._moment()}).one_or_none()
        return (row.id, tuple(row)) if row else None

    def _write_delete(self, conn):
        review_id = conn.execute(sa.text("DELETE FROM review_logs WHERE id = :id RETURNING id"),
                                 {"id": self._existing_id()}).scalar()
        return (review_id, None) if review_id is not None else None
