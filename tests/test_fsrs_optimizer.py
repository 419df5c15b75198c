import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learning_pipelines.domain import fsrs
from learning_pipelines.domain.fsrs_optimizer import fit_pooled, fit_reviews, recency_weights
from learning_pipelines.domain.fsrs_replay import predict_reviews
from learning_pipelines.domain.metrics import recall_metrics
from learning_pipelines.domain.review_history import with_learner_days
from learning_pipelines.domain.simulate import simulate_platform
from tests.fsrs_data import REFERENCE_DAY_START_HOUR, real_reviews

ROOT = Path(__file__).resolve().parents[1]
FSRS_RS_LOGLOSS = 0.4534  # fsrs-rs-python 0.9.3 on the whole file (../shared/data/README.md)


def test_cli_fit_then_evaluate_beats_the_reference_logloss(anki_csv, tmp_path):
    cli = str(Path(sys.executable).parent / "learning-pipelines")
    weights = tmp_path / "weights.json"
    common = ["--day-start-hour", str(REFERENCE_DAY_START_HOUR)]
    fit = subprocess.run([cli, "fsrs", "fit", str(anki_csv), *common, "--weights-out", str(weights)],
                         capture_output=True, text=True, timeout=300)
    assert fit.returncode == 0, fit.stderr
    fitted = json.loads(fit.stdout)
    evaluated = subprocess.run([cli, "fsrs", "evaluate", str(anki_csv), *common, "--weights", str(weights)],
                               capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    scores = json.loads(evaluated.stdout)
    assert scores["logloss"] <= FSRS_RS_LOGLOSS
    assert scores["logloss"] == pytest.approx(fitted["logloss"])
    assert (scores["n_reviews"], scores["n_learners"]) == (6372, 1)
    assert set(scores) >= {"logloss", "rmse_bins", "auc", "n_reviews", "n_learners", "seconds"}
    saved = json.loads(weights.read_text())["learners"]["0"]
    assert len(saved) == fsrs.N_WEIGHTS


def test_time_ordered_split_tuned_not_worse_than_default(anki_csv):
    reviews = real_reviews(anki_csv)
    cut = int(len(reviews) * 0.8)
    _, fit = fit_reviews(reviews.iloc[:cut])
    tuned = predict_reviews(reviews, {1: fit.weights[0]}).predictions
    default = predict_reviews(reviews, {}).predictions
    tuned_test = recall_metrics(tuned.loc[tuned["row"] >= cut])
    default_test = recall_metrics(default.loc[default["row"] >= cut])
    assert tuned_test["n_reviews"] > 1000
    assert tuned_test["logloss"] <= default_test["logloss"]


def test_recovers_known_weights_of_simulated_learners():
    """Fitting learners simulated with known weights predicts recall as the true weights do."""
    # Recovery needs data: a few thousand reviews per learner (with ~1,000 the noise alone leaves ~0.023).
    platform = simulate_platform(n_learners=8, n_concepts=600, n_resources=5, days=500, mean_cards_per_learner=450,
                                 as_of=dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc), seed=21)
    reviews = platform.review_logs.merge(platform.users[["user_id", "timezone", "day_start_hour"]], on="user_id")
    reviews = with_learner_days(reviews)
    reviews = reviews.sort_values("reviewed_at", kind="stable").reset_index(drop=True)
    assert reviews.groupby("user_id").size().min() >= 3000

    table, result = fit_reviews(reviews)
    recovered = {int(u): np.array(w) for u, w in zip(table["user_id"], table["weights"])}
    truth = {int(u): row.to_numpy() for u, row in platform.true_weights.iterrows()}
    with_recovered = predict_reviews(reviews, recovered).predictions
    with_truth = predict_reviews(reviews, truth).predictions
    scored = with_truth["elapsed_days"] > 0
    error = np.abs(with_recovered.loc[scored, "retrievability"] - with_truth.loc[scored, "retrievability"])
    assert error.mean() < 0.02
    assert (result.logloss_after <= result.logloss_before).all()
    assert np.all(result.weights >= fsrs.WEIGHT_BOUNDS[:, 0]) and np.all(result.weights <= fsrs.WEIGHT_BOUNDS[:, 1])


def test_pooled_fit_gives_one_weight_vector_for_everyone():
    platform = simulate_platform(n_learners=6, n_concepts=80, n_resources=5, days=200,
                                 as_of=dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc), seed=4)
    reviews = platform.review_logs.assign(learner_day=lambda f: (f["reviewed_at"] - pd.Timestamp(
        "1970-01-01", tz="UTC")).dt.days).sort_values("reviewed_at").reset_index(drop=True)
    result = fit_pooled(reviews)
    assert result.weights.shape == (1, fsrs.N_WEIGHTS)
    assert result.n_reviews[0] == (predict_reviews(reviews, {}).predictions["elapsed_days"] > 0).sum()
    assert result.logloss_after[0] <= result.logloss_before[0]


def test_recency_weights_rise_from_a_quarter_to_one():
    weights = recency_weights(np.arange(4), np.full(4, 4))
    assert weights[0] == pytest.approx(0.25) and weights[-1] == pytest.approx(0.25 + 0.75 * (3 / 4) ** 3)
    assert np.all(np.diff(weights) > 0) and weights.max() < 1.0
