"""Keep or replace (domain/fsrs_selection.py): new weights only where they beat the current ones and the defaults
on each learner's latest training reviews."""

import numpy as np
import pandas as pd
import pytest

from learning_pipelines.domain import fsrs
from learning_pipelines.domain.fsrs_optimizer import card_histories
from learning_pipelines.domain.fsrs_selection import (
    KEPT_CURRENT,
    KEPT_DEFAULTS,
    KEPT_NO_VALIDATION,
    MIN_SCORED_REVIEWS_FOR_FULL_FIT,
    REPLACED,
    VALIDATION_SHARE,
    fit_or_keep_reviews,
    validation_split,
)

FORGETFUL, DRIFTING = 1, 2


def _reviews(learners: dict[int, dict[int, list[tuple[int, int]]]]) -> pd.DataFrame:
    """A review frame from {user: {card: [(day, rating), ...]}}, in time order (a card's reviews at noon + card s)."""
    rows = [(user, card, day, rating) for user, cards in learners.items() for card, history in cards.items()
            for day, rating in history]
    frame = pd.DataFrame(rows, columns=["user_id", "concept_id", "learner_day", "rating"])
    frame["reviewed_at"] = (pd.Timestamp("2026-01-01 12:00", tz="UTC") + pd.to_timedelta(frame["learner_day"], unit="D")
                            + pd.to_timedelta(frame["concept_id"] + 1000 * frame["user_id"], unit="s"))
    return frame.sort_values("reviewed_at", kind="stable").reset_index(drop=True)


def _forgetful(cards: range) -> dict[int, list[tuple[int, int]]]:
    """Every card forgotten at every review after its first."""
    return {c: [(c % 50, fsrs.GOOD)] + [(c % 50 + 3 * k, fsrs.AGAIN) for k in range(1, 6)] for c in cards}


def _drifting(cards: range) -> dict[int, list[tuple[int, int]]]:
    """Every card forgotten three times within the first 100 days, then recalled twice after day 110: the latest
    reviews (the validation split) look like the defaults' learner, not like the earlier ones."""
    return {c: [(c % 40, fsrs.GOOD)] + [(c % 40 + 3 * k, fsrs.AGAIN) for k in range(1, 4)]
            + [(110 + c % 30, fsrs.GOOD), (114 + c % 30, fsrs.GOOD)] for c in cards}


def test_the_validation_split_is_each_learners_latest_share_of_reviews():
    reviews = _reviews({FORGETFUL: _forgetful(range(1, 21)), DRIFTING: _drifting(range(1, 31))})
    h = card_histories(reviews)
    part = validation_split(h)
    day = reviews["learner_day"].to_numpy()[h.row]
    for index, user in enumerate(h.learner_ids):
        mine = h.card_learner[h.card_of_review()] == index
        n = mine.sum()
        assert part[mine].sum() == n - np.floor((1 - VALIDATION_SHARE) * n)
        assert day[mine & (part == 1)].min() >= day[mine & (part == 0)].max(), f"learner {user}: not the latest"


def test_new_weights_replace_the_current_ones_only_where_they_beat_them_and_the_defaults():
    reviews = _reviews({FORGETFUL: _forgetful(range(1, 61)), DRIFTING: _drifting(range(1, 61))})
    table, selection = fit_or_keep_reviews(reviews)  # current: the defaults
    table = table.set_index("user_id")
    assert table.loc[FORGETFUL, "decision"] == REPLACED
    assert table.loc[DRIFTING, "decision"] == KEPT_CURRENT
    forgetful, drifting = table.loc[FORGETFUL], table.loc[DRIFTING]
    assert forgetful["validation_logloss_new"] < min(forgetful["validation_logloss_current"],
                                                     forgetful["validation_logloss_defaults"])
    assert drifting["validation_logloss_new"] >= drifting["validation_logloss_current"]
    np.testing.assert_array_equal(drifting["weights"], fsrs.DEFAULT_WEIGHTS)
    new = np.array(forgetful["weights"])
    assert np.all(new >= fsrs.WEIGHT_BOUNDS[:, 0]) and np.all(new <= fsrs.WEIGHT_BOUNDS[:, 1])
    # Learned from the validation split too, after winning on it: the forgetting is predicted.
    assert fsrs.retrievability(3.0, new[fsrs.GOOD - 1], new) < 0.5
    assert selection.full_fit.all()


def test_a_learner_whose_latest_reviews_favour_the_defaults_keeps_its_weights_even_over_a_better_fit():
    """Weights in use that predict the latest reviews worse than a new fit still stay when the defaults predict
    them better than both: a new fit must beat both to be stored."""
    reviews = _reviews({DRIFTING: _drifting(range(1, 61))})
    forgetting = fsrs.DEFAULT_WEIGHTS.copy()
    forgetting[[0, 1, 2, 3, 20]] = fsrs.WEIGHT_BOUNDS[[0, 1, 2, 3, 20], [0, 0, 0, 0, 1]]  # first stabilities at
    # their floor, decay at its ceiling: recall predicted near 0 after any gap
    table, _ = fit_or_keep_reviews(reviews, current=forgetting[None, :])
    row = table.iloc[0]
    assert row["validation_logloss_new"] < row["validation_logloss_current"]
    assert row["validation_logloss_defaults"] <= row["validation_logloss_new"]
    assert row["decision"] == KEPT_DEFAULTS
    np.testing.assert_array_equal(row["weights"], forgetting)


def test_with_few_scored_reviews_only_the_initial_stabilities_are_fitted():
    reviews = _reviews({FORGETFUL: _forgetful(range(1, 9))})  # 8 cards: 40 scored reviews, 32 before the split
    table, selection = fit_or_keep_reviews(reviews)
    assert selection.n_reviews[0] < MIN_SCORED_REVIEWS_FOR_FULL_FIT and not selection.full_fit[0]
    assert table.loc[0, "decision"] == REPLACED
    new = np.array(table.loc[0, "weights"])
    np.testing.assert_array_equal(new[4:], fsrs.DEFAULT_WEIGHTS[4:])
    assert new[fsrs.GOOD - 1] < fsrs.DEFAULT_WEIGHTS[fsrs.GOOD - 1]


def test_without_a_scored_review_to_validate_on_the_current_weights_stay():
    reviews = _reviews({FORGETFUL: {1: [(0, fsrs.GOOD), (3, fsrs.AGAIN), (6, fsrs.AGAIN), (6, fsrs.GOOD)]}})
    table, _ = fit_or_keep_reviews(reviews)
    assert table.loc[0, "decision"] == KEPT_NO_VALIDATION and table.loc[0, "n_validation"] == 0
    assert np.isnan(table.loc[0, "validation_logloss_new"])
    np.testing.assert_array_equal(table.loc[0, "weights"], fsrs.DEFAULT_WEIGHTS)


@pytest.mark.parametrize("n_learners", [1, 3])
def test_a_learners_outcome_does_not_depend_on_who_is_fitted_beside_them(n_learners):
    learners = {FORGETFUL: _forgetful(range(1, 61)), DRIFTING: _drifting(range(1, 61)), 3: _forgetful(range(1, 41))}
    alone, _ = fit_or_keep_reviews(_reviews({FORGETFUL: learners[FORGETFUL]}))
    together, _ = fit_or_keep_reviews(_reviews(dict(list(learners.items())[:n_learners])))
    together = together.set_index("user_id")
    assert together.loc[FORGETFUL, "decision"] == alone.loc[0, "decision"]
    np.testing.assert_allclose(together.loc[FORGETFUL, "weights"], alone.loc[0, "weights"], rtol=1e-9)
