"""Row counts for the metrics: exact on SQLite and small tables, PostgreSQL's statistics for large ones."""

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, reads, tables
from learning_pipelines.db.engine import get_engine


def _seed(engine, n_rows: int) -> None:
    with engine.begin() as conn:
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": [1]}))
        bulk.bulk_insert(conn, tables.concepts, pd.DataFrame({"concept_id": [1], "name": ["c"]}))
        bulk.insert_review_logs(conn, pd.DataFrame({
            "id": np.arange(n_rows), "user_id": 1, "concept_id": 1, "rating": 3, "review_duration_ms": 1000, "state": 1,
            "reviewed_at": pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(np.arange(n_rows) * 3600, unit="s"),
        }))


def test_row_count_is_exact_below_the_limit(warehouse_engine):
    _seed(warehouse_engine, 2000)
    with warehouse_engine.connect() as conn:
        assert reads.row_count(conn, tables.review_logs) == 2000


def test_large_partitioned_table_is_counted_from_statistics(empty_postgres_url, monkeypatch):
    from learning_pipelines.db import migrate

    migrate.upgrade(empty_postgres_url)
    engine = get_engine(empty_postgres_url)
    _seed(engine, 2000)  # about three months, so three partitions
    monkeypatch.setattr(reads, "EXACT_COUNT_LIMIT", 1000)
    with engine.connect() as conn:
        # Never analyzed: no statistics to trust, so it counts.
        assert reads.row_count(conn, tables.review_logs) == 2000
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE review_logs"))
        conn.execute(sa.text("DELETE FROM review_logs WHERE id < 10"))  # the estimate does not see this yet
        assert reads.row_count(conn, tables.review_logs) == 2000
        conn.rollback()
