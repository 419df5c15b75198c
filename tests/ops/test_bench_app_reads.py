"""The recommendations bench/app_reads.py seeds are rows the recommendations asset could have written (distinct
resources ranked by their blended score, each strategy with its own scores and model stamp), and a learner's read
through app_recommendations returns them in rank order."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from app_reads import MODEL_ID, N_RESOURCES, RECOMMENDATIONS_FLOOR_READ, RECOMMENDATIONS_READ, recommendations_of, resources

from learning_pipelines.db import bulk, tables
from learning_pipelines.domain import recommend
from learning_pipelines.flows.recommendations import RECOMMENDATIONS_PER_LEARNER

GENERATED_AT = pd.Timestamp("2026-12-03 04:00", tz="UTC")


@pytest.fixture
def seeded() -> pd.DataFrame:
    return recommendations_of(np.arange(1, 501), GENERATED_AT, np.random.default_rng(0))


def test_each_learner_has_distinct_resources_best_first(seeded):
    k = RECOMMENDATIONS_PER_LEARNER
    by_learner = seeded.groupby("user_id")
    assert len(seeded) == 500 * k
    assert (by_learner["rank"].apply(list) == [list(range(1, k + 1))] * 500).all()
    assert (by_learner["resource_id"].nunique() == k).all()
    assert seeded["resource_id"].between(1, N_RESOURCES).all()
    assert (by_learner["score"].diff().dropna() <= 0).all()


def test_each_strategy_scores_and_stamps_as_the_asset_does(seeded):
    hybrid = seeded["strategy"] == recommend.HYBRID
    assert set(seeded["strategy"]) == {recommend.HYBRID, recommend.FALLBACK}
    assert (seeded.groupby("user_id")["strategy"].nunique() == 1).all()
    weights, fallback = recommend.HYBRID_WEIGHTS, recommend.FALLBACK_WEIGHTS
    blended = np.where(hybrid, weights["ncf"] * seeded["ncf_score"].fillna(0) + weights["content"]
                       * seeded["content_score"] + weights["graph"] * seeded["graph_score"],
                       fallback["content"] * seeded["content_score"] + fallback["graph"] * seeded["graph_score"])
    np.testing.assert_allclose(seeded["score"], blended)
    assert (seeded.loc[hybrid, "model_id"] == MODEL_ID).all() and seeded.loc[~hybrid, "model_id"].isna().all()
    assert seeded.loc[hybrid, "ncf_score"].notna().all() and seeded.loc[~hybrid, "ncf_score"].isna().all()


def test_a_learners_recommendations_read_through_the_view_in_rank_order(warehouse_engine, seeded):
    with warehouse_engine.begin() as conn:
        bulk.bulk_insert(conn, tables.resources, resources(np.random.default_rng(0)))
        bulk.bulk_insert(conn, tables.user_recommendations, seeded)
        through_view = conn.execute(RECOMMENDATIONS_READ, {"user": 7}).mappings().all()
        floor = conn.execute(RECOMMENDATIONS_FLOOR_READ, {"user": 7}).mappings().all()
    expected = seeded.loc[seeded["user_id"] == 7]
    assert [row["rank"] for row in through_view] == list(range(1, RECOMMENDATIONS_PER_LEARNER + 1))
    assert [row["resource_id"] for row in through_view] == expected["resource_id"].tolist()
    assert all(row["title"] == f"Resource {row['resource_id']}" for row in through_view)
    assert sorted(row["resource_id"] for row in floor) == sorted(expected["resource_id"])
