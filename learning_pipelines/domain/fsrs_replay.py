"""Replay many cards' histories through FSRS-6 at once."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from learning_pipelines.domain import fsrs
from learning_pipelines.domain.review_sequences import ReviewSequences, build_sequences


def replay(elapsed_days, ratings, active_counts, card_weights):
    """Predicted recall before every later review, and each card's final (stability, difficulty).

    elapsed_days, ratings: (T, N) arrays; active_counts: (T,) ints, descending; card_weights:
    (N, 21). Predictions come step by step: step 1's active cards, then step 2's, ... (see
    ReviewSequences.later_reviews).
    """
    stability, difficulty = fsrs.initial_state(ratings[0], card_weights)
    predictions, finished_s, finished_d = [], [], []
    for step in range(1, len(active_counts)):
        n = int(active_counts[step])
        if n < len(stability):
            finished_s.append(stability[n:])
            finished_d.append(difficulty[n:])
            stability, difficulty = stability[:n], difficulty[:n]
        w = card_weights[:n]
        elapsed = elapsed_days[step, :n]
        predictions.append(fsrs.retrievability(elapsed, stability, w))
        stability, difficulty = fsrs.review_step(stability, difficulty, elapsed, ratings[step, :n], w)
    finished_s.append(stability)
    finished_d.append(difficulty)
    return (np.concatenate(predictions) if predictions else np.zeros(0), np.concatenate(finished_s[::-1]),
            np.concatenate(finished_d[::-1]))


@dataclasses.dataclass(frozen=True)
class ReplayResult:
    predictions: pd.DataFrame  # row, retrievability, recalled, elapsed_days, review_number, lapses_before
    memory_states: pd.DataFrame  # user_id, concept_id, stability, difficulty, n_reviews


def replay_sequences(seqs: ReviewSequences, learner_weights: np.ndarray) -> ReplayResult:
    """Numpy replay with per-learner weights (L, 21), ready for evaluation and for memory states."""
    card_weights = np.asarray(learner_weights, dtype=float)[seqs.card_learner]
    predicted, stability, difficulty = replay(seqs.elapsed_days.astype(float), seqs.ratings, seqs.active_counts,
                                              card_weights)
    steps, cards = seqs.later_reviews()
    lapses = np.cumsum((seqs.ratings == fsrs.AGAIN) & (seqs.elapsed_days > 0), axis=0)
    predictions = pd.DataFrame({
        "row": seqs.row_of[steps, cards],
        "user_id": seqs.card_keys["user_id"].to_numpy()[cards],
        "retrievability": predicted,
        "recalled": (seqs.ratings[steps, cards] > fsrs.AGAIN).astype(int),
        "elapsed_days": seqs.elapsed_days[steps, cards],
        "review_number": steps + 1,
        "lapses_before": lapses[steps - 1, cards],
    })
    memory_states = seqs.card_keys.assign(stability=stability, difficulty=difficulty, n_reviews=seqs.lengths)
    return ReplayResult(predictions, memory_states)


def predict_reviews(reviews: pd.DataFrame, weights_by_user: dict[int, np.ndarray],
                    default_weights: np.ndarray = fsrs.DEFAULT_WEIGHTS) -> ReplayResult:
    """Replay a review frame (user_id, concept_id, learner_day, rating, in time order) with each
    learner's weights (default for learners without). Prediction `row`s index the frame as given."""
    seqs = build_sequences(reviews)
    learner_weights = np.array([weights_by_user.get(int(u), default_weights) for u in seqs.learner_ids], dtype=float)
    result = replay_sequences(seqs, learner_weights.reshape(-1, fsrs.N_WEIGHTS))
    result.predictions["row"] = reviews.index.to_numpy()[result.predictions["row"].to_numpy()]
    return result
