import datetime as dt
import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk, fsrs_params, reads, tables
from learning_pipelines.db.learner_settings import calendars_and_preferences
from learning_pipelines.definitions import defs as definitions
from learning_pipelines.defs.card_memory_states import card_memory_states
from learning_pipelines.defs.fsrs import (
    GlobalFitConfig,
    ShardFitConfig,
    fsrs_global_job,
    fsrs_global_parameters,
    fsrs_optimization_job,
    fsrs_parameters,
)
from learning_pipelines.defs.fsrs_automation import fsrs_eligibility_sensor, fsrs_shards_after_global, fsrs_weekly
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.shadow_evaluation import fsrs_shadow_daily, fsrs_shadow_evaluation
from learning_pipelines.demo import load_platform
from learning_pipelines.domain import fsrs, fsrs_policy, fsrs_selection, fsrs_training, memory_states
from learning_pipelines.domain.learner_shards import shard_of
from learning_pipelines.domain.review_history import with_learner_days
from learning_pipelines.domain.review_ids import derive_review_ids
from learning_pipelines.domain.simulate import simulate_platform
from tests.support.fsrs_optimization import optimize_fsrs

AS_OF = dt.datetime.now(dt.timezone.utc)


# Two TUNED_ELIGIBLE learners besides the simulated ones (user ids 1..24), with 360 reviews each. One forgets
# every card after its first review: its data favour a new fit over the global and the default weights. The
# other forgets every card for 100 days, then recalls each: its validation split (its latest training reviews)
# favours the default weights (and the global ones) over a fit that learned the forgetting.
FORGETFUL_LEARNER, DRIFTING_LEARNER = 901, 902


