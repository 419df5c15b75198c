"""Neural collaborative filtering (NeuMF: GMF + MLP, He et al. 2017) for implicit feedback.

Interactions are (user, item) pairs, each a positive; negatives are sampled from items the user
never touched. Evaluation is the paper's leave-one-out protocol: each user's latest item is held
out and ranked among 99 sampled items the user never interacted with (HR@10, NDCG@10).
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import re
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

# Threads that finish their share of a parallel loop sleep instead of spinning (fsrs_kernel does the same for
# numba): on 2 cores busy with other work, ncf_model on the demo's 150 learners took 29.6 s of CPU with spinning
# threads, 5.3 s without, same scores. Read when torch loads OpenMP: a value already set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
from torch import nn  # noqa: E402

from learning_pipelines.domain.ncf_config import MIN_POSITIVES, NcfConfig  # noqa: F401  (part of this module's API)

if TYPE_CHECKING:
    from learning_pipelines.domain.ncf_search import ConfigChoice


@dataclasses.dataclass(frozen=True)
class LeaveOneOut:
    train: pd.DataFrame  # user, item (codes), time of the pair's latest interaction: one row per distinct pair
    users: np.ndarray  # (n_evaluated,) user codes whose held-out item is ranked
    test_item: np.ndarray  # (n_evaluated,) each evaluated user's held-out item
    candidates: np.ndarray  # (n_evaluated, n_candidates): held-out item first, then items the user never touched
    n_users: int
    n_items: int


class NeuMF(nn.Module):
    def __init__(self, n_users: int, n_items: int, config: NcfConfig):
        super().__init__()
        half = config.mlp_layers[0] // 2
        self.gmf_user = nn.Embedding(n_users, config.gmf_factors)
        self.gmf_item = nn.Embedding(n_items, config.gmf_factors)
        self.mlp_user = nn.Embedding(n_users, half)
        self.mlp_item = nn.Embedding(n_items, half)
        layers = []
        for width_in, width_out in zip(config.mlp_layers[:-1], config.mlp_layers[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.output = nn.Linear(config.gmf_factors + config.mlp_layers[-1], 1)
        for embedding in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(embedding.weight, std=0.01)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        gmf = self.gmf_user(users) * self.gmf_item(items)
        mlp = self.mlp(torch.cat([self.mlp_user(users), self.mlp_item(items)], dim=1))
        return self.output(torch.cat([gmf, mlp], dim=1)).squeeze(1)


def _hold_out_latest(frame: pd.DataFrame, n_users: int, n_items: int, users: np.ndarray, n_candidates: int,
                     seed: int) -> LeaveOneOut:
    """frame: user, item, time (codes), sorted by user, time, item. Each of `users`' latest item is held out,
    with every other interaction of that pair; the rest is the training data."""
    latest = frame.loc[frame["user"].isin(users)].groupby("user").tail(1)
    pair_keys = frame["user"].to_numpy(np.int64) * n_items + frame["item"].to_numpy(np.int64)
    kept = frame.loc[~np.isin(pair_keys, latest["user"].to_numpy(np.int64) * n_items + latest["item"].to_numpy())]
    train = kept.drop_duplicates(["user", "item"], keep="last").reset_index(drop=True)
    test_item = latest.set_index("user")["item"].reindex(users).to_numpy()
    seen = frame.groupby("user")["item"].agg(set)
    rng = np.random.default_rng(seed)
    candidates = np.empty((len(users), n_candidates), dtype=np.int64)
    for row, user in enumerate(users):
        pool = np.setdiff1d(np.arange(n_items), np.fromiter(seen[user], dtype=np.int64), assume_unique=True)
        if not len(pool):  # the user saw every item: rank against the others anyway
            pool = np.setdiff1d(np.arange(n_items), [test_item[row]])
        candidates[row, 0] = test_item[row]
        candidates[row, 1:] = rng.choice(pool, size=n_candidates - 1, replace=len(pool) < n_candidates - 1)
    return LeaveOneOut(train, np.asarray(users, dtype=np.int64), test_item, candidates, n_users, n_items)


def leave_one_out(interactions: pd.DataFrame, n_candidates: int = 100, seed: int = 7) -> LeaveOneOut:
    """interactions: user, item, time. Users and items are re-coded 0..n-1 (see `codes`). Every user's latest
    item is held out (no earlier interaction with it stays in training) and ranked among items they never touched."""
    frame = interactions.assign(user=pd.factorize(interactions["user"], sort=True)[0],
                                item=pd.factorize(interactions["item"], sort=True)[0])
    frame = frame.sort_values(["user", "time", "item"], kind="stable")[["user", "item", "time"]]
    n_users, n_items = int(frame["user"].max()) + 1, int(frame["item"].max()) + 1
    return _hold_out_latest(frame, n_users, n_items, np.arange(n_users), n_candidates, seed)


def validation_split(split: LeaveOneOut, n_candidates: int = 100, seed: int = 7) -> LeaveOneOut:
    """The same protocol inside the training data: each user's latest training item (their second-latest
    interaction) held out and ranked among items absent from their training data, for users with at least two
    training items. It reads `split.train` only, so the evaluation items never shape a choice made on it."""
    frame = split.train.sort_values(["user", "time", "item"], kind="stable")
    counts = np.bincount(frame["user"], minlength=split.n_users)
    return _hold_out_latest(frame, split.n_users, split.n_items, np.flatnonzero(counts >= 2), n_candidates, seed + 1)


def held_out_rank(scores: np.ndarray) -> np.ndarray:
    """scores: (n_users, n_candidates), the held-out item in column 0. Per user, the items ranked above it."""
    return (scores[:, 1:] > scores[:, :1]).sum(axis=1)


def hit_rate_and_ndcg(scores: np.ndarray, k: int = 10) -> tuple[float, float]:
    """scores: (n_users, n_candidates), the held-out item in column 0."""
    rank = held_out_rank(scores)
    hits = rank < k
    return float(hits.mean()), float(np.where(hits, 1.0 / np.log2(rank + 2), 0.0).mean())


def hit_rate_gap(scores: np.ndarray, baseline_scores: np.ndarray, k: int = 10) -> tuple[float, float]:
    """HR@k of `scores` minus the baseline's, both ranking the same users' held-out items, and the half-width of
    that gap's 95 % interval (normal approximation over the per-user differences in hits): with a thousand users
    a gap of a point or two is within it, so "above" means little unless the gap is wider."""
    difference = (held_out_rank(scores) < k).astype(float) - (held_out_rank(baseline_scores) < k)
    return float(difference.mean()), float(1.96 * difference.std(ddof=1) / np.sqrt(len(difference)))


def popularity_scores(split: LeaveOneOut) -> np.ndarray:
    counts = np.bincount(split.train["item"], minlength=split.n_items).astype(float)
    return counts[split.candidates]


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
        self.users = train["user"].to_numpy(np.int64)
        self.items = train["item"].to_numpy(np.int64)
        self.positive_keys = np.unique(self.users * n_items + self.items)
        self.pass_order = np.empty(0, dtype=np.int64)  # positives of the current pass not trained on yet
        self.epochs_done = 0
        self.examples_seen = 0  # positives and negatives, all epochs: the cost a search budget counts

    def _is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        found = np.searchsorted(self.positive_keys, keys).clip(max=len(self.positive_keys) - 1)
        return self.positive_keys[found] == keys

    def _negatives(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        negative_users = np.repeat(users, self.config.negatives_per_positive)
        negative_items = self.rng.integers(0, self.n_items, size=len(negative_users))
        # Resample the few negatives that hit a positive (cheap: they are rare).
        clash = np.flatnonzero(self._is_positive(negative_users, negative_items))
        while len(clash):
            negative_items[clash] = self.rng.integers(0, self.n_items, size=len(clash))
            clash = clash[self._is_positive(negative_users[clash], negative_items[clash])]
        return negative_users, negative_items

    def _next_positives(self) -> np.ndarray:
        size = min(self.config.round_positives or len(self.users), len(self.users))
        if len(self.pass_order) < size:
            self.pass_order = np.concatenate([self.pass_order, self.rng.permutation(len(self.users))])
        taken, self.pass_order = self.pass_order[:size], self.pass_order[size:]
        return taken

    def epoch(self) -> None:
        positives = self._next_positives()
        users, items = self.users[positives], self.items[positives]
        negative_users, negative_items = self._negatives(users)
        order = torch.from_numpy(self.rng.permutation(len(users) + len(negative_users)))
        all_users = torch.from_numpy(np.concatenate([users, negative_users]))[order]
        all_items = torch.from_numpy(np.concatenate([items, negative_items]))[order]
        labels = torch.cat([torch.ones(len(users)), torch.zeros(len(negative_users))])[order]
        loss_fn = nn.BCEWithLogitsLoss()
        self.model.train()
        for start in range(0, len(labels), self.config.batch_size):
            stop = start + self.config.batch_size
            self.optimizer.zero_grad()
            loss_fn(self.model(all_users[start:stop], all_items[start:stop]), labels[start:stop]).backward()
            self.optimizer.step()
        self.epochs_done += 1
        self.examples_seen += len(labels)


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
        users = torch.from_numpy(split.users).repeat_interleave(split.candidates.shape[1])
        scores = model(users, torch.from_numpy(split.candidates.reshape(-1)))
    return scores.reshape(split.candidates.shape).numpy()


@dataclasses.dataclass(frozen=True)
class NcfScores:
    """Leave-one-out scores of one training run, beside the popularity baseline's."""
    hr_at_10: float
    ndcg_at_10: float
    popularity_hr_at_10: float
    popularity_ndcg_at_10: float
    train_seconds: float  # the final training's
    n_users: int
    n_items: int
    search_seconds: float = 0.0  # choosing the configuration on validation, when it was chosen
    search_cost: float = 0.0  # the choice's training examples per example of the final training


