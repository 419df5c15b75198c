"""The batch steps' fast reads: binary COPY decoded by numpy, and card states read ahead on a second
connection, each giving exactly what a plain read gives (real PostgreSQL and SQLite)."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk, migrate, tables
from learning_pipelines.db import revision_queues as queue_store
from learning_pipelines.domain.revision import build_queues


def _cards(n_learners: int, n_concepts: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = n_learners * n_concepts
    return pd.DataFrame({
        "user_id": np.repeat(np.arange(1, n_learners + 1), n_concepts),
        "concept_id": np.tile(np.arange(1, n_concepts + 1), n_learners),
        "stability_days": rng.lognormal(1, 1, n), "difficulty": 5.0, "n_reviews": 3,
        # microseconds, times before 2000 (PostgreSQL's epoch) and far ahead: the decoding's edges
        "last_review_at": pd.Timestamp("1999-12-31 23:59:59.999999", tz="UTC")
        + pd.to_timedelta(rng.integers(0, 40 * 365 * 86_400 * 10**6, n), unit="us"),
        "due_at": pd.Timestamp("2026-01-01", tz="UTC"), "weights_source": "global",
        "decay": rng.uniform(0.1, 0.8, n),
    })


@pytest.fixture
def warehouse_with_cards(warehouse_url):
    migrate.upgrade(warehouse_url)
    engine = sa.create_engine(warehouse_url)
    cards = _cards(30, 7)
    with engine.begin() as conn:
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": range(1, 31)}))
        bulk.bulk_insert(conn, tables.concepts, pd.DataFrame({"concept_id": range(1, 8), "name": "c"}))
        bulk.bulk_insert(conn, tables.card_memory_states, cards)
    yield engine
    engine.dispose()


STATES = tables.card_memory_states
QUERY = sa.select(STATES.c.user_id, STATES.c.concept_id, STATES.c.stability_days, STATES.c.last_review_at,
                  STATES.c.decay, STATES.c.n_reviews)


def test_fixed_width_read_equals_the_plain_read(warehouse_with_cards):
    with warehouse_with_cards.connect() as conn:
        plain = bulk.read_frame(conn, QUERY.where(STATES.c.user_id > 4).order_by(STATES.c.user_id, STATES.c.concept_id))
        fast = bulk.read_frame_fixed_width(conn, QUERY.where(STATES.c.user_id > 4)
                                           .order_by(STATES.c.user_id, STATES.c.concept_id))
        empty = bulk.read_frame_fixed_width(conn, QUERY.where(STATES.c.user_id < 0))
    assert len(fast) == 26 * 7
    pd.testing.assert_frame_equal(fast, plain, check_dtype=False)
    assert fast["last_review_at"].dt.tz is not None
    assert empty.empty and list(empty.columns) == list(plain.columns)


def test_a_null_in_a_fixed_width_read_is_refused_not_misread(empty_postgres_url):
    engine = sa.create_engine(empty_postgres_url)
    migrate.upgrade(empty_postgres_url)
    with engine.begin() as conn:
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": [1, 2]}))
        bulk.bulk_insert(conn, tables.user_learning_prefs, pd.DataFrame(
            {"user_id": [1, 2], "spacing_multiplier": [1.0, 1.5], "retention_target_override": [0.9, None]}))
    prefs = tables.user_learning_prefs
    with engine.connect() as conn, pytest.raises(ValueError, match="NULL"):
        bulk.read_frame_fixed_width(conn, sa.select(prefs.c.user_id, prefs.c.retention_target_override))
    engine.dispose()


def test_card_states_read_ahead_gives_each_chunk_as_read_alone(warehouse_with_cards):
    chunks = [np.arange(1, 11), np.arange(11, 12), np.array([], dtype=np.int64), np.arange(12, 40)]
    with warehouse_with_cards.begin() as conn:
        with queue_store.card_states_read_ahead(conn, chunks) as reads:
            ahead = list(reads)
        alone = [queue_store.card_states(conn, chunk) for chunk in chunks]
    assert [len(frame) for frame in ahead] == [70, 7, 0, 19 * 7]
    for read_ahead, read_alone in zip(ahead, alone):
        key = ["user_id", "concept_id"]
        pd.testing.assert_frame_equal(read_ahead.sort_values(key, ignore_index=True),
                                      read_alone.sort_values(key, ignore_index=True), check_dtype=False)


def test_a_reader_stopped_early_leaves_no_read_running(warehouse_with_cards):
    with warehouse_with_cards.begin() as conn:
        with pytest.raises(RuntimeError, match="the caller's loop failed"):
            with queue_store.card_states_read_ahead(conn, [np.arange(1, 5), np.arange(5, 9), np.arange(9, 13)]) as reads:
                assert len(next(reads)) == 28
                raise RuntimeError("the caller's loop failed")
        assert conn.execute(sa.select(sa.func.count()).select_from(STATES)).scalar_one() == 210
    pool = warehouse_with_cards.pool
    assert pool.checkedout() == 0, "the read-ahead connection went back to the pool"


def test_a_chunk_written_behind_that_fails_raises_in_the_caller_and_nothing_is_kept(warehouse_with_cards):
    day, now = dt.date(2026, 1, 1), dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    learners = pd.DataFrame({"user_id": np.arange(1, 11), "timezone": "UTC", "day_start_hour": 4,
                             "retention_target": 0.9, "spacing_multiplier": 1.0, "revision_daily_target": 30,
                             "valid_from": pd.Timestamp("2026-01-01 04:00", tz="UTC"),
                             "valid_until": pd.Timestamp("2026-01-02 04:00", tz="UTC")})
    themes = pd.DataFrame({"concept_id": range(1, 8), "theme_key": "UNMAPPED", "is_fallback": True})
    with warehouse_with_cards.connect() as conn:
        queues = build_queues(queue_store.card_states(conn, learners["user_id"]), learners, themes, day)
    with pytest.raises(sa.exc.IntegrityError):
        with warehouse_with_cards.begin() as conn, queue_store.chunks_written_behind(conn) as write_chunk:
            write_chunk(day, queues, learners, now, now)
            write_chunk(day, queues, learners, now, now)  # the same learners again: their rows' keys are taken
    with warehouse_with_cards.connect() as conn:
        for table in queue_store.LEARNER_TABLES:
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 0


def test_plan_without_jit_lasts_for_the_transaction_only(empty_postgres_url):
    engine = sa.create_engine(empty_postgres_url)
    with engine.begin() as conn:
        bulk.plan_without_jit(conn)
        assert conn.exec_driver_sql("SHOW jit").scalar_one() == "off"
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW jit").scalar_one() == "on"
    engine.dispose()
