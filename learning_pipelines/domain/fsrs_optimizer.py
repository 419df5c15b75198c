"""Fit FSRS-6 weights for many learners at once: one batched problem, not a loop over learners.

Every learner's cards are replayed (compiled, in parallel: fsrs_kernel) with the derivatives of the
loss with respect to the learner's weights; each learner then takes its own damped Gauss-Newton
(Levenberg-Marquardt) step on its recency-weighted mean log loss. Like the reference (fsrs-rs):
initial stabilities pre-trained from first intervals, cards first seen again after an implausible
gap left out (outlier filter), weights clamped to their bounds, an L2 pull toward the starting weights worth a
fixed amount of total loss (so it fades with the amount of data), and a learner's fit stops when it
no longer improves.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from learning_pipelines.domain import fsrs

_EPS = 1e-6
_S0_GRID = np.exp(np.linspace(np.log(fsrs.S_MIN * 10), np.log(fsrs.INIT_S_MAX), 120))

# How far each weight typically lies from its default across Anki users (fsrs-rs PARAMS_STDDEV):
# the unit of the prior's pull toward the starting weights.
WEIGHT_SPREAD = np.array([
    6.43, 9.66, 17.58, 27.85, 0.57, 0.28, 0.6, 0.12, 0.39, 0.18, 0.33, 0.3, 0.09, 0.16, 0.57, 0.25,
    1.03, 0.31, 0.32, 0.14, 0.27,
])


# The review count at which FitConfig.tolerance is the stopping gain of the mean loss (the simulated learners of
# bench/fsrs_throughput.py have about this many scored reviews).
TOLERANCE_REVIEWS = 870


@dataclasses.dataclass(frozen=True)
class FitConfig:
    max_iterations: int = 5  # Levenberg-Marquardt steps; more move bench/fsrs_throughput.py's mean logloss by < 0.0002
    tolerance: float = 3e-4  # a learner whose accepted step gains less logloss than this is done
    # The prior adds prior_strength / n x sum(((w - start) / WEIGHT_SPREAD)^2) to the mean loss of a learner's
    # n reviews: a fixed total, so its pull fades as reviews accrue (fsrs-rs's gamma).
    prior_strength: float = 1.0
    recency_weighting: bool = True
    filter_outliers: bool = True  # leave out cards first reviewed again after an implausible gap (outlier_cards)


@dataclasses.dataclass(frozen=True)
class FitResult:
    weights: np.ndarray  # (L, 21)
    logloss_before: np.ndarray  # (L,) training loss where the iterations start (`start`, w0..w3 pre-trained)
    logloss_after: np.ndarray  # (L,)
    n_reviews: np.ndarray  # (L,) reviews the fit trained on (a day or more after the previous one, outliers out)
    iterations: int


@dataclasses.dataclass(frozen=True)
class CardHistories:
    """Reviews laid out for fsrs_kernel: each card's reviews consecutive in time order, each learner's
    cards consecutive (learners in learner_ids order)."""

    elapsed_days: np.ndarray  # (n,) whole days since the card's previous review; 0 at its first
    ratings: np.ndarray  # (n,) 1..4
    row: np.ndarray  # (n,) position of each review in the frame it was built from
    card_start: np.ndarray  # (C + 1,) card c's reviews are [card_start[c], card_start[c + 1])
    card_learner: np.ndarray  # (C,) index into learner_ids
    learner_ids: np.ndarray  # (L,)

    @property
    def n_learners(self) -> int:
        return len(self.learner_ids)

    def card_of_review(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.card_learner)), np.diff(self.card_start))


def card_histories(reviews: pd.DataFrame) -> CardHistories:
    """reviews: user_id, concept_id, learner_day, rating, in time order."""
    from learning_pipelines.domain import fsrs_kernel  # numba: see Objective._kernel

    learner_of_row, learner_ids = pd.factorize(reviews["user_id"], sort=True)
    concept_of_row, concepts = pd.factorize(reviews["concept_id"])
    card_of_row, card_keys = pd.factorize(learner_of_row.astype(np.int64) * max(len(concepts), 1) + concept_of_row,
                                          sort=True)
    order, card_start, elapsed = fsrs_kernel.card_layout(
        card_of_row.astype(np.int64), reviews["learner_day"].to_numpy(dtype=np.int64), len(card_keys))
    return CardHistories(elapsed, reviews["rating"].to_numpy(dtype=np.int64)[order], order, card_start,
                         (card_keys // max(len(concepts), 1)).astype(np.int64), np.asarray(learner_ids))


def recency_weights(rank: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Later reviews count more: 0.25 for a learner's oldest (rank 0 of count) rising toward 1.0
    for the newest, along fsrs-rs's cubic curve."""
    share = rank / np.maximum(count, 1)
    return 0.25 + 0.75 * share * share * share


