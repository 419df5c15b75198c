"""Replays read only the reviews they need: a late review its own card's history, a replay of learners their cards
in reads of a bounded number of reviews, with the same states as reading each learner whole."""

from __future__ import annotations

import contextlib
import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk, memory_state_reads, memory_state_writes, reads, tables
from learning_pipelines.defs.card_memory_states import card_memory_states
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.demo import load_platform
from learning_pipelines.domain import fsrs, memory_states
from learning_pipelines.domain.chunking import REPLAY_REVIEWS_PER_READ
from learning_pipelines.domain.simulate import simulate_platform
from learning_pipelines.flows.learner_states import rewrite_learner_states

AS_OF = dt.datetime(2026, 3, 31, 12, tzinfo=dt.timezone.utc)
CARD = ["user_id", "concept_id"]
DEFAULT_WEIGHTS = memory_states.LearnerWeights(fsrs.DEFAULT_WEIGHTS, "default", {}, {})


@pytest.fixture
def platform(warehouse_engine):
    simulated = simulate_platform(n_learners=6, n_concepts=40, n_resources=5, days=60, mean_cards_per_learner=15,
                                  as_of=AS_OF, seed=8)
    load_platform(warehouse_engine, simulated)
    return simulated


@contextlib.contextmanager
def _review_rows_returned(engine: sa.Engine):
    """Rows PostgreSQL hands back to SELECTs that read review_logs while inside (psycopg2 fetches every row of a
    result at once, so cursor.rowcount is their number): a list of (rows, statement)."""
    returned = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "review_logs" in statement:
            returned.append((cursor.rowcount, statement))

    sa.event.listen(engine, "after_cursor_execute", count)
    try:
        yield returned
    finally:
        sa.event.remove(engine, "after_cursor_execute", count)


def _materialize(url: str) -> dict:
    result = dg.materialize([card_memory_states], resources={"warehouse": Warehouse(database_url=url)})
    return {k: v.value for k, v in result.asset_materializations_for_node("card_memory_states")[0].metadata.items()}


