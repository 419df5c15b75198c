"""The compiled kernel's loss, gradient and Fisher matrix against the numpy replay (fsrs_replay),
differentiated by central finite differences weight by weight."""

import numpy as np

from learning_pipelines.domain import fsrs, fsrs_kernel
from learning_pipelines.domain.fsrs_optimizer import card_histories
from learning_pipelines.domain.fsrs_replay import replay
from learning_pipelines.domain.review_sequences import build_sequences
from tests.support.fsrs_data import real_reviews


def test_loss_gradient_and_fisher_match_finite_differences(anki_csv):
    reviews = real_reviews(anki_csv)
    reviews = reviews.loc[reviews["concept_id"].isin(reviews["concept_id"].unique()[:300])]
    seqs = build_sequences(reviews)
    rng = np.random.default_rng(3)
    weights = fsrs.clip_weights(fsrs.DEFAULT_WEIGHTS * np.exp(rng.normal(0.0, 0.3, fsrs.N_WEIGHTS)))
    # Keep every weight off its bounds so a central difference stays inside them.
    weights = np.clip(weights, fsrs.WEIGHT_BOUNDS[:, 0] + 1e-3, fsrs.WEIGHT_BOUNDS[:, 1] - 1e-3)
    steps, cards = seqs.later_reviews()
    scored = seqs.elapsed_days[steps, cards] > 0
    sample_weight = np.zeros(seqs.ratings.shape)
    sample_weight[steps[scored], cards[scored]] = rng.uniform(0.25, 1.0, scored.sum())
    labels = (seqs.ratings[steps, cards] > fsrs.AGAIN)[scored].astype(float)

    def predict(w):  # predictions of the scored reviews, in later_reviews order
        return replay(seqs.elapsed_days.astype(float), seqs.ratings, seqs.active_counts,
                      np.tile(w, (seqs.n_cards, 1)))[0][scored]

    p = np.clip(predict(weights), fsrs_kernel.EPS, 1 - fsrs_kernel.EPS)
    sw = sample_weight[steps[scored], cards[scored]]
    numeric_jacobian = np.empty((len(p), fsrs.N_WEIGHTS))
    for i in range(fsrs.N_WEIGHTS):
        h = 1e-6 * max(1.0, abs(weights[i]))
        up, down = weights.copy(), weights.copy()
        up[i] += h
        down[i] -= h
        numeric_jacobian[:, i] = (predict(up) - predict(down)) / (2 * h)

    # The same sample weights, moved to the kernel's layout (a card's reviews consecutive) by frame row.
    histories = card_histories(reviews.reset_index(drop=True))
    weight_of_row = np.zeros(len(reviews))
    weight_of_row[seqs.row_of[steps, cards]] = sample_weight[steps, cards]
    unit_card_start, unit_learner = fsrs_kernel.work_units(histories.card_start, histories.card_learner)
    # Every third scored review in the second part (a validation split): loss and gradient are summed per part.
    in_second = np.zeros(len(reviews), dtype=bool)
    in_second[seqs.row_of[steps[scored], cards[scored]][::3]] = True
    part = in_second[histories.row].astype(np.int8)
    args = (histories.elapsed_days, histories.ratings, weight_of_row[histories.row], part, histories.card_start,
            unit_card_start, unit_learner, weights[None, :], np.arange(len(unit_learner)))
    unit_loss, unit_grad, unit_fisher = fsrs_kernel.loss_grad_fisher(*args, len(reviews))  # every review's term
    loss, grad, fisher = unit_loss.sum(axis=0), unit_grad.sum(axis=0), unit_fisher.sum(axis=0)

    review_loss = -sw * (labels * np.log(p) + (1 - labels) * np.log(1 - p))
    second = in_second[seqs.row_of[steps[scored], cards[scored]]]
    np.testing.assert_allclose(loss, [review_loss[~second].sum(), review_loss[second].sum()], rtol=1e-10)
    card_end = histories.card_start[1:]
    loss_only = fsrs_kernel.unit_losses(*args[:5], card_end, *args[5:])
    np.testing.assert_allclose(loss_only.sum(axis=0), loss, rtol=1e-10)
    # A card replayed only up to its last second-part review gives that part's whole loss.
    counted = np.flatnonzero((args[2] > 0) & (part == 1))
    up_to_second = histories.card_start[:-1].copy()
    up_to_second[histories.card_of_review()[counted]] = counted + 1
    shortened = fsrs_kernel.unit_losses(*args[:5], up_to_second, *args[5:])
    np.testing.assert_allclose(shortened[:, 1].sum(), loss[1], rtol=1e-10)
    assert (up_to_second <= card_end).all() and (up_to_second < card_end).any()
    slope = sw * (p - labels) / (p * (1 - p))
    np.testing.assert_allclose(grad[0], slope[~second] @ numeric_jacobian[~second], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad[1], slope[second] @ numeric_jacobian[second], rtol=1e-4, atol=1e-6)
    # The Fisher matrix reads no outcome: it is summed over both parts.
    expected_fisher = (numeric_jacobian * (sw / (p * (1 - p)))[:, None]).T @ numeric_jacobian
    np.testing.assert_allclose(fisher, expected_fisher, rtol=1e-4, atol=1e-6 * np.abs(expected_fisher).max())
    # From every k-th scored review only, the Fisher matrix is an estimate: close; the gradient stays exact.
    sampled = fsrs_kernel.loss_grad_fisher(*args, 100)
    np.testing.assert_allclose(sampled[1].sum(axis=0), grad, rtol=1e-12)
    diagonal = np.diag(expected_fisher)
    assert np.abs(np.diag(sampled[2].sum(axis=0)) - diagonal).max() <= 0.2 * diagonal.max()


def test_work_units_cut_large_learners_and_keep_small_ones_whole():
    reviews_per_card = np.r_[np.full(10, 300), np.full(3, 5)]  # learner 0: 3,000 reviews; learner 1: 15
    card_start = np.r_[0, np.cumsum(reviews_per_card)]
    card_learner = np.r_[np.zeros(10, dtype=int), np.ones(3, dtype=int)]
    unit_card_start, unit_learner = fsrs_kernel.work_units(card_start, card_learner)
    assert unit_learner.tolist() == [0, 0, 0, 1]
    assert unit_card_start[0] == 0 and unit_card_start[-1] == 13 and unit_card_start[-2] == 10
    assert np.all(np.diff(unit_card_start) > 0)