@dataclasses.dataclass(frozen=True)
class NcfEmbeddings:
    """Each id's learned vector: GMF factors then MLP embedding (gmf_factors + mlp_layers[0] // 2 floats)."""
    user_ids: np.ndarray
    user_vectors: np.ndarray  # (len(user_ids), width)
    resource_ids: np.ndarray
    resource_vectors: np.ndarray  # (len(resource_ids), width)


class CheckpointRefused(ValueError):
    """Checkpoint bytes that are not tensors, lists and numbers only: refused, never unpickled."""


@dataclasses.dataclass(frozen=True)
class NcfCheckpoint:
    """A trained NeuMF and the ids its codes stand for: user code i is user_ids[i], item code j is
    resource_ids[j] (both sorted, as `leave_one_out` codes them)."""
    model: NeuMF
    config: NcfConfig
    user_ids: np.ndarray
    resource_ids: np.ndarray

    def to_bytes(self) -> bytes:
        """Tensors, lists, numbers and strings only: `torch.load(..., weights_only=True)` reads it back."""
        buffer = io.BytesIO()
        torch.save({"state": dict(self.model.state_dict()),
                    "config": dataclasses.asdict(self.config) | {"mlp_layers": list(self.config.mlp_layers)},
                    "user_ids": self.user_ids.tolist(), "resource_ids": self.resource_ids.tolist()}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes) -> NcfCheckpoint:
        """Reads `to_bytes`' output with torch's weights-only unpickler: a payload naming any other object
        (a pickle that would run code) is refused before anything in it runs."""
        try:
            saved = torch.load(io.BytesIO(payload), weights_only=True)
        except pickle.UnpicklingError as error:
            named = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
            raise CheckpointRefused("checkpoint refused: it is not a weights-only checkpoint of tensors, lists and "
                                    "numbers" + (f" (it names {named.group(1)})" if named else "")) from None
        config = NcfConfig(**{**saved["config"], "mlp_layers": tuple(saved["config"]["mlp_layers"])})
        model = NeuMF(len(saved["user_ids"]), len(saved["resource_ids"]), config)
        model.load_state_dict(saved["state"])
        model.eval()
        return cls(model, config, np.array(saved["user_ids"]), np.array(saved["resource_ids"]))

    def knows(self, user_ids: np.ndarray) -> np.ndarray:
        """Per user, whether the model was trained on them."""
        return pd.Index(self.user_ids).get_indexer(user_ids) >= 0

    def score(self, user_ids: np.ndarray, resource_ids: np.ndarray) -> np.ndarray:
        """(len(user_ids), len(resource_ids)) interaction probabilities: NaN rows for users the model never
        saw, 0 for resources it never saw."""
        user_code = pd.Index(self.user_ids).get_indexer(user_ids)
        item_code = pd.Index(self.resource_ids).get_indexer(resource_ids)
        self.model.eval()
        with torch.no_grad():
            users = torch.from_numpy(np.repeat(np.maximum(user_code, 0), len(resource_ids)))
            items = torch.from_numpy(np.tile(np.maximum(item_code, 0), len(user_ids)))
            probabilities = torch.sigmoid(self.model(users, items)).numpy().reshape(len(user_ids), len(resource_ids))
        probabilities[:, item_code < 0] = 0.0
        probabilities[user_code < 0] = np.nan
        return probabilities

    def embeddings(self) -> NcfEmbeddings:
        model = self.model
        with torch.no_grad():
            users = torch.cat([model.gmf_user.weight, model.mlp_user.weight], dim=1).numpy()
            items = torch.cat([model.gmf_item.weight, model.mlp_item.weight], dim=1).numpy()
        return NcfEmbeddings(self.user_ids, users, self.resource_ids, items)