def _learner_reviews(user_id: int, cards: dict[int, list[tuple[int, int]]]) -> pd.DataFrame:
    """review_logs rows from {concept: [(day, rating), ...]}, day 0 being 160 days before AS_OF, reviews at noon."""
    rows = [(concept, day, rating) for concept, history in cards.items() for day, rating in history]
    frame = pd.DataFrame(rows, columns=["concept_id", "day", "rating"])
    first_day = pd.Timestamp(AS_OF).floor("D") - pd.Timedelta(days=160) + pd.Timedelta(hours=12)
    frame["reviewed_at"] = first_day + pd.to_timedelta(frame["day"], unit="D") + pd.to_timedelta(frame["concept_id"],
                                                                                                 unit="s")
    frame["user_id"] = user_id
    frame["id"] = derive_review_ids(frame["user_id"].to_numpy(), frame["concept_id"].to_numpy(),
                                    frame["reviewed_at"].astype("int64").to_numpy() // 1_000_000)
    return frame.assign(review_duration_ms=5000, state=1)[["id", "user_id", "concept_id", "rating", "reviewed_at",
                                                           "review_duration_ms", "state"]]


def _add_learners(engine) -> None:
    forgetful = {c: [(c, 3)] + [(c + 3 * k, 1) for k in range(1, 6)] for c in range(1, 61)}
    drifting = {c: [(c % 40, 3)] + [(c % 40 + 3 * k, 1) for k in range(1, 4)] + [(110 + c % 30, 3), (114 + c % 30, 3)]
                for c in range(61, 121)}
    users = pd.DataFrame({"user_id": [FORGETFUL_LEARNER, DRIFTING_LEARNER], "external_ref": ["test:forgetful",
                          "test:drifting"], "timezone": "UTC", "day_start_hour": 4})
    with engine.begin() as conn:
        bulk.bulk_insert(conn, tables.users, users)
        bulk.insert_review_logs(conn, pd.concat([_learner_reviews(FORGETFUL_LEARNER, forgetful),
                                                  _learner_reviews(DRIFTING_LEARNER, drifting)], ignore_index=True))


@pytest.fixture
def platform_url(warehouse_url, warehouse_engine):
    platform = simulate_platform(n_learners=24, n_concepts=120, n_resources=20, days=150,
                                 mean_cards_per_learner=50, as_of=AS_OF, seed=9)
    load_platform(warehouse_engine, platform)
    _add_learners(warehouse_engine)
    return warehouse_url


def _frame(engine, statement) -> pd.DataFrame:
    with engine.connect() as conn:
        return bulk.read_frame(conn, statement)


def _materialize(url, assets, **kwargs):
    return dg.materialize(assets, resources={"warehouse": Warehouse(database_url=url)}, **kwargs)


def _checks(results) -> list:
    return [e for result in results for e in result.get_asset_check_evaluations()]


def test_parameters_for_eligible_tuned_learners_then_cooldown(platform_url, warehouse_engine):
    results = optimize_fsrs(platform_url)
    _materialize(platform_url, [card_memory_states])
    params = _frame(warehouse_engine, sa.select(tables.srs_user_params)).set_index("user_id")
    counts = params["n_reviews"]
    assert len(params) == 26
    assert (params["ab_group"] == fsrs_policy.ab_group(params.index)).all()
    should_train = (params["ab_group"] == fsrs_policy.TUNED_ELIGIBLE) & (counts >= fsrs_policy.MIN_REVIEWS_FOR_OPTIMIZATION)
    assert should_train.sum() >= 3, "the fixture needs some eligible learners"
    trained = params.loc[should_train]
    assert trained["trained_at"].notna().all() and params.loc[~should_train, "trained_at"].isna().all()
    assert ((trained["training_cooldown_until"] - trained["trained_at"]) == pd.Timedelta(days=7)).all()
    # New weights are stored only where they won on the validation split: the forgetful learner's.
    own = params.loc[params["weights"].notna()]
    assert FORGETFUL_LEARNER in own.index and set(own.index) <= set(trained.index)
    for weights in own["weights"]:
        w = np.array(json.loads(weights))
        assert w.shape == (21,) and np.all(w >= fsrs.WEIGHT_BOUNDS[:, 0]) and np.all(w <= fsrs.WEIGHT_BOUNDS[:, 1])
    assert trained["n_holdout_reviews"].gt(0).all() and trained["logloss_after"].notna().all()
    checks = _checks(results)
    bounds = [e for e in checks if e.check_name == "weights_within_bounds"]
    assert len(bounds) == 1 + len(learner_shards.get_partition_keys()) and all(e.passed for e in bounds)
    assert all(e.metadata["weight_vectors_out_of_bounds"].value == 0 for e in bounds)
    assert all("holdout_logloss_own" in e.metadata for e in checks if e.check_name == "tuned_not_worse_than_global")
    assert len(_frame(warehouse_engine, sa.select(tables.fsrs_global_params))) == 1
    per_shard = [r.asset_materializations_for_node("fsrs_parameters")[0].metadata for r in results[1:]]
    assert sum(m["n_learners_with_reviews"].value for m in per_shard) == 26
    assert sum(m["n_learners_trained"].value for m in per_shard) == should_train.sum()
    assert sum(m["n_learners_new_weights"].value for m in per_shard) == len(own)
    kept = sum(sum(m["weights_kept"].value.values()) for m in per_shard)
    assert kept == should_train.sum() - len(own)

    states = _frame(warehouse_engine, sa.select(tables.card_memory_states))
    with warehouse_engine.connect() as conn:
        n_cards = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT DISTINCT user_id, concept_id FROM review_logs) c")).scalar()
    assert len(states) == n_cards
    assert (states["due_at"] > states["last_review_at"]).all()
    assert set(states.loc[states["weights_source"] == "own", "user_id"]) == set(own.index)

    again = optimize_fsrs(platform_url)
    assert sum(r.asset_materializations_for_node("fsrs_parameters")[0].metadata["n_learners_trained"].value
               for r in again[1:]) == 0
    assert all(e.passed for e in _checks(again))
    after = _frame(warehouse_engine, sa.select(tables.srs_user_params)).set_index("user_id")
    assert after["weights"].equals(params["weights"]), "learners cooling down keep their weights"
    assert len(_frame(warehouse_engine, sa.select(tables.fsrs_global_params))) == 2


def test_a_learner_whose_latest_reviews_favour_the_defaults_keeps_the_weights_in_use(platform_url, warehouse_engine):
    results = optimize_fsrs(platform_url)
    params = _frame(warehouse_engine, sa.select(tables.srs_user_params)).set_index("user_id")
    drifting = params.loc[DRIFTING_LEARNER]
    assert pd.notna(drifting["trained_at"]) and pd.isna(drifting["weights"]), "still on the global weights"
    keys = learner_shards.get_partition_keys()
    shard = keys[int(shard_of([DRIFTING_LEARNER], len(keys))[0])]
    result = next(r for r in results[1:] if r.dagster_run.tags["dagster/partition"] == shard)
    metadata = result.asset_materializations_for_node("fsrs_parameters")[0].metadata
    assert metadata["weights_kept"].value.get(fsrs_selection.KEPT_CURRENT, 0) >= 1
    assert "kept: the current weights" in metadata["preview"].value
    # On the reviews the choice was made on, the defaults and the global weights beat the new fit.
    with warehouse_engine.connect() as conn:
        reviews = reads.reviews_with_calendar(conn, user_ids=[DRIFTING_LEARNER])
        global_weights = json.loads(conn.execute(sa.select(tables.fsrs_global_params.c.weights)).scalar_one())
    reviews = with_learner_days(reviews)
    training = reviews.loc[~fsrs_policy.holdout_mask(reviews)]
    table, _ = fsrs_selection.fit_or_keep_reviews(training, current=np.array([global_weights]))
    scores = table.iloc[0]
    assert scores["validation_logloss_defaults"] < scores["validation_logloss_new"]
    assert scores["validation_logloss_current"] <= scores["validation_logloss_new"]


