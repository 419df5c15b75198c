"""Fit FSRS-6 weights for many learners at once: one batched problem, not a loop over learners.

Every learner's cards are replayed (compiled, learners in parallel: fsrs_kernel) with the
derivatives of the loss with respect to the learner's weights; each learner then takes its own damped
Gauss-Newton (Levenberg-Marquardt) step on its recency-weighted mean log loss. Like the
reference (fsrs-rs): initial stabilities pre-trained from first intervals, weights clamped to
their bounds, an L2 pull toward the starting weights that fades with the amount of data, and a
learner's fit stops when it no longer improves (early stopping).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from learning_pipelines.domain import fsrs
from learning_pipelines.domain.review_sequences import ReviewSequences, build_sequences

_EPS = 1e-6
_S0_GRID = np.exp(np.linspace(np.log(fsrs.S_MIN * 10), np.log(fsrs.INIT_S_MAX), 120))


@dataclasses.dataclass(frozen=True)
class FitConfig:
    max_iterations: int = 10  # later iterations move mean logloss by < 0.0001 (bench/fsrs_throughput.py)
    tolerance: float = 1e-5  # a learner whose accepted step gains less logloss than this is done
    prior_strength: float = 64.0  # pseudo-reviews pulling each weight toward its start (fsrs-rs: gamma)
    recency_weighting: bool = True


@dataclasses.dataclass(frozen=True)
class FitResult:
    weights: np.ndarray  # (L, 21)
    logloss_before: np.ndarray  # (L,) training loss at the starting weights
    logloss_after: np.ndarray  # (L,)
    n_reviews: np.ndarray  # (L,) reviews that scored (a day or more after the previous one)
    iterations: int


def recency_weights(rank: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Later reviews count more: 0.25 for a learner's oldest (rank 0 of count) rising toward 1.0
    for the newest, along fsrs-rs's cubic curve."""
    return 0.25 + 0.75 * (rank / np.maximum(count, 1)) ** 3


def _scored_reviews(seqs: ReviewSequences) -> tuple[np.ndarray, np.ndarray]:
    """(step, card) of the reviews the loss scores: a day or more after the card's previous one."""
    steps, cards = seqs.later_reviews()
    keep = seqs.elapsed_days[steps, cards] > 0
    return steps[keep], cards[keep]


def pretrain_initial_stability(seqs: ReviewSequences, start: np.ndarray) -> np.ndarray:
    """w0..w3 per learner: the stability that best explains recall at each card's second review,
    given its first rating (grid search in log space), shrunk toward `start` when data are few."""
    weights = start.copy()
    second = (seqs.lengths > 1) & (seqs.elapsed_days[1] > 0)
    first_rating = seqs.ratings[0, second]
    elapsed = seqs.elapsed_days[1, second].astype(float)
    recalled = (seqs.ratings[1, second] > fsrs.AGAIN).astype(float)
    learner = seqs.card_learner[second]
    factor = fsrs.forgetting_factor(start)[learner]
    decay = start[learner, 20]
    for rating in range(1, 5):
        mask = first_rating == rating
        if not mask.any():
            continue
        r = (1.0 + factor[mask, None] * elapsed[mask, None] / _S0_GRID[None, :]) ** -decay[mask, None]
        r = np.clip(r, _EPS, 1 - _EPS)
        nll = -(recalled[mask, None] * np.log(r) + (1 - recalled[mask, None]) * np.log(1 - r))
        per_learner = _sum_rows_by_group(nll, learner[mask], len(start))
        counts = np.bincount(learner[mask], minlength=len(start))
        # A weak prior (a few pseudo-reviews) toward the starting value keeps sparse ratings sane.
        prior = 2.0 * (np.log(_S0_GRID)[None, :] - np.log(start[:, rating - 1])[:, None]) ** 2
        best = _S0_GRID[np.argmin(per_learner + prior, axis=1)]
        weights[:, rating - 1] = np.where(counts > 0, best, start[:, rating - 1])
    return fsrs.clip_weights(weights)


