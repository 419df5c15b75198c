import datetime as dt
import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.defs.fsrs import (fsrs_eligibility_sensor, fsrs_parameters, fsrs_shadow_daily,
                                          fsrs_shadow_evaluation, fsrs_weekly)
from learning_pipelines.defs.memory_states import card_memory_states
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.demo import load_platform
from learning_pipelines.domain import fsrs, fsrs_policy
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
    result = _materialize(platform_url, [fsrs_parameters, card_memory_states])
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
    assert "holdout_logloss_own" in checks["tuned_not_worse_than_global"].metadata
    assert len(_frame(warehouse_engine, sa.select(tables.fsrs_global_params))) == 1

    states = _frame(warehouse_engine, sa.select(tables.card_memory_states))
    with warehouse_engine.connect() as conn:
        n_cards = conn.execute(sa.text("SELECT count(*) FROM (SELECT DISTINCT user_id, concept_id FROM review_logs) c")).scalar()
    assert len(states) == n_cards
    assert (states["due_at"] > states["last_review_at"]).all()
    assert set(states.loc[states["weights_source"] == "own", "user_id"]) == set(trained.index)

    again = _materialize(platform_url, [fsrs_parameters])
    assert again.asset_materializations_for_node("fsrs_parameters")[0].metadata["n_learners_trained"].value == 0
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
