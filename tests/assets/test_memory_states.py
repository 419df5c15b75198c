"""card_memory_states follows every review incrementally and equals a full replay."""

import datetime as dt
import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.defs.card_memory_states import card_memory_states
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.demo import LOAD_ORDER
from learning_pipelines.domain import fsrs, memory_states
from learning_pipelines.domain.fsrs_replay import predict_reviews
from learning_pipelines.domain.review_history import with_learner_days
from learning_pipelines.domain.simulate import simulate_platform

AS_OF = dt.datetime(2026, 3, 31, 12, tzinfo=dt.timezone.utc)
STATE = ["stability_days", "difficulty"]


def _frame(engine, statement) -> pd.DataFrame:
    with engine.connect() as conn:
        return bulk.read_frame(conn, statement)


def _load_platform_without_reviews(engine, platform):
    with engine.begin() as conn:
        for name in LOAD_ORDER[:-1]:
            bulk.bulk_insert(conn, tables.metadata.tables[name], getattr(platform, name))


def _insert_reviews(engine, reviews: pd.DataFrame) -> None:
    with engine.begin() as conn:
        bulk.insert_review_logs(conn, reviews)


@pytest.fixture
def instance():
    """One Dagster instance for a test's runs: making one for each run cost 0.14 s of CPU, a run of the asset
    little more. The asset keeps what it has read in the warehouse, not in the instance."""
    with dg.DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def _update_states(url, instance) -> dict:
    result = dg.materialize([card_memory_states], resources={"warehouse": Warehouse(database_url=url)},
                            instance=instance)
    return {k: v.value for k, v in result.asset_materializations_for_node("card_memory_states")[0].metadata.items()}


def _stored_states(engine) -> pd.DataFrame:
    return _frame(engine, sa.select(tables.card_memory_states)).set_index(["user_id", "concept_id"]).sort_index()


def _full_replay(platform, reviews: pd.DataFrame, weights: memory_states.LearnerWeights) -> pd.DataFrame:
    history = reviews.merge(platform.users[["user_id", "timezone", "day_start_hour"]], on="user_id")
    history = with_learner_days(history.sort_values(["reviewed_at", "id"], kind="stable").reset_index(drop=True))
    return memory_states.states_from_histories(history, weights).set_index(["user_id", "concept_id"]).sort_index(), history


@pytest.mark.slow
def test_a_month_of_daily_increments_with_late_reviews_equals_a_full_replay(warehouse_url, warehouse_engine, instance):
    platform = simulate_platform(n_learners=30, n_concepts=80, n_resources=5, days=90, mean_cards_per_learner=25,
                                 as_of=AS_OF, seed=21)
    reviews = platform.review_logs
    _load_platform_without_reviews(warehouse_engine, platform)
    month_start = AS_OF - dt.timedelta(days=30)
    rng = np.random.default_rng(5)
    # Some reviews of the month arrive days late (an offline device syncing), some of them older than
    # their card's stored last review by then.
    arrival = reviews["reviewed_at"].where(reviews["reviewed_at"] >= month_start, month_start)
    late = (reviews["reviewed_at"] >= month_start) & (rng.random(len(reviews)) < 0.05)
    arrival = arrival + pd.to_timedelta(np.where(late, rng.integers(1, 6, len(reviews)), 0), unit="D")
    arrival_day = arrival.dt.floor("D")

    _insert_reviews(warehouse_engine, reviews.loc[arrival_day <= arrival_day.min()])
    first = _update_states(warehouse_url, instance)
    assert first["learners_replayed"] > 0 and first["cards_advanced"] == 0
    n_late_replays = 0
    for day in sorted(arrival_day.unique())[1:]:
        _insert_reviews(warehouse_engine, reviews.loc[arrival_day == day])
        run = _update_states(warehouse_url, instance)
        assert run["learners_replayed"] == 0, "no weights changed: only new reviews are read"
        assert run["new_reviews"] == int((arrival_day == day).sum())
        n_late_replays += run["cards_replayed_late_review"]
    assert n_late_replays > 0, "the fixture must exercise late reviews"

    stored = _stored_states(warehouse_engine)
    weights = memory_states.LearnerWeights(fsrs.DEFAULT_WEIGHTS, "default", {}, {})
    expected, history = _full_replay(platform, reviews, weights)
    assert stored.index.equals(expected.index)
    np.testing.assert_allclose(stored[STATE].to_numpy(), expected[STATE].to_numpy(), rtol=1e-9, atol=0)
    assert (stored["n_reviews"] == expected["n_reviews"]).all()
    assert (stored["first_rating"] == expected["first_rating"]).all()
    assert (stored["last_review_at"] == expected["last_review_at"]).all()
    assert (stored["weights_version"] == "default").all()
    assert (stored["due_at"] > stored["last_review_at"]).all()
    # And the optimizer's own replay (a separate implementation) agrees on the end states.
    independent = predict_reviews(history, {}).memory_states.set_index(["user_id", "concept_id"]).sort_index()
    np.testing.assert_allclose(stored[["stability_days", "difficulty"]].to_numpy(),
                               independent[["stability", "difficulty"]].to_numpy(), rtol=1e-9)

    again = _update_states(warehouse_url, instance)
    assert (again["new_reviews"], again["cards_advanced"]) == (0, 0), "a run with nothing new changes nothing"


