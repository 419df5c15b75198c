"""NeuMF with a history: a learner is also the resources they used last, in time order."""

import dataclasses

import numpy as np
import pandas as pd
import torch

from learning_pipelines.domain.metrics import hit_rate_and_ndcg
from learning_pipelines.domain.ncf_checkpoint import NcfCheckpoint
from learning_pipelines.domain.ncf_config import NcfConfig
from learning_pipelines.domain.ncf_fit import fit_and_evaluate
from learning_pipelines.domain.ncf_history import latest_items, preceding_items
from learning_pipelines.domain.ncf_protocol import leave_one_out
from learning_pipelines.domain.ncf_training import score_candidates

PAD = 99


def test_each_interaction_sees_the_same_users_items_just_before_it():
    users = np.array([0, 0, 0, 1, 1])
    items = np.array([7, 8, 9, 3, 4])
    assert preceding_items(users, items, 2, PAD).tolist() == [[PAD, PAD], [PAD, 7], [7, 8], [PAD, PAD], [PAD, 3]]
    assert latest_items(users, items, 3, 2, PAD).tolist() == [[8, 9], [3, 4], [PAD, PAD]]


def _walks(n_users: int = 300, n_items: int = 60, steps: int = 8, seed: int = 0) -> pd.DataFrame:
    """Every user walks the same hidden cycle over the items from a random start: what comes next depends on
    where they are, not on which items they have seen."""
    rng = np.random.default_rng(seed)
    cycle = rng.permutation(n_items)
    starts = rng.integers(0, n_items, size=n_users)
    return pd.DataFrame({"user": np.repeat(np.arange(n_users), steps),
                         "item": cycle[(starts[:, None] + np.arange(steps)) % n_items].reshape(-1),
                         "time": np.tile(np.arange(steps), n_users)})


HISTORY = NcfConfig(gmf_factors=16, mlp_layers=(32, 16), negatives_per_positive=4, epochs=12, batch_size=256,
                    learning_rate=0.01, history_length=3)


def test_a_history_model_learns_what_comes_next_where_plain_neumf_cannot():
    interactions = _walks()
    assert interactions["item"].nunique() == 60
    with_history = fit_and_evaluate(interactions, HISTORY).candidate_scores
    plain = fit_and_evaluate(interactions, dataclasses.replace(HISTORY, history_length=0)).candidate_scores
    # Plain NeuMF learns which stretch of the cycle a user covers, so both items beside it rank high; only the
    # history says at which end the user is now: ranked first (HR@1).
    assert hit_rate_and_ndcg(with_history, k=1)[0] > 0.9
    assert hit_rate_and_ndcg(plain, k=1)[0] < 0.7


def test_evaluation_scores_follow_the_training_data_and_serving_follows_the_latest_items():
    interactions = _walks(n_users=40, seed=1)
    assert interactions["item"].nunique() == 60
    trained = fit_and_evaluate(interactions, dataclasses.replace(HISTORY, epochs=2))
    split = leave_one_out(interactions)
    model = trained.checkpoint.model
    serving_history = model.recent_items.clone()
    # The held-out item is each user's last: served after it, scored before it.
    assert (serving_history[:, -1].numpy() == split.test_item).all()
    model.recent_items.copy_(torch.from_numpy(latest_items(split.train["user"].to_numpy(),
                                                           split.train["item"].to_numpy(), split.n_users, 3, 60)))
    assert np.array_equal(score_candidates(model, split), trained.candidate_scores), "no held-out item in a history"


def test_a_checkpoint_remembers_what_a_learner_used_since_training():
    walks = _walks(n_users=40, seed=2)
    assert walks["item"].nunique() == 60
    # Ids are not codes: learner 1000 is code 0, resource 505 is code 5.
    interactions = walks.assign(user=walks["user"] + 1000, item=walks["item"] + 500)
    checkpoint = fit_and_evaluate(interactions, dataclasses.replace(HISTORY, epochs=1)).checkpoint
    learners, resources = np.array([1000, 1001]), np.arange(500, 560)
    before = checkpoint.score(learners, resources).copy()
    loaded = NcfCheckpoint.from_bytes(checkpoint.to_bytes())
    assert np.allclose(loaded.score(learners, resources), before), "histories travel with the model"
    later = pd.DataFrame({"user": [1000, 1000, 1000, 12345], "item": [505, 506, 999, 505],
                          "time": [100, 101, 102, 100]})
    loaded.remember_latest(later)  # an unknown resource or learner is left out
    assert loaded.model.recent_items[0].tolist()[-2:] == [5, 6]
    assert torch.equal(loaded.model.recent_items[1], checkpoint.model.recent_items[1]), "others keep theirs"
    after = loaded.score(learners, resources)
    assert not np.allclose(after[0], before[0]) and np.allclose(after[1], before[1])