def outlier_cards(first_rating: np.ndarray, first_interval: np.ndarray) -> np.ndarray:
    """Which cards to leave out of the fit, given their first rating and the days until their first
    review on a later day: those first seen again after over 100 days (365 after a first Easy), the
    bound fsrs-rs's outlier filter sets (such a gap is rescheduling, not memory).

    fsrs-rs also leaves out the cards of the rarest intervals (5 % of each first rating's, 20 at
    least); on bench/fsrs_throughput.py that made logloss worse, on simulated learners and on small
    collections cut from a real one alike, so it is not done here.
    """
    return first_interval > np.where(first_rating == fsrs.EASY, 365, 100)


def training_weights(h: CardHistories, config: FitConfig) -> np.ndarray:
    """Each review's weight in the loss: 0 for a review on the day of the previous one or of a card
    left out as an outlier, else its recency weight (or 1)."""
    from learning_pipelines.domain import fsrs_kernel

    scored = h.elapsed_days > 0
    if config.filter_outliers:
        card = h.card_of_review()
        later_day = np.flatnonzero(scored)
        first_later_day = later_day[np.diff(card[later_day], prepend=-1) != 0]  # a card's positions are consecutive
        cards = card[first_later_day]
        out = outlier_cards(h.ratings[h.card_start[cards]], h.elapsed_days[first_later_day])
        left_out = np.zeros(len(h.card_learner), dtype=bool)
        left_out[cards[out]] = True
        scored &= ~left_out[card]
    if not config.recency_weighting:
        return scored.astype(float)
    learner = h.card_learner[h.card_of_review()]
    rank, count = fsrs_kernel.rank_within_learner(h.row, learner, scored, h.n_learners)
    weights = recency_weights(rank, count[learner])
    weights[~scored] = 0.0
    return weights


def pretrain_initial_stability(h: CardHistories, sample_weight: np.ndarray, start: np.ndarray) -> np.ndarray:
    """w0..w3 per learner: the stability that best explains recall at each card's second review
    (where it falls on a later day and the card is trained on), given its first rating (grid search
    in log space over reviews grouped by interval), shrunk toward `start` when data are few."""
    weights = start.copy()
    second = h.card_start[:-1][np.diff(h.card_start) > 1] + 1
    second = second[sample_weight[second] > 0]
    learner = h.card_learner[np.searchsorted(h.card_start, second, side="right") - 1]
    span = int(h.elapsed_days[second].max()) + 1 if len(second) else 1
    group_key = (learner * 5 + h.ratings[second - 1]) * span + h.elapsed_days[second].astype(np.int64)
    keys, group, count = np.unique(group_key, return_inverse=True, return_counts=True)
    recalled = np.bincount(group, h.ratings[second] > fsrs.AGAIN, len(keys))
    group_learner, group_rating, elapsed = keys // span // 5, keys // span % 5, (keys % span).astype(float)
    r = (1.0 + fsrs.forgetting_factor(start)[group_learner, None] * elapsed[:, None] / _S0_GRID[None, :]) ** \
        -start[group_learner, 20, None]
    r = np.clip(r, _EPS, 1 - _EPS)
    nll = -(recalled[:, None] * np.log(r) + (count - recalled)[:, None] * np.log(1 - r))
    for rating in range(1, 5):
        mask = group_rating == rating
        if not mask.any():
            continue
        per_learner = _sum_rows_by_group(nll[mask], group_learner[mask], len(start))
        counts = np.bincount(group_learner[mask], count[mask], len(start))
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


