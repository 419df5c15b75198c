"""FSRS-6 steps against the values fsrs-rs's own unit tests pin (model_v6.rs, default weights)."""

import numpy as np
import pytest

from learning_pipelines.domain import fsrs

W = fsrs.DEFAULT_WEIGHTS


def test_power_forgetting_curve():
    r = fsrs.retrievability(np.array([0, 1, 2, 3, 4, 5.0]), np.array([1, 2, 3, 4, 4, 2.0]), W)
    np.testing.assert_allclose(r, [1.0, 0.9403443, 0.9253786, 0.9185229, 0.9, 0.8261359], atol=1e-6)


def test_retrievability_is_90_percent_after_stability_days():
    for stability in (0.5, 3.0, 120.0):
        assert fsrs.retrievability(stability, stability, W) == pytest.approx(0.9)
        assert fsrs.next_interval_days(stability, 0.9, W) == pytest.approx(stability)


def test_two_reviews_from_new():
    rating = np.array([1, 2, 3, 4, 1, 2])
    s, d = fsrs.next_state(np.full(6, np.nan), np.full(6, np.nan), 0, rating, W)
    np.testing.assert_allclose(s, W[rating - 1])
    s, d = fsrs.next_state(s, d, np.array([1, 1, 1, 1, 2, 2]), rating, W)
    np.testing.assert_allclose(s, [0.10088589, 3.2494123, 7.3153, 18.014914, 0.112798266, 4.4694576], rtol=2e-6)
    np.testing.assert_allclose(d, [8.806304, 6.7404594, 2.1112142, 1.0, 8.806304, 6.7404594], rtol=1e-6)


def test_next_difficulty_damps_and_reverts():
    d = fsrs.next_difficulty(np.full(4, 5.0), np.array([1, 2, 3, 4]), W)
    np.testing.assert_allclose(d, [8.341763, 6.6659956, 4.990228, 3.3144615], rtol=1e-6)


def test_stability_after_recall_and_lapse():
    s, d = np.full(4, 5.0), np.array([1.0, 2.0, 3.0, 4.0])
    r, rating = np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 2, 3, 4])
    np.testing.assert_allclose(fsrs.stability_after_recall(s, d, r, rating, W),
                               [25.602541, 28.226582, 58.656002, 127.226685], rtol=1e-6)
    np.testing.assert_allclose(fsrs.stability_after_lapse(s, d, r, W),
                               [1.0525396, 1.1894329, 1.3680838, 1.584989], rtol=1e-6)


def test_same_day_good_never_lowers_stability():
    s = np.array([0.5, 5.0, 50.0])
    assert np.all(fsrs.short_term_stability(s, np.full(3, fsrs.GOOD), W) >= s)
    assert np.all(fsrs.short_term_stability(s, np.full(3, fsrs.AGAIN), W) < s)


def test_per_card_weights_broadcast_like_shared_weights():
    rating = np.array([1, 3, 4])
    shared = fsrs.next_state(np.array([2.0, 2.0, 2.0]), np.array([5.0, 5.0, 5.0]), 3, rating, W)
    per_card = fsrs.next_state(np.array([2.0, 2.0, 2.0]), np.array([5.0, 5.0, 5.0]), 3, rating, np.tile(W, (3, 1)))
    np.testing.assert_allclose(shared, per_card)


def test_clip_weights_keeps_bounds():
    clipped = fsrs.clip_weights(W * 100)
    assert np.all(clipped <= fsrs.WEIGHT_BOUNDS[:, 1]) and np.all(clipped >= fsrs.WEIGHT_BOUNDS[:, 0])
    np.testing.assert_array_equal(fsrs.clip_weights(W), W)
