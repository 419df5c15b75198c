"""Keep or replace: a learner's new FSRS weights are kept only where they predict better than the weights they
would replace and than the defaults, on reviews the fit did not learn from (as Anki keeps fsrs-rs's new fit only
when it beats the current weights; README: FSRS rules).

Each learner's latest VALIDATION_SHARE of training reviews is the validation split. The fit learns from the
reviews before it (w0..w3 alone below MIN_SCORED_REVIEWS_FOR_FULL_FIT); the new weights, the current ones and the
defaults are scored on the split (the fit's score comes with its own last replay; the others cost a replay of
the loss alone each). Where the new weights win, the fit then learns the split too: CONTINUATION_STEPS more
steps from where it stands. Elsewhere the current weights stay, with the reason.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from learning_pipelines.domain.fsrs_optimizer import (
    CardHistories,
    FitConfig,
    LevenbergMarquardt,
    Objective,
    card_histories,
    default_start,
    in_time_order,
    pretrain_initial_stability,
    training_weights,
)

# Chosen on the real collections of ../shared/data/fsrs (README: FSRS rules): a tenth or less left the choice on
# small collections to chance (one kept the defaults at 1.8 times a fit's logloss); from a fifth to three tenths
# the choices agreed but on the two smallest collections, and a quarter scored best in and out of sample together.
VALIDATION_SHARE = 0.25
# Below this many scored reviews a full fit predicted later reviews worse than fitting w0..w3 alone, on
# collections cut from the real ones (fsrs-rs draws the same line at 64 training items).
MIN_SCORED_REVIEWS_FOR_FULL_FIT = 32
# Steps on all training reviews after a new fit wins: two bring the held-out logloss of a large collection
# (greniermath) back to a fit on all of them; one left it 2.5 % short.
CONTINUATION_STEPS = 2

REPLACED = "replaced"
KEPT_CURRENT = "kept: the current weights predict the validation reviews at least as well"
KEPT_DEFAULTS = "kept: the default weights predict the validation reviews at least as well"
KEPT_NO_VALIDATION = "kept: no scored review in the validation split"


@dataclasses.dataclass(frozen=True)
class Selection:
    weights: np.ndarray  # (L, 21): the new weights where they replace the current ones, else the current ones
    decision: np.ndarray  # (L,) REPLACED or why the current weights stay
    full_fit: np.ndarray  # (L,) all 21 weights fitted (else w0..w3 alone)
    validation_logloss: pd.DataFrame  # (L,) columns new, current, defaults: weighted logloss of the split
    n_validation: np.ndarray  # (L,) scored reviews in the validation split
    n_reviews: np.ndarray  # (L,) scored reviews the fit learned from before the choice
    iterations: int  # Levenberg-Marquardt steps taken, before and after the choice

    @property
    def replaced(self) -> np.ndarray:
        return self.decision == REPLACED


def validation_split(h: CardHistories) -> np.ndarray:
    """int8 per review of `h`: 1 in each learner's latest VALIDATION_SHARE of reviews, else 0."""
    from learning_pipelines.domain import fsrs_kernel  # numba: see Objective._kernel

    learner = h.card_learner[h.card_of_review()]
    rank, count = fsrs_kernel.rank_within_learner(h.row, learner, np.ones(len(h.row), dtype=bool), h.n_learners)
    return (rank >= np.floor((1 - VALIDATION_SHARE) * count[learner])).astype(np.int8)


def fit_or_keep(h: CardHistories, current: np.ndarray, config: FitConfig | None = None) -> Selection:
    """New weights for each learner of `h`, started from `current` (L, 21), kept only where they beat `current`
    and the defaults on the validation split; elsewhere `current` stays."""
    config = config or FitConfig()
    current = np.asarray(current, dtype=float)
    sample_weight = training_weights(h, config)
    part = validation_split(h)
    learned = np.where(part == 0, sample_weight, 0.0)
    anchor = pretrain_initial_stability(h, learned, current)
    objective = Objective(h, sample_weight, part, anchor, config)
    n_learned, n_validation = objective.n_reviews[:, 0], objective.n_reviews[:, 1]
    full_fit = n_learned >= MIN_SCORED_REVIEWS_FOR_FULL_FIT
    fit = LevenbergMarquardt(objective, anchor, full_fit)
    fit.run(config.max_iterations - CONTINUATION_STEPS, last_loss_only=False)  # the continuation reads its gradient

    scored = np.maximum(objective.total_weight[:, 1], 1e-12)
    new = fit.loss_sums[:, 1] / scored
    kept = objective.loss_sums(current, validation_only=True)[:, 1] / scored
    defaults = default_start(h.n_learners)
    on_defaults = np.all(current == defaults, axis=1)
    by_defaults = kept.copy()
    if not on_defaults.all():
        others = np.flatnonzero(~on_defaults)
        by_defaults[others] = objective.loss_sums(defaults, others, validation_only=True)[others, 1] / scored[others]
    decision = np.where(n_validation == 0, KEPT_NO_VALIDATION,
                        np.where(new >= kept, KEPT_CURRENT, np.where(new >= by_defaults, KEPT_DEFAULTS, REPLACED)))
    replaced = decision == REPLACED

    weights = current.copy()
    continued = replaced & full_fit
    objective.include_validation(continued)
    fit.resume(continued)
    fit.run(CONTINUATION_STEPS, last_loss_only=True)
    weights[continued] = fit.weights[continued]
    stabilities_only = replaced & ~full_fit
    if stabilities_only.any():
        weights[stabilities_only, :4] = pretrain_initial_stability(h, sample_weight, current)[stabilities_only, :4]
    scores = pd.DataFrame({"new": new, "current": kept, "defaults": by_defaults}).where(
        pd.Series(n_validation > 0), np.nan)
    return Selection(weights, decision, full_fit, scores, n_validation, n_learned, fit.iterations)


def fit_or_keep_reviews(reviews: pd.DataFrame, current: np.ndarray | None = None,
                        config: FitConfig | None = None) -> tuple[pd.DataFrame, Selection]:
    """fit_or_keep on a review frame (user_id, concept_id, learner_day, rating, reviewed_at); `current` in
    user_id order (default: the FSRS-6 defaults). One row per learner: user_id, weights (list), decision,
    n_reviews, n_validation, validation_logloss_new / _current / _defaults."""
    h = card_histories(in_time_order(reviews))
    selection = fit_or_keep(h, default_start(h.n_learners) if current is None else current, config)
    scores = selection.validation_logloss
    table = pd.DataFrame({
        "user_id": h.learner_ids,
        "weights": selection.weights.tolist(),
        "decision": selection.decision,
        "n_reviews": selection.n_reviews,
        "n_validation": selection.n_validation,
        **{f"validation_logloss_{column}": scores[column].to_numpy() for column in scores.columns},
    })
    return table, selection
