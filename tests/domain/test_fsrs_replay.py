import numpy as np
import pytest

from learning_pipelines.domain import fsrs
from learning_pipelines.domain.fsrs_replay import predict_reviews
from learning_pipelines.domain.metrics import auc, expected_calibration_error, log_loss, recall_metrics, rmse_bins
from tests.support.fsrs_data import fsrs_rs_items, real_reviews


def test_memory_states_match_fsrs_rs_on_the_real_file(anki_csv):
    rs = pytest.importorskip("fsrs_rs_python")
    reviews = real_reviews(anki_csv)
    ours = predict_reviews(reviews, {}).memory_states.set_index("concept_id")
    reference = rs.FSRS(list(fsrs.DEFAULT_WEIGHTS))
    items = fsrs_rs_items(reviews)
    theirs = {cid: reference.memory_state(item) for cid, item in items.items()}
    assert len(theirs) == len(ours) == 1205
    stability = np.array([theirs[c].stability for c in ours.index])
    difficulty = np.array([theirs[c].difficulty for c in ours.index])
    # fsrs-rs computes in float32: agreement to 1e-4 (relative for stability, which reaches hundreds of days).
    np.testing.assert_allclose(ours["stability"], stability, rtol=1e-4)
    np.testing.assert_allclose(ours["difficulty"], difficulty, atol=1e-4)


def test_default_weights_score_the_reference_logloss(anki_csv):
    metrics = recall_metrics(predict_reviews(real_reviews(anki_csv), {}).predictions)
    assert metrics["n_reviews"] == 6372
    assert metrics["logloss"] == pytest.approx(0.4652, abs=5e-5)  # ../shared/data/README.md


def test_metrics_on_hand_made_predictions():
    y = np.array([1, 0, 1, 1])
    p = np.array([0.9, 0.2, 0.6, 0.4])
    assert log_loss(y, p) == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.6, 0.4])))
    assert auc(y, p) == 1.0  # every recalled review ranked above the forgotten one
    assert auc(y, [0.9, 0.5, 0.6, 0.4]) == pytest.approx(2 / 3)  # 0.4 now ranks below the forgotten 0.5
    assert auc([1, 0], [0.3, 0.3]) == 0.5
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0
    assert expected_calibration_error([1, 1], [0.5, 0.5]) == pytest.approx(0.5)
    # Two bins with perfect means: zero; one bin off by 0.25 carrying half the weight.
    assert rmse_bins([1, 0], [0.5, 0.5], [1, 1], [2, 2], [0, 0]) == 0.0
    assert rmse_bins([1, 1, 0, 0], [1.0, 1.0, 0.5, 0.5], [1, 1, 30, 30], [2, 2, 2, 2], [0, 0, 0, 0]) == pytest.approx(
        np.sqrt(0.5 * 0.25))
