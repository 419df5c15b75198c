import datetime as dt

import numpy as np
import pandas as pd

from learning_pipelines.domain import fsrs
from learning_pipelines.domain.fsrs_replay import predict_reviews
from learning_pipelines.domain.review_history import with_learner_days
from learning_pipelines.domain.simulate import simulate_platform

AS_OF = dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.timezone.utc)  # just before a DST change in Europe


def _platform(**kwargs):
    return simulate_platform(n_learners=80, n_concepts=60, n_resources=50, days=120, as_of=AS_OF, seed=3, **kwargs)


def test_same_seed_same_platform():
    a, b = _platform(), _platform()
    pd.testing.assert_frame_equal(a.review_logs, b.review_logs)
    pd.testing.assert_frame_equal(a.user_interactions, b.user_interactions)


def test_reviews_are_valid_and_in_the_past():
    platform = _platform()
    logs = platform.review_logs
    assert logs["id"].is_unique
    assert logs["reviewed_at"].max() < pd.Timestamp(AS_OF)
    assert logs["rating"].between(1, 4).all() and logs["review_duration_ms"].gt(0).all()
    assert set(logs["user_id"]) <= set(platform.users["user_id"])
    assert set(logs["concept_id"]) <= set(platform.concepts["concept_id"])
    # Some learners reach the FSRS eligibility bar of 300 reviews, others do not.
    per_learner = logs.groupby("user_id").size()
    assert per_learner.max() >= 300 and per_learner.min() < 300


def test_ground_truth_weights_within_bounds_and_distinct_per_learner():
    weights = _platform().true_weights.to_numpy()
    assert weights.shape == (80, fsrs.N_WEIGHTS)
    assert np.all(weights >= fsrs.WEIGHT_BOUNDS[:, 0]) and np.all(weights <= fsrs.WEIGHT_BOUNDS[:, 1])
    assert len(np.unique(weights[:, 8])) == 80


def test_recall_follows_the_ground_truth_retrievability():
    """Replaying each card with its learner's true weights, predicted recall matches observed recall."""
    platform = simulate_platform(n_learners=300, n_concepts=80, n_resources=20, days=150, as_of=AS_OF, seed=5)
    logs = platform.review_logs.merge(platform.users[["user_id", "timezone", "day_start_hour"]], on="user_id")
    logs = with_learner_days(logs)
    logs = logs.sort_values("reviewed_at", kind="stable").reset_index(drop=True)
    truth = {int(u): row.to_numpy() for u, row in platform.true_weights.iterrows()}
    predictions = predict_reviews(logs, truth).predictions
    scored = predictions.loc[predictions["elapsed_days"] > 0]
    predicted, recalled = scored["retrievability"].to_numpy(), scored["recalled"].to_numpy()
    assert len(predicted) > 5000
    assert abs(predicted.mean() - recalled.mean()) < 0.01
    low = predicted < np.quantile(predicted, 0.2)
    assert recalled[low].mean() < recalled[~low].mean()


def test_graph_and_catalogue_are_consistent():
    platform = _platform()
    edges = platform.concept_edges
    assert (edges["prerequisite_id"] < edges["concept_id"]).all()  # a DAG by construction
    unmapped = set(platform.concepts["concept_id"]) - set(platform.concept_theme_map["concept_id"])
    assert len(unmapped) < len(platform.concepts) * 0.1
    prefs = platform.user_learning_prefs
    assert prefs["spacing_multiplier"].between(0.5, 2.0).all()
    assert prefs["retention_target_override"].dropna().between(0.7, 0.95).all()
    assert set(platform.user_interactions["resource_id"]) <= set(platform.resources["resource_id"])