def test_all_shards_give_exactly_the_rows_of_the_same_computation_unsharded(platform_url, warehouse_engine):
    _materialize(platform_url, [card_memory_states])  # states on the default weights, before any fit
    _materialize(platform_url, [fsrs_global_parameters])
    with warehouse_engine.connect() as conn:
        global_weights = json.loads(conn.execute(sa.select(tables.fsrs_global_params.c.weights)).scalar_one())
        reviews = reads.reviews_with_calendar(conn)
        previous = _frame(warehouse_engine, sa.select(tables.srs_user_params))
        calendars, preferences = calendars_and_preferences(conn, reviews["user_id"].unique())
    for shard in learner_shards.get_partition_keys():
        _materialize(platform_url, [fsrs_parameters], partition_key=shard)

    unsharded = fsrs_training.train_learners(reviews, previous, np.array(global_weights), AS_OF)
    expected = unsharded.user_params.set_index("user_id").sort_index()
    stored = _frame(warehouse_engine, sa.select(tables.srs_user_params)).set_index("user_id").sort_index()
    compared = ["n_reviews", "ab_group", "logloss_before", "logloss_after", "n_holdout_reviews"]
    assert stored.index.equals(expected.index)
    pd.testing.assert_frame_equal(stored[compared], expected[compared], check_dtype=False)
    np.testing.assert_allclose(np.vstack(stored["weights"].dropna().map(json.loads)),
                               np.vstack(expected["weights"].dropna().map(json.loads)), rtol=1e-9, atol=1e-12)

    own = {int(u): np.array(json.loads(w)) for u, w in expected["weights"].dropna().items()}
    weights = memory_states.LearnerWeights(np.array(global_weights), "global", own, {u: "own" for u in own})
    replayed = memory_states.schedule(memory_states.states_from_histories(reviews, weights), calendars, preferences)
    states = _frame(warehouse_engine, sa.select(tables.card_memory_states))
    key = ["user_id", "concept_id"]
    states, replayed = (f.sort_values(key).reset_index(drop=True) for f in (states, replayed))
    pd.testing.assert_frame_equal(
        states[key + ["stability_days", "difficulty", "n_reviews", "weights_source"]],
        replayed[key + ["stability_days", "difficulty", "n_reviews", "weights_source"]], check_dtype=False)
    assert ((states["due_at"] - replayed["due_at"]).abs() < pd.Timedelta(milliseconds=1)).all()  # stored to the µs