def _stored_states(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return bulk.read_frame(conn, sa.select(tables.card_memory_states)).sort_values(CARD).reset_index(drop=True)


def _cards_by_learner(reviews: pd.DataFrame) -> pd.DataFrame:
    """user_id, n_cards, n_reviews, largest learner first."""
    return (reviews.groupby("user_id").agg(n_cards=("concept_id", "nunique"), n_reviews=("id", "size"))
            .sort_values("n_reviews", ascending=False).reset_index())


def test_card_histories_reads_only_those_cards_reviews(warehouse_url, warehouse_engine, platform):
    reviews = platform.review_logs
    learners = _cards_by_learner(reviews)["user_id"].iloc[:2].tolist()
    cards = (reviews.loc[reviews["user_id"].isin(learners), CARD].drop_duplicates()
             .groupby("user_id").head(2).reset_index(drop=True))
    wanted = reviews.merge(cards, on=CARD)
    with warehouse_engine.connect() as conn:
        # What card_histories gave when it read the learners' whole histories and kept these cards.
        expected = (reads.reviews_with_calendar(conn, user_ids=learners).merge(cards, on=CARD)
                    .sort_values(["reviewed_at", "id"], kind="stable").reset_index(drop=True))
        with _review_rows_returned(warehouse_engine) as returned:
            history = memory_state_reads.card_histories(conn, pd.concat([cards, cards.iloc[:1]]))  # a card named twice
    pd.testing.assert_frame_equal(history, expected)
    assert len(history) == len(wanted) < (reviews["user_id"].isin(learners)).sum()
    if warehouse_url.startswith("postgresql"):
        assert sum(rows for rows, _ in returned) == len(wanted), "only the cards' own reviews leave the database"


def test_a_late_review_replays_its_card_from_that_cards_history_alone(warehouse_url, warehouse_engine, platform):
    _materialize(warehouse_url)
    reviews = platform.review_logs
    learner = int(_cards_by_learner(reviews)["user_id"].iloc[0])
    card = reviews.loc[reviews["user_id"] == learner].sort_values("reviewed_at").iloc[[-1]]
    late = card.assign(id=int(reviews["id"].max()) + 1, reviewed_at=card["reviewed_at"] - pd.Timedelta(hours=1),
                       rating=1).drop(columns=["ingest_seq"], errors="ignore")
    with warehouse_engine.begin() as conn:
        bulk.insert_review_logs(conn, late)
    with _review_rows_returned(warehouse_engine) as returned:
        run = _materialize(warehouse_url)
    assert run["cards_replayed_late_review"] == 1 and run["learners_replayed"] == 0

    all_reviews = pd.concat([reviews, late], ignore_index=True)
    n_card_reviews = int((all_reviews[CARD] == card[CARD].iloc[0]).all(axis=1).sum())
    if warehouse_url.startswith("postgresql"):
        # Each read of review_logs returns at most that card's history (the rest: one-row aggregates).
        assert max(rows for rows, _ in returned) <= n_card_reviews
        assert sum(rows for rows, _ in returned) < int((all_reviews["user_id"] == learner).sum())
    with warehouse_engine.connect() as conn:
        expected = memory_states.states_from_histories(reads.reviews_with_calendar(conn), DEFAULT_WEIGHTS).sort_values(CARD)
    stored = _stored_states(warehouse_engine)
    np.testing.assert_allclose(stored[["stability_days", "difficulty"]].to_numpy(),
                               expected[["stability_days", "difficulty"]].to_numpy(), rtol=1e-12)
    assert (stored["n_reviews"].to_numpy() == expected["n_reviews"].to_numpy()).all()


def _replay_everyone(engine, learners: np.ndarray, reviews_per_read: int) -> pd.DataFrame:
    with engine.begin() as conn:
        rewrite_learner_states(conn, learners, DEFAULT_WEIGHTS, learner_chunk=2000, reviews_per_read=reviews_per_read)
    return _stored_states(engine)


def _states_without_reviews(engine, platform) -> pd.DataFrame:
    """Stored states of cards that have no review (left by reviews since deleted): a replay must drop them. One of
    the largest learner (their highest concept: in the last of their reads), and every card of the smallest learner,
    whose reviews are all deleted."""
    by_size = _cards_by_learner(platform.review_logs)
    largest, smallest = int(by_size["user_id"].iloc[0]), int(by_size["user_id"].iloc[-1])
    highest_concept = int(platform.concepts["concept_id"].max())
    logs = tables.review_logs
    with engine.begin() as conn:
        conn.execute(logs.delete().where(logs.c.user_id == smallest))
        conn.execute(logs.delete().where(logs.c.user_id == largest, logs.c.concept_id == highest_concept))
        stale = pd.DataFrame({"user_id": [largest, smallest], "concept_id": [highest_concept] * 2}).assign(
            stability_days=1.0, difficulty=5.0, n_reviews=1, first_rating=3, last_review_at=pd.Timestamp(AS_OF),
            decay=0.5, weights_source="global", weights_version="stale", due_at=pd.Timestamp(AS_OF))
        memory_state_writes.delete_keys(conn, tables.card_memory_states, stale)
        bulk.bulk_insert(conn, tables.card_memory_states, stale)
    return stale


def test_a_replay_in_reads_of_a_few_reviews_writes_the_same_states_as_one_read_per_learner(
        warehouse_url, warehouse_engine, platform):
    _materialize(warehouse_url)
    stale = _states_without_reviews(warehouse_engine, platform)
    learners = platform.users["user_id"].to_numpy(np.int64)
    whole = _replay_everyone(warehouse_engine, learners, REPLAY_REVIEWS_PER_READ)  # one read: every learner fits
    assert whole.merge(stale[CARD]).empty, "cards without reviews disappear"
    assert not whole["user_id"].isin(stale["user_id"].iloc[1:]).any(), "so does a learner without reviews"

    _states_without_reviews(warehouse_engine, platform)
    with warehouse_engine.connect() as conn:
        card_counts = reads.reviews_with_calendar(conn).groupby(CARD).size()
    largest_learner = int(card_counts.groupby("user_id").sum().max())
    reviews_per_read = int(card_counts.max()) + 3  # every learner above it: each is cut into several reads
    assert largest_learner > 3 * reviews_per_read, "the fixture must have a learner larger than several reads"
    with _review_rows_returned(warehouse_engine) as returned:
        chunked = _replay_everyone(warehouse_engine, learners, reviews_per_read)
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)
    if warehouse_url.startswith("postgresql"):
        history_reads = [rows for rows, statement in returned if "timezone" in statement]
        assert len(history_reads) > len(learners) and max(history_reads) <= reviews_per_read


def test_a_card_longer_than_a_read_is_read_alone_and_every_card_is_in_exactly_one_read():
    learner_counts = pd.DataFrame({"user_id": [1, 2, 3, 4], "n_reviews": [5, 40, 3, 2]})
    card_counts = pd.DataFrame({"user_id": 2, "concept_id": [10, 11, 12, 13, 14, 15],
                                "n_reviews": [4, 4, 15, 1, 1, 15]})
    plan = memory_states.replay_reads(np.array([1, 2, 3, 4, 5]), learner_counts, card_counts, reviews_per_read=10)
    whole = [read.user_ids.tolist() for read in plan if read.concept_from is None and read.concept_to is None]
    assert whole == [[1, 3, 4, 5]], "small learners (and one without reviews) share a read up to the limit"
    ranges = [(read.concept_from, read.concept_to) for read in plan if read.user_ids.tolist() == [2]]
    assert ranges == [(None, 12), (12, 13), (13, 15), (15, None)]