def fit_histories(h: CardHistories, start: np.ndarray | None = None, config: FitConfig = FitConfig()) -> FitResult:
    """Fit one weight vector per learner of `h`, starting from `start` (default: FSRS-6 defaults).

    Levenberg-Marquardt on each learner's 21 weights, all learners in lockstep: one batched replay
    gives every learner's loss, gradient and Fisher matrix (fsrs_kernel), each learner gets its own damped
    Gauss-Newton step, kept only where it lowers that learner's loss. Learners drop out of the
    batch as they converge, so later iterations replay fewer cards; the last one replays for the
    loss alone (no step follows it).
    """
    start = default_start(h.n_learners) if start is None else np.asarray(start, dtype=float)
    sample_weight = training_weights(h, config)
    anchor = pretrain_initial_stability(h, sample_weight, start)
    objective = Objective(h, sample_weight, np.zeros(len(sample_weight), dtype=np.int8), anchor, config)
    fit = LevenbergMarquardt(objective, anchor, objective.n_reviews[:, 0] > 0)
    loss_before = fit.data_loss()  # the prior is 0 at the anchor
    fit.run(config.max_iterations, last_loss_only=True)
    return FitResult(fit.weights, loss_before, fit.data_loss(), objective.n_reviews[:, 0], fit.iterations)


def default_start(n_learners: int) -> np.ndarray:
    return np.tile(fsrs.DEFAULT_WEIGHTS, (n_learners, 1))


# Where a learner's damping starts, relative to its Fisher matrix's diagonal: a first step that short is taken at
# once; from 1e-3 a third of the bench's learners had their first (full price) replay refused.
_INITIAL_DAMPING = 1.0
_IDENTITY = np.eye(fsrs.N_WEIGHTS)


class LevenbergMarquardt:
    """Each learner's damped Gauss-Newton steps on `objective`, all learners in lockstep, from `weights`.

    A weight held at the bound its gradient pushes it against takes no part in a step (active set): the other
    weights' step is solved with it fixed, instead of solved as if it moved and then clipped.
    """

    def __init__(self, objective: Objective, weights: np.ndarray, active: np.ndarray):
        self.objective = objective
        self.weights = weights.copy()
        everyone = np.arange(len(weights))
        self.loss_sums, self.grad_sums, self.fisher = objective.evaluate(self.weights, everyone)
        self.loss = objective.value(self.loss_sums, self.weights)
        self.damping = np.full(len(weights), _INITIAL_DAMPING)
        self.active = active.copy()
        self.iterations = 0

    def data_loss(self) -> np.ndarray:
        """Each learner's weighted mean log loss of the reviews its objective scores, at its current weights."""
        return self.objective.value(self.loss_sums, self.weights, with_prior=False)

    def run(self, n_iterations: int, last_loss_only: bool) -> None:
        """Up to `n_iterations` steps of the active learners; with `last_loss_only`, the last step is tested by a
        replay of the loss alone (its gradient is not needed: no step follows it)."""
        objective = self.objective
        for iteration in range(n_iterations):
            if not self.active.any():
                break
            self.iterations += 1
            learners = np.flatnonzero(self.active)
            candidate = self.weights.copy()
            candidate[learners] = self._step(learners)
            loss_only = last_loss_only and iteration == n_iterations - 1
            if loss_only:
                loss_sums = objective.loss_sums(candidate, learners)
            else:
                loss_sums, grad_sums, fisher = objective.evaluate(candidate, learners)
            new_loss = objective.value(loss_sums, candidate)
            better = np.zeros(len(candidate), dtype=bool)
            better[learners] = new_loss[learners] < self.loss[learners]
            gain = np.where(better, self.loss - new_loss, 0.0)
            self.weights[better], self.loss[better], self.loss_sums[better] = \
                candidate[better], new_loss[better], loss_sums[better]
            if not loss_only:
                self.grad_sums[better], self.fisher[better] = grad_sums[better], fisher[better]
            self.damping = np.where(better, self.damping / 3.0, np.where(self.active, self.damping * 8.0, self.damping))
            # Done: an accepted step gained almost nothing, or no step small enough helps any more.
            self.active &= ~((better & (gain < objective.stop_gain())) | (self.damping > 1e8))

    def resume(self, learners: np.ndarray) -> None:
        """Only `learners` step from now on, on their objective as it is now (objective.include_validation
        changes it)."""
        self.loss[learners] = self.objective.value(self.loss_sums, self.weights)[learners]
        self.active = np.zeros(len(self.weights), dtype=bool)
        self.active[learners] = True

    def _step(self, learners: np.ndarray) -> np.ndarray:
        weights = self.weights[learners]
        grad, hessian = self.objective.gradient_and_hessian(self.grad_sums, self.fisher, self.weights, learners)
        held = (((weights <= fsrs.WEIGHT_BOUNDS[:, 0]) & (grad > 0))
                | ((weights >= fsrs.WEIGHT_BOUNDS[:, 1]) & (grad < 0)))
        hessian[held[:, :, None] | held[:, None, :]] = 0.0
        grad[held] = 0.0
        learner_of, weight_of = np.nonzero(held)
        hessian[learner_of, weight_of, weight_of] = 1.0
        diagonal = np.einsum("lii->li", hessian)
        system = hessian + (self.damping[learners, None] * diagonal + 1e-9)[:, :, None] * _IDENTITY
        return fsrs.clip_weights(weights - np.linalg.solve(system, grad[:, :, None])[:, :, 0])


