"""The compiled kernel's loss, gradient and Fisher matrix against the numpy replay (fsrs_replay),
differentiated by central finite differences weight by weight."""

import numpy as np

from learning_pipelines.domain import fsrs, fsrs_kernel
from learning_pipelines.domain.fsrs_replay import replay
from learning_pipelines.domain.review_sequences import build_sequences
from tests.fsrs_data import real_reviews


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

    loss, grad, fisher = fsrs_kernel.loss_grad_fisher(
        seqs.elapsed_days, seqs.ratings, seqs.lengths.astype(np.int64), sample_weight, np.array([0, seqs.n_cards]),
        np.arange(seqs.n_cards), weights[None, :], np.array([0]))

    np.testing.assert_allclose(loss[0], -(sw * (labels * np.log(p) + (1 - labels) * np.log(1 - p))).sum(), rtol=1e-10)
    slope = sw * (p - labels) / (p * (1 - p))
    np.testing.assert_allclose(grad[0], slope @ numeric_jacobian, rtol=1e-4, atol=1e-6)
    expected_fisher = (numeric_jacobian * (sw / (p * (1 - p)))[:, None]).T @ numeric_jacobian
    np.testing.assert_allclose(fisher[0], expected_fisher, rtol=1e-4, atol=1e-6 * np.abs(expected_fisher).max())