@dataclasses.dataclass(frozen=True)
class TrainedNcf:
    checkpoint: NcfCheckpoint
    scores: NcfScores
    choice: ConfigChoice | None = None  # how the configuration was chosen, when it was


def fit_and_evaluate(interactions: pd.DataFrame, config: NcfConfig | None = None, seed: int = 7) -> TrainedNcf:
    """Train on everything but each user's latest item and score the protocol: the model with the ids its codes
    stand for, and its scores beside popularity's. Without `config`, the configuration and epoch count are chosen
    on validation inside the training data (`ncf_search.choose_config`), then trained afresh on all of it."""
    from learning_pipelines.domain.ncf_search import choose_config  # it builds on this module

    split = leave_one_out(interactions, seed=config.seed if config else seed)
    choice = None if config else choose_config(split, seed=seed)
    config = config or choice.config
    started = time.perf_counter()
    training = NeumfTraining(split.train, split.n_users, split.n_items, config)
    for _ in range(config.epochs):
        training.epoch()
    train_seconds = time.perf_counter() - started
    hr, ndcg = hit_rate_and_ndcg(score_candidates(training.model, split))
    pop_hr, pop_ndcg = hit_rate_and_ndcg(popularity_scores(split))
    checkpoint = NcfCheckpoint(training.model, config, np.sort(interactions["user"].unique()),
                               np.sort(interactions["item"].unique()))
    search_seconds = choice.search_seconds if choice else 0.0
    search_cost = choice.search_examples / max(training.examples_seen, 1) if choice else 0.0
    return TrainedNcf(checkpoint, NcfScores(hr, ndcg, pop_hr, pop_ndcg, round(train_seconds, 2), split.n_users,
                                            split.n_items, search_seconds, round(search_cost, 3)), choice)


def evaluate_neumf(interactions: pd.DataFrame, config: NcfConfig | None = None, seed: int = 7) -> dict:
    """The scores of `fit_and_evaluate` and the configuration it trained, as one JSON-able dict."""
    trained = fit_and_evaluate(interactions, config, seed=seed)
    return dataclasses.asdict(trained.scores) | {"config": dataclasses.asdict(trained.checkpoint.config)}