def _sum_rows_by_group(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Row sums of `values` (n, k) per group: (n_groups, k)."""
    order = np.argsort(group, kind="stable")
    groups, starts = np.unique(group[order], return_index=True)
    sums = np.zeros((n_groups, values.shape[1]))
    if len(order):
        sums[groups] = np.add.reduceat(values[order], starts, axis=0)
    return sums


def fit_weights(seqs: ReviewSequences, start: np.ndarray | None = None, review_order: np.ndarray | None = None,
                config: FitConfig = FitConfig()) -> FitResult:
    """Fit one weight vector per learner of `seqs`, starting from `start` (default: FSRS-6 defaults).

    Levenberg-Marquardt on each learner's 21 weights, all learners in lockstep: one batched replay
    gives every learner's loss, gradient and Fisher matrix (fsrs_kernel), each learner gets its own damped
    Gauss-Newton step, kept only where it lowers that learner's loss. Learners drop out of the
    batch as they converge, so later iterations replay fewer cards.

    review_order: a sortable time for each input row (ReviewSequences.row_of), for recency weights.
    """
    n_learners = seqs.n_learners
    start = np.tile(fsrs.DEFAULT_WEIGHTS, (n_learners, 1)) if start is None else np.asarray(start, dtype=float)
    anchor = pretrain_initial_stability(seqs, start)
    objective = _Objective(seqs, review_order, anchor, config)

    weights = anchor.copy()
    everyone = np.arange(n_learners)
    loss, grad, hessian = objective.evaluate(weights, everyone)
    damping = np.full(n_learners, 1e-3)
    active = objective.n_reviews > 0
    iteration = 0
    for iteration in range(1, config.max_iterations + 1):
        if not active.any():
            break
        learners = np.flatnonzero(active)
        h = hessian[learners]
        diagonal = np.einsum("lii->li", h)
        system = h + (damping[learners, None] * diagonal + 1e-9)[:, :, None] * np.eye(fsrs.N_WEIGHTS)
        candidate = weights.copy()
        candidate[learners] = fsrs.clip_weights(
            weights[learners] - np.linalg.solve(system, grad[learners][:, :, None])[:, :, 0])
        new_loss, new_grad, new_hessian = objective.evaluate(candidate, learners)
        better = np.zeros(n_learners, dtype=bool)
        better[learners] = new_loss[learners] < loss[learners]
        gain = np.where(better, loss - new_loss, 0.0)
        weights[better], grad[better], hessian[better] = candidate[better], new_grad[better], new_hessian[better]
        loss = np.where(better, new_loss, loss)
        damping = np.where(better, damping / 3.0, np.where(active, damping * 8.0, damping))
        # Done: an accepted step gained almost nothing, or no step small enough helps any more.
        active &= ~((better & (gain < config.tolerance)) | (damping > 1e8))
    # `loss` holds each learner's loss at its final weights: only the prior's share comes off.
    return FitResult(weights, objective.data_loss(start), loss - objective.prior_loss(weights), objective.n_reviews,
                     iteration)


class _Objective:
    """Per-learner recency-weighted logloss plus the prior, with gradient and Gauss-Newton (Fisher)
    matrix, for any subset of learners (only their cards are replayed)."""

    def __init__(self, seqs: ReviewSequences, review_order, anchor: np.ndarray, config: FitConfig):
        self.seqs, self.anchor = seqs, anchor
        n_learners = seqs.n_learners
        steps, cards = _scored_reviews(seqs)
        learner_of = seqs.card_learner[cards]
        self.n_reviews = np.bincount(learner_of, minlength=n_learners)
        # Sample weights on the (step, card) grid, so any subset of cards can pick its own.
        self.sample_weight = np.zeros(seqs.ratings.shape)
        weight = np.ones(len(steps))
        if config.recency_weighting and review_order is not None:
            rows = seqs.row_of[steps, cards]
            order = np.lexsort((np.asarray(review_order)[rows], learner_of))
            first_of_learner = np.concatenate([[0], np.cumsum(self.n_reviews)[:-1]])
            rank = np.empty(len(order))
            rank[order] = np.arange(len(order)) - np.repeat(first_of_learner, self.n_reviews)
            weight = recency_weights(rank, self.n_reviews[learner_of])
        self.sample_weight[steps, cards] = weight
        self.total_weight = np.maximum(np.bincount(learner_of, weight, n_learners), _EPS)
        self.lengths = seqs.lengths.astype(np.int64)
        self.learner_cards = np.argsort(seqs.card_learner, kind="stable").astype(np.int64)
        self.learner_start = np.searchsorted(seqs.card_learner[self.learner_cards],
                                             np.arange(n_learners + 1)).astype(np.int64)
        # Prior: a tenth of each weight's allowed range is one unit; its pull fades with the data.
        self.scale = (fsrs.WEIGHT_BOUNDS[:, 1] - fsrs.WEIGHT_BOUNDS[:, 0]) / 10.0
        self.prior = config.prior_strength / (self.n_reviews + config.prior_strength) / fsrs.N_WEIGHTS

    def _data_terms(self, weights: np.ndarray, learners: np.ndarray):
        """Weighted loss sum, gradient and Fisher matrix of the data, for `learners` only."""
        # Imported here: numba costs 0.3 s at import, and every run worker and step process imports this
        # module with the code location, most of them to run something other than a fit.
        from learning_pipelines.domain import fsrs_kernel

        return fsrs_kernel.loss_grad_fisher(
            self.seqs.elapsed_days, self.seqs.ratings, self.lengths, self.sample_weight, self.learner_start,
            self.learner_cards,
            np.ascontiguousarray(weights, dtype=np.float64), np.asarray(learners, dtype=np.int64))

    def data_loss(self, weights) -> np.ndarray:
        everyone = np.arange(len(self.total_weight))
        return self._data_terms(np.asarray(weights, dtype=float), everyone)[0] / self.total_weight

    def prior_loss(self, weights: np.ndarray) -> np.ndarray:
        return self.prior * (((weights - self.anchor) / self.scale) ** 2).sum(axis=1)

    def evaluate(self, weights: np.ndarray, learners: np.ndarray):
        n_learners = len(self.total_weight)
        loss_sum, grad_sum, fisher_sum = self._data_terms(weights, learners)
        total = self.total_weight[learners]
        offset = (weights - self.anchor) / self.scale
        loss = self.prior_loss(weights)
        loss[learners] += loss_sum / total
        grad = 2 * self.prior[:, None] * offset / self.scale
        grad[learners] += grad_sum / total[:, None]
        hessian = np.zeros((n_learners, fsrs.N_WEIGHTS, fsrs.N_WEIGHTS))
        hessian[learners] = fisher_sum / total[:, None, None]
        hessian += (2 * self.prior[:, None] / self.scale**2)[:, :, None] * np.eye(fsrs.N_WEIGHTS)
        return loss, grad, hessian


def fit_reviews(reviews: pd.DataFrame, start: np.ndarray | None = None,
                config: FitConfig = FitConfig()) -> tuple[pd.DataFrame, FitResult]:
    """Per-learner weights from a review frame (user_id, concept_id, learner_day, rating, reviewed_at).

    Returns one row per learner (user_id, weights as a list, n_reviews, logloss_before/after).
    """
    ordered = reviews.sort_values("reviewed_at", kind="stable").reset_index(drop=True)
    seqs = build_sequences(ordered)
    result = fit_weights(seqs, start=start, review_order=np.arange(len(ordered)), config=config)
    table = pd.DataFrame({
        "user_id": seqs.learner_ids,
        "weights": [list(map(float, w)) for w in result.weights],
        "n_reviews": result.n_reviews,
        "logloss_before": result.logloss_before,
        "logloss_after": result.logloss_after,
    })
    return table, result


def fit_pooled(reviews: pd.DataFrame, config: FitConfig = FitConfig()) -> FitResult:
    """One weight vector for everyone: every card replayed as if one learner owned them all."""
    pooled = reviews.assign(user_id=0,
                            concept_id=pd.factorize(pd.MultiIndex.from_frame(reviews[["user_id", "concept_id"]]))[0])
    return fit_reviews(pooled, config=config)[1]