class Objective:
    """Per learner: the recency-weighted mean log loss of the reviews it scores plus the prior, with gradient and
    Gauss-Newton (Fisher) matrix, for any subset of learners (only their cards are replayed).

    `part` splits the scored reviews in two (fsrs_kernel): 0, what every fit learns from; 1, a validation split,
    scored alongside (at no extra replay) and learned from only by the learners include_validation names.
    """

    def __init__(self, h: CardHistories, sample_weight: np.ndarray, part: np.ndarray, anchor: np.ndarray,
                 config: FitConfig):
        fsrs_kernel = self._kernel()
        self.h, self.sample_weight, self.part, self.anchor, self.config = h, sample_weight, part, anchor, config
        learner_of_review = h.card_learner[h.card_of_review()]
        scored = sample_weight > 0
        by_part = learner_of_review * 2 + part
        self.n_reviews = np.bincount(by_part[scored], minlength=2 * h.n_learners).reshape(-1, 2)
        self.total_weight = np.bincount(by_part, sample_weight, 2 * h.n_learners).reshape(-1, 2)
        self.unit_card_start, self.unit_learner = fsrs_kernel.work_units(h.card_start, h.card_learner)
        self.learns_validation = np.zeros(h.n_learners, dtype=bool)
        # Each card's replay for the validation split alone ends after its last scored review there.
        in_split = np.flatnonzero(scored & (part == 1))
        self.validation_card_end = h.card_start[:-1].copy()
        self.validation_card_end[h.card_of_review()[in_split]] = in_split + 1  # positions ascend: the last one stays

    @staticmethod
    def _kernel():
        # Imported here: numba costs 0.3 s at import, and every run worker and step process imports this
        # module with the code location, most of them to run something other than a fit.
        from learning_pipelines.domain import fsrs_kernel

        return fsrs_kernel

    def include_validation(self, learners: np.ndarray) -> None:
        self.learns_validation[learners] = True

    def _parts(self) -> np.ndarray:
        """(L, 2): 1 for each part a learner's objective scores."""
        return np.column_stack([np.ones(self.h.n_learners), self.learns_validation]).astype(float)

    def stop_gain(self) -> np.ndarray:
        """(L,): the least gain in a learner's objective (a mean) worth another step: config.tolerance per review
        at TOLERANCE_REVIEWS reviews, i.e. a fixed gain in the summed log loss, so a large learner goes on
        where its few-hundredths-of-a-percent steps still add up."""
        n = (self.n_reviews * self._parts()).sum(axis=1)
        return self.config.tolerance * TOLERANCE_REVIEWS / np.maximum(n, 1)

    def _prior(self) -> np.ndarray:
        n = (self.n_reviews * self._parts()).sum(axis=1)
        return self.config.prior_strength / np.maximum(n, 1)

    def value(self, loss_sums: np.ndarray, weights: np.ndarray, with_prior: bool = True) -> np.ndarray:
        """Each learner's objective from its per-part loss sums (L, 2) at `weights`."""
        parts = self._parts()
        data = (loss_sums * parts).sum(axis=1) / np.maximum((self.total_weight * parts).sum(axis=1), _EPS)
        if not with_prior:
            return data
        return data + self._prior() * (((weights - self.anchor) / WEIGHT_SPREAD) ** 2).sum(axis=1)

    def gradient_and_hessian(self, grad_sums: np.ndarray, fisher: np.ndarray, weights: np.ndarray,
                             learners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The objective's gradient and Gauss-Newton matrix for `learners`, from per-part gradient sums and the
        Fisher matrix per unit of sample weight."""
        parts = self._parts()[learners]
        total = np.maximum((self.total_weight[learners] * parts).sum(axis=1), _EPS)
        prior = self._prior()[learners]
        grad = (grad_sums[learners] * parts[:, :, None]).sum(axis=1) / total[:, None]
        grad += 2 * prior[:, None] * (weights[learners] - self.anchor[learners]) / WEIGHT_SPREAD**2
        hessian = fisher[learners].copy()
        diagonal = np.arange(fsrs.N_WEIGHTS)
        hessian[:, diagonal, diagonal] += 2 * prior[:, None] / WEIGHT_SPREAD**2
        return grad, hessian

    def _units(self, learners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The work units of `learners` (ascending), and where each learner's first one is among them."""
        chosen = np.zeros(self.h.n_learners, dtype=bool)
        chosen[learners] = True
        units = np.flatnonzero(chosen[self.unit_learner])
        owners = self.unit_learner[units]
        return units, np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])

    def _kernel_args(self, weights: np.ndarray, units: np.ndarray, card_end: np.ndarray | None = None):
        h = self.h
        card_bounds = (h.card_start,) if card_end is None else (h.card_start, card_end)
        return (h.elapsed_days, h.ratings, self.sample_weight, self.part, *card_bounds, self.unit_card_start,
                self.unit_learner, np.ascontiguousarray(weights, dtype=np.float64), units)

    def loss_sums(self, weights: np.ndarray, learners: np.ndarray | None = None,
                  validation_only: bool = False) -> np.ndarray:
        """(L, 2): each learner's weighted log loss summed per part at `weights` (the validation split's alone, and
        only its cards replayed, with `validation_only`); NaN but for `learners` (default: all)."""
        learners = np.arange(self.h.n_learners) if learners is None else learners
        units, firsts = self._units(learners)
        card_end = self.validation_card_end if validation_only else self.h.card_start[1:]
        sums = np.full((self.h.n_learners, 2), np.nan)
        sums[learners] = _per_learner(self._kernel().unit_losses(*self._kernel_args(weights, units, card_end)), firsts)
        return sums

    def evaluate(self, weights: np.ndarray, learners: np.ndarray):
        """(loss sums (L, 2), gradient sums (L, 2, 21), Fisher matrix per unit of sample weight (L, 21, 21)) at
        `weights`, filled for `learners` only."""
        n_learners = self.h.n_learners
        units, firsts = self._units(learners)
        unit_loss, unit_grad, unit_fisher = self._kernel().loss_grad_fisher(*self._kernel_args(weights, units))
        loss_sums = np.full((n_learners, 2), np.nan)
        loss_sums[learners] = _per_learner(unit_loss, firsts)
        grad_sums = np.zeros((n_learners, 2, fsrs.N_WEIGHTS))
        grad_sums[learners] = _per_learner(unit_grad, firsts)
        fisher = np.zeros((n_learners, fsrs.N_WEIGHTS, fsrs.N_WEIGHTS))
        fisher[learners] = _per_learner(unit_fisher, firsts)
        fisher[learners] /= np.maximum(self.total_weight[learners].sum(axis=1), _EPS)[:, None, None]
        return loss_sums, grad_sums, fisher


