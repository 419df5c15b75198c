"""The analytic Jacobian of the replay against central finite differences, weight by weight."""

import numpy as np

from learning_pipelines.domain import fsrs
from learning_pipelines.domain.fsrs_replay import replay
from learning_pipelines.domain.fsrs_sensitivity import replay_with_jacobian
from learning_pipelines.domain.review_sequences import build_sequences
from tests.fsrs_data import real_reviews


def test_jacobian_matches_finite_differences(anki_csv):
    reviews = real_reviews(anki_csv)
    reviews = reviews.loc[reviews["concept_id"].isin(reviews["concept_id"].unique()[:300])]
    seqs = build_sequences(reviews)
    rng = np.random.default_rng(3)
    weights = fsrs.clip_weights(fsrs.DEFAULT_WEIGHTS * np.exp(rng.normal(0.0, 0.3, fsrs.N_WEIGHTS)))
    # Keep every weight off its bounds so a central difference stays inside them.
    weights = np.clip(weights, fsrs.WEIGHT_BOUNDS[:, 0] + 1e-3, fsrs.WEIGHT_BOUNDS[:, 1] - 1e-3)

    def predict(w):
        return replay(seqs.elapsed_days.astype(float), seqs.ratings, seqs.active_counts, np.tile(w, (seqs.n_cards, 1)))[0]

    predicted, jacobian = replay_with_jacobian(seqs.elapsed_days, seqs.ratings, seqs.active_counts,
                                               np.tile(weights, (seqs.n_cards, 1)))
    np.testing.assert_allclose(predicted, predict(weights), rtol=1e-12)
    assert jacobian.shape == (len(predicted), fsrs.N_WEIGHTS)
    for i in range(fsrs.N_WEIGHTS):
        h = 1e-6 * max(1.0, abs(weights[i]))
        up, down = weights.copy(), weights.copy()
        up[i] += h
        down[i] -= h
        numeric = (predict(up) - predict(down)) / (2 * h)
        np.testing.assert_allclose(jacobian[:, i], numeric, rtol=1e-4, atol=1e-7, err_msg=f"weight w{i}")
