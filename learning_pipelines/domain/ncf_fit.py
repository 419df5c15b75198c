"""NeuMF fitted on interactions and scored under the protocol, beside popularity: what the ncf_model asset stores
and `learning-pipelines ncf evaluate` prints."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from learning_pipelines.domain.metrics import hit_rate_and_ndcg
from learning_pipelines.domain.ncf_checkpoint import NcfCheckpoint
from learning_pipelines.domain.ncf_config import NcfConfig
from learning_pipelines.domain.ncf_protocol import leave_one_out, popularity_scores
from learning_pipelines.domain.ncf_results import ConfigChoice, NcfScores
from learning_pipelines.domain.ncf_search import choose_config, progress
from learning_pipelines.domain.ncf_training import NeumfTraining, score_candidates


@dataclasses.dataclass(frozen=True)
class TrainedNcf:
    checkpoint: NcfCheckpoint
    scores: NcfScores
    choice: ConfigChoice | None = None  # how the configuration was chosen, when it was
    candidate_scores: np.ndarray | None = None  # the evaluated users' candidates as scored (`score_candidates`)


def fit_and_evaluate(interactions: pd.DataFrame, config: NcfConfig | None = None, seed: int = 7) -> TrainedNcf:
    """Train on everything but each user's latest item and score the protocol: the model with the ids its codes
    stand for, and its scores beside popularity's. Without `config`, the configuration and epoch count are chosen
    on validation inside the training data (`ncf_search.choose_config`), then trained afresh on all of it."""
    split = leave_one_out(interactions, seed=config.seed if config else seed)
    choice = None if config else choose_config(split, seed=seed)
    config = config or choice.config
    started = time.perf_counter()
    training = NeumfTraining(split.train, split.n_users, split.n_items, config)
    for epoch in range(1, config.epochs + 1):
        training.epoch()
        progress.info("training the chosen configuration on all but each user's latest item: epoch %d of %d", epoch,
                      config.epochs)
    train_seconds = time.perf_counter() - started
    candidate_scores = score_candidates(training.model, split)
    hr, ndcg = hit_rate_and_ndcg(candidate_scores)
    pop_hr, pop_ndcg = hit_rate_and_ndcg(popularity_scores(split))
    checkpoint = NcfCheckpoint(training.model, config, np.sort(interactions["user"].unique()),
                               np.sort(interactions["item"].unique()))
    checkpoint.remember_latest(interactions)  # scored: the held-out items may now count as what users did last
    search_seconds = choice.search_seconds if choice else 0.0
    search_cost = choice.search_examples / max(training.examples_seen, 1) if choice else 0.0
    return TrainedNcf(checkpoint, NcfScores(hr, ndcg, pop_hr, pop_ndcg, round(train_seconds, 2), split.n_users,
                                            split.n_items, search_seconds, round(search_cost, 3)), choice,
                      candidate_scores)


def evaluate_neumf(interactions: pd.DataFrame, config: NcfConfig | None = None, seed: int = 7) -> dict:
    """The scores of `fit_and_evaluate` and the configuration it trained, as one JSON-able dict."""
    trained = fit_and_evaluate(interactions, config, seed=seed)
    return dataclasses.asdict(trained.scores) | {"config": dataclasses.asdict(trained.checkpoint.config)}
