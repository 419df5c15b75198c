"""Training NeuMF on implicit feedback (binary cross-entropy on positives and sampled negatives), and scoring a
trained model on the protocol's candidates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from learning_pipelines.domain.ncf_config import NcfConfig
from learning_pipelines.domain.ncf_history import latest_items, preceding_items
from learning_pipelines.domain.ncf_model import NeuMF
from learning_pipelines.domain.ncf_protocol import LeaveOneOut
from learning_pipelines.domain.ncf_torch import nn, torch


class NeumfTraining:
    """One NeuMF trained an epoch at a time (binary cross-entropy on positives and negatives sampled afresh
    each epoch; deterministic per seed), so a search can resume a short run instead of restarting it. With
    `config.round_positives` an epoch is the next that many positives of a shuffled pass, and their negatives."""

    def __init__(self, train: pd.DataFrame, n_users: int, n_items: int, config: NcfConfig):
        torch.manual_seed(config.seed)
        self.config, self.n_items = config, n_items
        self.rng = np.random.default_rng(config.seed)
        self.model = NeuMF(n_users, n_items, config)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate,
                                          weight_decay=config.weight_decay)
        if config.history_length:  # histories follow each user's interactions in time
            train = train.sort_values(["user", "time"] if "time" in train else ["user"], kind="stable")
        self.users = train["user"].to_numpy(np.int64)
        self.items = train["item"].to_numpy(np.int64)
        self.histories = None
        if config.history_length:
            self.histories = preceding_items(self.users, self.items, config.history_length, n_items)
            with torch.no_grad():
                self.model.recent_items.copy_(torch.from_numpy(
                    latest_items(self.users, self.items, n_users, config.history_length, n_items)))
        self.positive_keys = np.unique(self.users * n_items + self.items)
        self.pass_order = np.empty(0, dtype=np.int64)  # positives of the current pass not trained on yet
        self.epochs_done = 0
        self.examples_seen = 0  # positives and negatives, all epochs: the cost a search budget counts

    def _is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        found = np.searchsorted(self.positive_keys, keys).clip(max=len(self.positive_keys) - 1)
        return self.positive_keys[found] == keys

    def _negatives(self, users: np.ndarray) -> np.ndarray:
        """`negatives_per_positive` items per user, one after another, none of them an item the user touched."""
        negative_users = np.repeat(users, self.config.negatives_per_positive)
        negative_items = self.rng.integers(0, self.n_items, size=len(negative_users))
        # Resample the few negatives that hit a positive (cheap: they are rare).
        clash = np.flatnonzero(self._is_positive(negative_users, negative_items))
        while len(clash):
            negative_items[clash] = self.rng.integers(0, self.n_items, size=len(clash))
            clash = clash[self._is_positive(negative_users[clash], negative_items[clash])]
        return negative_items

    def _next_positives(self) -> np.ndarray:
        size = min(self.config.round_positives or len(self.users), len(self.users))
        if len(self.pass_order) < size:
            self.pass_order = np.concatenate([self.pass_order, self.rng.permutation(len(self.users))])
        taken, self.pass_order = self.pass_order[:size], self.pass_order[size:]
        return taken

    def epoch(self) -> None:
        """A step trains about `batch_size` examples: positives in shuffled order, each with its negatives and
        scored with its history, so a user's vectors are computed once for the positive and its negatives."""
        positives = self._next_positives()
        users, items = self.users[positives], self.items[positives]
        negatives = self.config.negatives_per_positive
        negative_items = self._negatives(users)
        rows = torch.from_numpy(np.concatenate([items[:, None], negative_items.reshape(-1, negatives)], axis=1))
        users = torch.from_numpy(users)
        histories = None if self.histories is None else torch.from_numpy(self.histories[positives])
        labels = torch.zeros(1 + negatives)
        labels[0] = 1.0
        loss_fn = nn.BCEWithLogitsLoss()
        self.model.train()
        step = max(1, self.config.batch_size // (1 + negatives))
        for start in range(0, len(users), step):
            stop = start + step
            self.optimizer.zero_grad()
            logits = self.model.score_rows(users[start:stop], rows[start:stop],
                                           None if histories is None else histories[start:stop])
            loss_fn(logits, labels.expand_as(logits)).backward()
            self.optimizer.step()
        self.epochs_done += 1
        self.examples_seen += rows.numel()


def train_neumf(train: pd.DataFrame, n_users: int, n_items: int, config: NcfConfig = NcfConfig(),
                on_epoch=None) -> NeuMF:
    """`config.epochs` epochs of `NeumfTraining`."""
    training = NeumfTraining(train, n_users, n_items, config)
    for epoch in range(config.epochs):
        training.epoch()
        if on_epoch is not None:
            on_epoch(epoch, training.model)
    return training.model


def score_candidates(model: NeuMF, split: LeaveOneOut) -> np.ndarray:
    """(n_evaluated, n_candidates) logits of each evaluated user's candidates."""
    model.eval()
    with torch.no_grad():
        return model.score_rows(torch.from_numpy(split.users), torch.from_numpy(split.candidates)).numpy()