def test_new_weights_replay_their_learners_and_preferences_move_due_dates(warehouse_url, warehouse_engine, instance):
    platform = simulate_platform(n_learners=6, n_concepts=30, n_resources=5, days=40, mean_cards_per_learner=10,
                                 as_of=AS_OF, seed=4)
    _load_platform_without_reviews(warehouse_engine, platform)
    _insert_reviews(warehouse_engine, platform.review_logs)
    _update_states(warehouse_url, instance)
    before = _stored_states(warehouse_engine)

    learner = int(platform.users["user_id"].iloc[0])
    own = fsrs.clip_weights(fsrs.DEFAULT_WEIGHTS * 1.3)
    trained_at = AS_OF
    with warehouse_engine.begin() as conn:
        conn.execute(tables.srs_user_params.insert().values(
            user_id=learner, ab_group="TUNED_ELIGIBLE", weights=json.dumps(own.tolist()), n_reviews=10,
            trained_at=trained_at))
    run = _update_states(warehouse_url, instance)
    assert run["learners_replayed"] == 1 and run["new_reviews"] == 0
    after = _stored_states(warehouse_engine)
    mine = after.index.get_level_values("user_id") == learner
    assert (after.loc[mine, "weights_version"] == f"own@{trained_at.isoformat()}").all()
    assert (after.loc[mine, "decay"] == own[20]).all()
    assert not np.allclose(after.loc[mine, "stability_days"], before.loc[mine, "stability_days"])
    pd.testing.assert_frame_equal(after.loc[~mine], before.loc[~mine])

    other = int(platform.users["user_id"].iloc[1])
    with warehouse_engine.begin() as conn:
        conn.execute(tables.user_learning_prefs.delete().where(tables.user_learning_prefs.c.user_id == other))
        conn.execute(tables.user_learning_prefs.insert().values(
            user_id=other, spacing_multiplier=2.0, updated_at=dt.datetime.now(dt.timezone.utc)))
    run = _update_states(warehouse_url, instance)
    # Preferences changed within PREFERENCES_LOOKBACK of the latest change are rescheduled again (harmless).
    assert run["learners_rescheduled"] >= 1 and run["learners_replayed"] == 0, "new preferences: new due times only"
    stretched = _stored_states(warehouse_engine)
    theirs = stretched.index.get_level_values("user_id") == other
    assert (stretched.loc[theirs, "due_at"] > after.loc[theirs, "due_at"]).all()
    pd.testing.assert_frame_equal(stretched.loc[~theirs], after.loc[~theirs])
    pd.testing.assert_frame_equal(stretched.drop(columns="due_at"), after.drop(columns="due_at"))


@pytest.mark.parametrize("n_days", [1, 3])
def test_advance_equals_replay_in_pure_domain(n_days):
    platform = simulate_platform(n_learners=8, n_concepts=20, n_resources=5, days=30, mean_cards_per_learner=12,
                                 as_of=AS_OF, seed=n_days)
    weights = memory_states.LearnerWeights(fsrs.DEFAULT_WEIGHTS, "default", {}, {})
    expected, history = _full_replay(platform, platform.review_logs, weights)
    cut = history["reviewed_at"] < AS_OF - dt.timedelta(days=n_days)
    earlier = memory_states.states_from_histories(history.loc[cut].reset_index(drop=True), weights)
    stored = earlier.merge(platform.users[["user_id", "timezone", "day_start_hour"]], on="user_id")
    touched = history.loc[~cut, ["user_id", "concept_id"]].drop_duplicates()
    nightly = memory_states.update(stored.merge(touched), history.loc[~cut].reset_index(drop=True), weights)
    assert nightly.replay_cards.empty and nightly.n_new_reviews == int((~cut).sum())
    advanced = nightly.advanced
    advanced_cards = advanced.set_index(["user_id", "concept_id"])
    result = pd.concat([earlier.set_index(["user_id", "concept_id"]).drop(advanced_cards.index, errors="ignore"),
                        advanced_cards]).sort_index()
    np.testing.assert_allclose(result[STATE].to_numpy(float), expected[STATE].to_numpy(float), rtol=1e-12)