def test_a_shard_without_global_weights_fails_saying_what_to_run(platform_url):
    result = _materialize(platform_url, [fsrs_parameters], partition_key=learner_shards.get_partition_keys()[0],
                          raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "materialize fsrs_global_parameters first" in failure.step_failure_data.error.message


def test_every_shard_follows_a_new_global_fit_once(platform_url):
    with dg.instance_for_test() as instance:
        dg.materialize([fsrs_global_parameters], resources={"warehouse": Warehouse(database_url=platform_url)},
                       instance=instance)
        context = dg.build_sensor_context(instance=instance)
        requests = list(fsrs_shards_after_global(context) or [])
        assert sorted(r.partition_key for r in requests) == sorted(learner_shards.get_partition_keys())
        assert len({r.run_key for r in requests}) == len(requests)


def test_shadow_evaluation_writes_one_row_per_group_per_day(platform_url, warehouse_engine):
    optimize_fsrs(platform_url)
    day = (AS_OF - dt.timedelta(days=5)).strftime("%Y-%m-%d")
    for _ in range(2):  # idempotent
        result = _materialize(platform_url, [fsrs_shadow_evaluation], partition_key=day)
    rows = _frame(warehouse_engine, sa.select(tables.eval_metrics_daily))
    assert sorted(rows["ab_group"]) == [fsrs_policy.BASELINE_GLOBAL, fsrs_policy.TUNED_ELIGIBLE]
    assert (rows["day"].astype(str) == day).all()
    assert rows["n_reviews"].sum() > 0
    scored = rows.loc[rows["n_reviews"] > 0]
    assert scored["logloss"].between(0.05, 2.0).all() and scored["mean_predicted"].between(0, 1).all()
    metadata = result.asset_materializations_for_node("fsrs_shadow_evaluation")[0].metadata
    assert any(key.startswith("logloss_") for key in metadata)


def test_eligibility_sensor_launches_the_global_fit_then_each_shard_with_eligible_learners_once(
        platform_url, warehouse_engine):
    warehouse = Warehouse(database_url=platform_url)
    with dg.instance_for_test() as instance:
        def evaluate(cursor=None):
            return fsrs_eligibility_sensor(dg.build_sensor_context(instance=instance, cursor=cursor,
                                                                   resources={"warehouse": warehouse}))

        before_global = evaluate()
        assert [r.job_name for r in before_global.run_requests] == [fsrs_global_job.name]
        _materialize(platform_url, [fsrs_global_parameters])

        first = evaluate()
        eligible = fsrs_policy.eligible_learners(fsrs_training_inputs(warehouse_engine), AS_OF)
        keys = learner_shards.get_partition_keys()
        expected = {keys[s] for s in shard_of(eligible["user_id"], len(keys))}
        assert {r.partition_key for r in first.run_requests} == expected
        assert all(r.job_name == fsrs_optimization_job.name and r.run_key.startswith("fsrs_eligible:")
                   for r in first.run_requests)
        replay = evaluate(first.cursor)
        assert not replay.run_requests and replay.cursor == first.cursor

        optimize_fsrs(platform_url)  # trains them: cooldown starts
        cooled = evaluate(first.cursor)
        assert not cooled.run_requests


def fsrs_training_inputs(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return fsrs_params.eligibility_inputs(conn)


def test_schedules():
    monday = dt.datetime(2026, 11, 23, 3, 0, tzinfo=dt.timezone.utc)
    assert fsrs_weekly.cron_schedule == "0 3 * * 1" and fsrs_weekly.job_name == fsrs_global_job.name
    assert fsrs_weekly(dg.build_schedule_context(scheduled_execution_time=monday)).run_key == "fsrs_weekly:2026-11-23"
    request = fsrs_shadow_daily(dg.build_schedule_context(scheduled_execution_time=monday.replace(minute=30)))
    assert request.partition_key == "2026-11-22"


def test_stored_weights_out_of_bounds_fail_the_blocking_check_and_hold_back_memory_states(platform_url,
                                                                                          warehouse_engine):
    optimize_fsrs(platform_url)
    params = tables.srs_user_params
    with warehouse_engine.begin() as conn:  # a learner never trained (baseline group) keeps stored weights as they are
        baseline = conn.execute(sa.select(params.c.user_id).where(params.c.ab_group == fsrs_policy.BASELINE_GLOBAL)
                                .limit(1)).scalar_one()
        conn.execute(params.update().where(params.c.user_id == baseline)
                     .values(weights=json.dumps((fsrs.WEIGHT_BOUNDS[:, 1] + 1.0).tolist()), trained_at=AS_OF))
    keys = learner_shards.get_partition_keys()
    shard = keys[int(shard_of([baseline], len(keys))[0])]
    result = _materialize(platform_url, [fsrs_parameters, card_memory_states],
                          partition_key=shard, raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["weights_within_bounds"].passed
    assert checks["weights_within_bounds"].metadata["weight_vectors_out_of_bounds"].value == 1
    assert result.is_node_untouched("card_memory_states")  # the blocking check failed upstream of it


def test_optimization_job_is_one_run_per_learner_shard_and_the_global_fit_runs_in_the_fsrs_pool():
    job = definitions().resolve_job_def(fsrs_optimization_job.name)
    assert set(job.graph.node_names()) == {"fsrs_parameters"}, "one step per shard: its checks run inside it"
    assert job.partitions_def == learner_shards and len(learner_shards.get_partition_keys()) == 4
    assert job.tags["dagster/max_runtime"] == str(25 * 60), "well under RabbitMQ's 30-minute consumer_timeout"
    assert fsrs_parameters.op.pool is None, "shards run side by side"
    assert fsrs_global_parameters.op.pool == "fsrs_optimization"


def test_fit_config_defaults_are_the_training_defaults():
    assert GlobalFitConfig().to_training_config() == fsrs_training.TrainingConfig()
    assert ShardFitConfig().to_training_config() == fsrs_training.TrainingConfig()


def test_eligible_learners_are_tuned_with_enough_reviews_and_no_cooldown():
    now = dt.datetime(2026, 1, 10, tzinfo=dt.timezone.utc)
    user_ids = np.arange(1, 41)
    tuned = fsrs_policy.ab_group(user_ids) == fsrs_policy.TUNED_ELIGIBLE
    learners = pd.DataFrame({
        "user_id": user_ids,
        "n_reviews": np.where(user_ids % 3 == 0, fsrs_policy.MIN_REVIEWS_FOR_OPTIMIZATION - 1,
                              fsrs_policy.MIN_REVIEWS_FOR_OPTIMIZATION),
        "training_cooldown_until": pd.to_datetime(
            np.where(user_ids % 5 == 0, now + dt.timedelta(days=1), pd.NaT), utc=True),
    })
    expected = user_ids[tuned & (user_ids % 3 != 0) & (user_ids % 5 != 0)]
    assert len(expected) and fsrs_policy.eligible_learners(learners, now)["user_id"].tolist() == expected.tolist()