def _per_learner(per_unit: np.ndarray, firsts: np.ndarray) -> np.ndarray:
    """Sums over each learner's consecutive work units (a learner's first is at `firsts`)."""
    if len(firsts) == len(per_unit):
        return per_unit
    sums = Objective._kernel().sum_runs(per_unit.reshape(len(per_unit), -1), firsts)
    return sums.reshape((len(firsts), *per_unit.shape[1:]))


def fit_reviews(reviews: pd.DataFrame, start: np.ndarray | None = None,
                config: FitConfig = FitConfig()) -> tuple[pd.DataFrame, FitResult]:
    """Per-learner weights from a review frame (user_id, concept_id, learner_day, rating, reviewed_at).

    Returns one row per learner (user_id, weights as a list, n_reviews, logloss_before/after).
    """
    h = card_histories(in_time_order(reviews))
    result = fit_histories(h, start=start, config=config)
    table = pd.DataFrame({
        "user_id": h.learner_ids,
        "weights": [list(map(float, w)) for w in result.weights],
        "n_reviews": result.n_reviews,
        "logloss_before": result.logloss_before,
        "logloss_after": result.logloss_after,
    })
    return table, result


def in_time_order(reviews: pd.DataFrame) -> pd.DataFrame:
    return reviews if reviews["reviewed_at"].is_monotonic_increasing else reviews.sort_values("reviewed_at",
                                                                                              kind="stable")


def fit_pooled(reviews: pd.DataFrame, config: FitConfig = FitConfig()) -> FitResult:
    """One weight vector for everyone: every card replayed as if one learner owned them all."""
    pooled = reviews.assign(user_id=0,
                            concept_id=pd.factorize(pd.MultiIndex.from_frame(reviews[["user_id", "concept_id"]]))[0])
    return fit_reviews(pooled, config=config)[1]