def test_a_review_committed_late_by_a_transaction_in_flight_is_taken_in_by_the_next_run(empty_postgres_url, instance):
    """PostgreSQL numbers a review when it is inserted, not when it commits: a run that read past a number
    still in flight must take that review in later, and a re-read review must not count twice."""
    from learning_pipelines.db import migrate
    from learning_pipelines.db.engine import get_engine

    migrate.upgrade(empty_postgres_url)
    engine = get_engine(empty_postgres_url)
    platform = simulate_platform(n_learners=4, n_concepts=10, n_resources=5, days=30, mean_cards_per_learner=6,
                                 as_of=AS_OF, seed=6)
    _load_platform_without_reviews(engine, platform)
    _insert_reviews(engine, platform.review_logs)
    _update_states(empty_postgres_url, instance)

    cards = platform.review_logs.drop_duplicates(["user_id", "concept_id"]).iloc[:2]
    slow, quick = (cards.iloc[[i]].assign(id=-1 - i, reviewed_at=pd.Timestamp(AS_OF) + pd.Timedelta(hours=1 + i))
                   for i in range(2))
    with engine.connect() as writer:
        transaction = writer.begin()
        bulk.insert_review_logs(writer, slow.drop(columns=["ingest_seq"], errors="ignore"))  # numbered, not committed
        _insert_reviews(engine, quick.drop(columns=["ingest_seq"], errors="ignore"))  # a higher number, committed
        first = _update_states(empty_postgres_url, instance)
        transaction.commit()
    assert first["new_reviews"] == 1
    second = _update_states(empty_postgres_url, instance)
    assert second["new_reviews"] == 1, "the late-committed review is taken in; the re-read one is not counted again"
    assert second["cards_replayed_late_review"] == 0
    third = _update_states(empty_postgres_url, instance)
    assert third["new_reviews"] == 0

    all_reviews = pd.concat([platform.review_logs, slow, quick], ignore_index=True)
    expected, _ = _full_replay(platform, all_reviews, memory_states.LearnerWeights(fsrs.DEFAULT_WEIGHTS, "default", {}, {}))
    stored = _stored_states(engine)
    np.testing.assert_allclose(stored[STATE].to_numpy(), expected[STATE].to_numpy(), rtol=1e-9)
    assert (stored["n_reviews"] == expected["n_reviews"]).all()


def test_a_review_moved_to_the_rejects_leaves_the_states(warehouse_url, warehouse_engine, instance):
    """A bad row written around the importer reaches the states, then the review_logs asset quarantines it:
    its card is replayed without it."""
    from learning_pipelines.defs.review_logs import review_logs

    platform = simulate_platform(n_learners=4, n_concepts=10, n_resources=5, days=20, mean_cards_per_learner=6,
                                 as_of=AS_OF, seed=12)
    _load_platform_without_reviews(warehouse_engine, platform)
    _insert_reviews(warehouse_engine, platform.review_logs)
    _update_states(warehouse_url, instance)
    card = platform.review_logs.iloc[[-1]]
    too_long = card.assign(id=-7, reviewed_at=card["reviewed_at"] + pd.Timedelta(hours=2), rating=1,
                           review_duration_ms=3 * 60 * 60 * 1000)  # three hours: a rule the importer enforces
    with warehouse_engine.begin() as conn:  # the app's own write
        conn.execute(tables.review_logs.insert().values(too_long.drop(columns=["ingest_seq"], errors="ignore")
                                                       .to_dict("records")))
    assert _update_states(warehouse_url, instance)["new_reviews"] == 1
    month = too_long["reviewed_at"].iloc[0].strftime("%Y-%m-01")
    dg.materialize([review_logs], resources={"warehouse": Warehouse(database_url=warehouse_url)}, partition_key=month,
                   instance=instance)
    run = _update_states(warehouse_url, instance)
    assert run["cards_replayed_on_request"] == 1

    expected, _ = _full_replay(platform, platform.review_logs,
                               memory_states.LearnerWeights(fsrs.DEFAULT_WEIGHTS, "default", {}, {}))
    stored = _stored_states(warehouse_engine)
    np.testing.assert_allclose(stored[STATE].to_numpy(), expected[STATE].to_numpy(), rtol=1e-9)
    assert (stored["n_reviews"] == expected["n_reviews"]).all()
    assert _update_states(warehouse_url, instance)["cards_replayed_on_request"] == 0, "a request is served once"


def test_review_numbers_are_never_handed_out_twice(warehouse_url, warehouse_engine):
    platform = simulate_platform(n_learners=2, n_concepts=5, n_resources=5, days=10, mean_cards_per_learner=3,
                                 as_of=AS_OF, seed=1)
    _load_platform_without_reviews(warehouse_engine, platform)
    first, second = platform.review_logs.iloc[:-1], platform.review_logs.iloc[[-1]]
    _insert_reviews(warehouse_engine, first)
    logs = tables.review_logs
    with warehouse_engine.begin() as conn:
        highest = conn.execute(sa.select(sa.func.max(logs.c.ingest_seq))).scalar_one()
        conn.execute(logs.delete().where(logs.c.ingest_seq == highest))
        # around the importer, as the app writes: the database numbers the row itself
        conn.execute(logs.insert().values(second.drop(columns=["ingest_seq"], errors="ignore").to_dict("records")))
        after_app = conn.execute(sa.select(logs.c.ingest_seq).where(logs.c.id == int(second["id"].iloc[0]))).scalar_one()
    _insert_reviews(warehouse_engine, first.iloc[:1].assign(id=-1))
    with warehouse_engine.connect() as conn:
        after_import = conn.execute(sa.select(logs.c.ingest_seq).where(logs.c.id == -1)).scalar_one()
    assert highest < after_app < after_import
