import datetime as dt
import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.definitions import defs as definitions
from learning_pipelines.defs.fsrs import (FsrsFitConfig, fsrs_eligibility_sensor, fsrs_optimization_job,
                                          fsrs_parameters, fsrs_shadow_daily, fsrs_shadow_evaluation, fsrs_weekly,
                                          weights_within_bounds)
from learning_pipelines.defs.memory_states import card_memory_states
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.demo import load_platform
from learning_pipelines.domain import fsrs, fsrs_policy, fsrs_training
from learning_pipelines.domain.simulate import simulate_platform

AS_OF = dt.datetime.now(dt.timezone.utc)


@pytest.fixture
def platform_url(warehouse_url, warehouse_engine):
    platform = simulate_platform(n_learners=24, n_concepts=120, n_resources=20, days=150,
                                 mean_cards_per_learner=50, as_of=AS_OF, seed=9)
    load_platform(warehouse_engine, platform)
    return warehouse_url


def _frame(engine, statement) -> pd.DataFrame:
    with engine.connect() as conn:
        return bulk.read_frame(conn, statement)


def _materialize(url, assets, **kwargs):
    return dg.materialize(assets, resources={"warehouse": Warehouse(database_url=url)}, **kwargs)


def test_parameters_for_eligible_tuned_learners_then_cooldown(platform_url, warehouse_engine):
    result = _materialize(platform_url, [fsrs_parameters, weights_within_bounds, card_memory_states])
    params = _frame(warehouse_engine, sa.select(tables.srs_user_params)).set_index("user_id")
    counts = params["n_reviews"]
    assert len(params) == 24
    assert (params["ab_group"] == fsrs_policy.ab_group(params.index)).all()
    should_train = (params["ab_group"] == fsrs_policy.TUNED_ELIGIBLE) & (counts >= fsrs_policy.MIN_REVIEWS_FOR_OPTIMIZATION)
    assert should_train.sum() >= 2, "the fixture needs some eligible learners"
    assert (params["weights"].notna() == should_train).all()
    trained = params.loc[should_train]
    assert ((trained["training_cooldown_until"] - trained["trained_at"]) == pd.Timedelta(days=7)).all()
    for weights in trained["weights"]:
        w = np.array(json.loads(weights))
        assert w.shape == (21,) and np.all(w >= fsrs.WEIGHT_BOUNDS[:, 0]) and np.all(w <= fsrs.WEIGHT_BOUNDS[:, 1])
    assert trained["n_holdout_reviews"].gt(0).all() and trained["logloss_after"].notna().all()
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["weights_within_bounds"].passed
    assert checks["weights_within_bounds"].metadata["weight_vectors_out_of_bounds"].value == 0
    assert "holdout_logloss_own" in checks["tuned_not_worse_than_global"].metadata
    assert len(_frame(warehouse_engine, sa.select(tables.fsrs_global_params))) == 1

    states = _frame(warehouse_engine, sa.select(tables.card_memory_states))
    with warehouse_engine.connect() as conn:
        n_cards = conn.execute(sa.text("SELECT count(*) FROM (SELECT DISTINCT user_id, concept_id FROM review_logs) c")).scalar()
    assert len(states) == n_cards
    assert (states["due_at"] > states["last_review_at"]).all()
    assert set(states.loc[states["weights_source"] == "own", "user_id"]) == set(trained.index)

    again = _materialize(platform_url, [fsrs_parameters, weights_within_bounds])
    assert again.asset_materializations_for_node("fsrs_parameters")[0].metadata["n_learners_trained"].value == 0
    assert {e.check_name: e.passed for e in again.get_asset_check_evaluations()} == {
        "weights_within_bounds": True, "tuned_not_worse_than_global": True}
    after = _frame(warehouse_engine, sa.select(tables.srs_user_params)).set_index("user_id")
    assert after["weights"].equals(params["weights"]), "learners cooling down keep their weights"
    assert len(_frame(warehouse_engine, sa.select(tables.fsrs_global_params))) == 2


def test_shadow_evaluation_writes_one_row_per_group_per_day(platform_url, warehouse_engine):
    _materialize(platform_url, [fsrs_parameters])
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


def test_eligibility_sensor_launches_once_per_set_of_learners_and_data(platform_url, warehouse_engine):
    warehouse = Warehouse(database_url=platform_url)
    with dg.instance_for_test() as instance:
        first = fsrs_eligibility_sensor(dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse}))
        assert len(first.run_requests) == 1 and first.run_requests[0].run_key.startswith("fsrs_eligible:")
        replay = fsrs_eligibility_sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor,
                                                                 resources={"warehouse": warehouse}))
        assert not replay.run_requests and replay.cursor == first.cursor

        _materialize(platform_url, [fsrs_parameters])  # trains them: cooldown starts
        cooled = fsrs_eligibility_sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor,
                                                                 resources={"warehouse": warehouse}))
        assert not cooled.run_requests


def test_schedules():
    monday = dt.datetime(2026, 11, 23, 3, 0, tzinfo=dt.timezone.utc)
    assert fsrs_weekly.cron_schedule == "0 3 * * 1"
    assert fsrs_weekly(dg.build_schedule_context(scheduled_execution_time=monday)).run_key == "fsrs_weekly:2026-11-23"
    request = fsrs_shadow_daily(dg.build_schedule_context(scheduled_execution_time=monday.replace(minute=30)))
    assert request.partition_key == "2026-11-22"


def test_stored_weights_out_of_bounds_fail_the_blocking_check_and_hold_back_memory_states(platform_url,
                                                                                          warehouse_engine):
    _materialize(platform_url, [fsrs_parameters])
    params = tables.srs_user_params
    with warehouse_engine.begin() as conn:  # a learner never trained (baseline group) keeps stored weights as they are
        baseline = conn.execute(sa.select(params.c.user_id).where(params.c.ab_group == fsrs_policy.BASELINE_GLOBAL)
                                .limit(1)).scalar_one()
        conn.execute(params.update().where(params.c.user_id == baseline)
                     .values(weights=json.dumps((fsrs.WEIGHT_BOUNDS[:, 1] + 1.0).tolist()), trained_at=AS_OF))
    result = _materialize(platform_url, [fsrs_parameters, weights_within_bounds, card_memory_states],
                          raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["weights_within_bounds"].passed
    assert checks["weights_within_bounds"].metadata["weight_vectors_out_of_bounds"].value == 1
    assert result.is_node_untouched("card_memory_states")  # the blocking check failed upstream of it


def test_optimization_job_runs_the_stored_weights_check_in_the_fsrs_pool():
    job = definitions().resolve_job_def(fsrs_optimization_job.name)
    steps = set(job.graph.node_names())
    assert {"fsrs_parameters", "card_memory_states", "fsrs_parameters_weights_within_bounds"} <= steps
    assert "learning_pipelines/exclusive" not in job.tags and job.tags["dagster/max_runtime"] == str(4 * 60 * 60)
    assert fsrs_parameters.op.pool == "fsrs_optimization"


def test_fit_config_defaults_are_the_training_defaults():
    assert FsrsFitConfig().to_training_config() == fsrs_training.TrainingConfig()


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
