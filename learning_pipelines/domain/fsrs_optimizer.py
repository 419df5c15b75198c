"""Fit FSRS-6 weights for many learners at once: one batched torch problem, not a loop over learners.

Every learner's cards are replayed together (fsrs_replay.replay); the loss is the sum over
learners of each learner's recency-weighted mean log loss, so gradients never mix learners
and Adam's per-parameter steps make this exactly as many independent fits, run in lockstep.
Like the reference (fsrs-rs): initial stabilities pre-trained from first intervals, weights
clamped to their bounds after every step, an L2 pull toward the starting weights that fades
with the amount of data, and the best weights seen kept per learner (early stopping).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

from learning_pipelines.domain import fsrs
from learning_pipelines.domain.fsrs_replay import replay
from learning_pipelines.domain.review_sequences import ReviewSequences, build_sequences

_EPS = 1e-6
_S0_GRID = np.exp(np.linspace(np.log(fsrs.S_MIN * 10), np.log(fsrs.INIT_S_MAX), 300))


@dataclasses.dataclass(frozen=True)
class FitConfig:
    learning_rate: float = 0.04
    max_iterations: int = 120
    patience: int = 8  # iterations without improvement before a learner's best weights are final
    tolerance: float = 1e-4  # smaller logloss gains do not count as improvement
    prior_strength: float = 64.0  # pseudo-reviews pulling each weight toward its start (fsrs-rs: gamma)
    recency_weighting: bool = True


@dataclasses.dataclass(frozen=True)
class FitResult:
    weights: np.ndarray  # (L, 21)
    logloss_before: np.ndarray  # (L,) training loss at the starting weights
    logloss_after: np.ndarray  # (L,)
    n_reviews: np.ndarray  # (L,) reviews that scored (a day or more after the previous one)
    iterations: int


def recency_weights(order: np.ndarray) -> np.ndarray:
    """Later reviews count more: 0.25 for the oldest up to 1.0 for the newest (fsrs-rs's curve)."""
    rank = np.argsort(np.argsort(order, kind="stable"), kind="stable")
    return 0.25 + 0.75 * (rank / max(len(order), 1)) ** 3


def _scored_positions(seqs: ReviewSequences):
    steps, cards = seqs.later_reviews()
    scored = seqs.elapsed_days[steps, cards] > 0
    return steps, cards, scored


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
        per_learner = np.zeros((len(start), len(_S0_GRID)))
        np.add.at(per_learner, learner[mask], nll)
        counts = np.bincount(learner[mask], minlength=len(start))
        # A weak prior (a few pseudo-reviews) toward the starting value keeps sparse ratings sane.
        prior = 2.0 * (np.log(_S0_GRID)[None, :] - np.log(start[:, rating - 1])[:, None]) ** 2
        best = _S0_GRID[np.argmin(per_learner + prior, axis=1)]
        weights[:, rating - 1] = np.where(counts > 0, best, start[:, rating - 1])
    return fsrs.clip_weights(weights)


def fit_weights(seqs: ReviewSequences, start: np.ndarray | None = None, review_order: np.ndarray | None = None,
                config: FitConfig = FitConfig()) -> FitResult:
    """Fit one weight vector per learner of `seqs`, starting from `start` (default: FSRS-6 defaults).

    review_order: a sortable time for each input row (ReviewSequences.row_of), for recency weights.
    """
    n_learners = seqs.n_learners
    start = np.tile(fsrs.DEFAULT_WEIGHTS, (n_learners, 1)) if start is None else np.asarray(start, dtype=float)
    steps, cards, scored = _scored_positions(seqs)
    learner_of = seqs.card_learner[cards[scored]]
    n_reviews = np.bincount(learner_of, minlength=n_learners)
    sample_weight = np.ones(int(scored.sum()))
    if config.recency_weighting and review_order is not None:
        rows = seqs.row_of[steps[scored], cards[scored]]
        for learner in range(n_learners):  # rank within each learner's own history
            mask = learner_of == learner
            sample_weight[mask] = recency_weights(np.asarray(review_order)[rows[mask]])
    initial = pretrain_initial_stability(seqs, start)

    dtype = torch.float64
    elapsed = torch.as_tensor(seqs.elapsed_days, dtype=dtype)
    ratings = torch.as_tensor(seqs.ratings, dtype=dtype)
    active = seqs.active_counts
    scored_index = torch.as_tensor(np.flatnonzero(scored))
    labels = torch.as_tensor((seqs.ratings[steps, cards] > fsrs.AGAIN)[scored], dtype=dtype)
    sw = torch.as_tensor(sample_weight, dtype=dtype)
    learner_index = torch.as_tensor(learner_of)
    weight_sum = torch.zeros(n_learners, dtype=dtype).index_add_(0, learner_index, sw).clamp_min(_EPS)
    card_learner = torch.as_tensor(seqs.card_learner)
    low = torch.as_tensor(fsrs.WEIGHT_BOUNDS[:, 0], dtype=dtype)
    high = torch.as_tensor(fsrs.WEIGHT_BOUNDS[:, 1], dtype=dtype)
    anchor = torch.as_tensor(initial, dtype=dtype)
    # Prior scale per weight: a tenth of its allowed range, so the pull is comparable across weights.
    scale = (high - low) / 10.0
    prior_weight = config.prior_strength / (torch.as_tensor(n_reviews, dtype=dtype) + config.prior_strength)

    def per_learner_loss(weights: torch.Tensor) -> torch.Tensor:
        predicted, _, _ = replay(elapsed, ratings, active, weights[card_learner])
        p = predicted[scored_index].clamp(_EPS, 1 - _EPS)
        nll = -(labels * torch.log(p) + (1 - labels) * torch.log(1 - p)) * sw
        return torch.zeros(n_learners, dtype=dtype).index_add(0, learner_index, nll) / weight_sum

    weights = anchor.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([weights], lr=config.learning_rate)
    with torch.no_grad():
        loss_before = per_learner_loss(torch.as_tensor(start, dtype=dtype))
    best_loss = torch.full((n_learners,), float("inf"), dtype=dtype)
    best_weights = anchor.clone()
    since_best = torch.zeros(n_learners, dtype=torch.long)
    iteration = 0
    for iteration in range(1, config.max_iterations + 1):
        optimizer.zero_grad()
        data_loss = per_learner_loss(weights)
        penalty = (((weights - anchor) / scale) ** 2).mean(dim=1) * prior_weight
        (data_loss + penalty).sum().backward()
        with torch.no_grad():
            improved = data_loss < best_loss - config.tolerance
            first = torch.isinf(best_loss)
            improved = improved | first
            best_loss = torch.where(improved, data_loss, best_loss)
            best_weights[improved] = weights[improved]
            since_best = torch.where(improved, 0, since_best + 1)
            if bool((since_best >= config.patience).all()):
                break
            done = since_best >= config.patience
            weights.grad[done] = 0.0
            optimizer.step()
            weights.copy_(torch.maximum(torch.minimum(weights, high), low))
    with torch.no_grad():
        final_loss = per_learner_loss(best_weights)
    return FitResult(best_weights.numpy(), loss_before.numpy(), final_loss.numpy(), n_reviews, iteration)


def fit_reviews(reviews: pd.DataFrame, start: np.ndarray | None = None,
                config: FitConfig = FitConfig()) -> tuple[pd.DataFrame, FitResult]:
    """Per-learner weights from a review frame (user_id, concept_id, learner_day, rating, reviewed_at).

    Returns one row per learner (user_id, weights as a list, n_reviews, logloss_before/after).
    """
    ordered = reviews.sort_values("reviewed_at", kind="stable").reset_index(drop=True)
    seqs = build_sequences(ordered)
    result = fit_weights(seqs, start=start, review_order=ordered["reviewed_at"].to_numpy(), config=config)
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
    pooled = reviews.assign(user_id=reviews["user_id"].astype("int64") * 0 + 0,
                            concept_id=pd.factorize(pd.MultiIndex.from_frame(reviews[["user_id", "concept_id"]]))[0])
    return fit_reviews(pooled, config=config)[1]
