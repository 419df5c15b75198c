"""Neural collaborative filtering (NeuMF: GMF + MLP, He et al. 2017) for implicit feedback.

Interactions are (user, item) pairs, each a positive; negatives are sampled from items the user
never touched. Evaluation is the paper's leave-one-out protocol: each user's latest item is held
out and ranked among 99 sampled items the user never interacted with (HR@10, NDCG@10).
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import re
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from learning_pipelines.domain.ncf_config import MIN_POSITIVES, NcfConfig  # noqa: F401  (part of this module's API)

@dataclasses.dataclass(frozen=True)
class LeaveOneOut:
    train: pd.DataFrame  # user, item (codes), one row per distinct pair
    test_item: np.ndarray  # (n_users,) held-out item per user code
    candidates: np.ndarray  # (n_users, 100): held-out item first, then 99 unseen items
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


def leave_one_out(interactions: pd.DataFrame, n_candidates: int = 100, seed: int = 7) -> LeaveOneOut:
    """interactions: user, item, time. Users and items are re-coded 0..n-1 (see `codes`)."""
    frame = interactions.assign(user=pd.factorize(interactions["user"], sort=True)[0],
                                item=pd.factorize(interactions["item"], sort=True)[0])
    frame = frame.sort_values(["user", "time", "item"], kind="stable")
    latest = frame.groupby("user").tail(1)
    train = frame.drop(latest.index)[["user", "item"]].drop_duplicates()
    n_users, n_items = int(frame["user"].max()) + 1, int(frame["item"].max()) + 1
    rng = np.random.default_rng(seed)
    seen = frame.groupby("user")["item"].agg(set)
    candidates = np.empty((n_users, n_candidates), dtype=np.int64)
    test_item = latest.set_index("user")["item"].reindex(range(n_users)).to_numpy()
    for user in range(n_users):
        pool = np.setdiff1d(np.arange(n_items), np.fromiter(seen[user], dtype=np.int64), assume_unique=True)
        if not len(pool):  # the user saw every item: rank against the others anyway
            pool = np.setdiff1d(np.arange(n_items), [test_item[user]])
        candidates[user, 0] = test_item[user]
        candidates[user, 1:] = rng.choice(pool, size=n_candidates - 1, replace=len(pool) < n_candidates - 1)
    return LeaveOneOut(train.reset_index(drop=True), test_item, candidates, n_users, n_items)


def hit_rate_and_ndcg(scores: np.ndarray, k: int = 10) -> tuple[float, float]:
    """scores: (n_users, n_candidates), the held-out item in column 0."""
    rank = (scores[:, 1:] > scores[:, :1]).sum(axis=1)  # items ranked above the held-out one
    hits = rank < k
    return float(hits.mean()), float(np.where(hits, 1.0 / np.log2(rank + 2), 0.0).mean())


def popularity_scores(split: LeaveOneOut) -> np.ndarray:
    counts = np.bincount(split.train["item"], minlength=split.n_items).astype(float)
    return counts[split.candidates]


def train_neumf(train: pd.DataFrame, n_users: int, n_items: int, config: NcfConfig = NcfConfig(),
                on_epoch=None) -> NeuMF:
    """Binary cross-entropy on positives and freshly sampled negatives every epoch; deterministic per seed."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = NeuMF(n_users, n_items, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    users = train["user"].to_numpy(np.int64)
    items = train["item"].to_numpy(np.int64)
    positive_keys = np.unique(users * n_items + items)
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(config.epochs):
        negative_users = np.repeat(users, config.negatives_per_positive)
        negative_items = rng.integers(0, n_items, size=len(negative_users))
        # Resample the few negatives that hit a positive (cheap: they are rare).
        clash = np.isin(negative_users * n_items + negative_items, positive_keys)
        while clash.any():
            negative_items[clash] = rng.integers(0, n_items, size=int(clash.sum()))
            clash = np.isin(negative_users * n_items + negative_items, positive_keys)
        all_users = torch.from_numpy(np.concatenate([users, negative_users]))
        all_items = torch.from_numpy(np.concatenate([items, negative_items]))
        labels = torch.cat([torch.ones(len(users)), torch.zeros(len(negative_users))])
        order = torch.from_numpy(rng.permutation(len(labels)))
        model.train()
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(all_users[batch], all_items[batch]), labels[batch])
            loss.backward()
            optimizer.step()
        if on_epoch is not None:
            on_epoch(epoch, model)
    return model


def score_candidates(model: NeuMF, candidates: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        users = torch.arange(len(candidates)).repeat_interleave(candidates.shape[1])
        return model(users, torch.from_numpy(candidates.reshape(-1))).reshape(candidates.shape).numpy()


@dataclasses.dataclass(frozen=True)
class NcfScores:
    """Leave-one-out scores of one training run, beside the popularity baseline's."""
    hr_at_10: float
    ndcg_at_10: float
    popularity_hr_at_10: float
    popularity_ndcg_at_10: float
    train_seconds: float
    n_users: int
    n_items: int


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


def fit_and_evaluate(interactions: pd.DataFrame, config: NcfConfig = NcfConfig()) -> TrainedNcf:
    """Train on everything but each user's latest item and score the protocol: the model with the ids
    its codes stand for, and its scores beside popularity's."""
    split = leave_one_out(interactions, seed=config.seed)
    started = time.perf_counter()
    model = train_neumf(split.train, split.n_users, split.n_items, config)
    train_seconds = time.perf_counter() - started
    hr, ndcg = hit_rate_and_ndcg(score_candidates(model, split.candidates))
    pop_hr, pop_ndcg = hit_rate_and_ndcg(popularity_scores(split))
    checkpoint = NcfCheckpoint(model, config, np.sort(interactions["user"].unique()),
                               np.sort(interactions["item"].unique()))
    return TrainedNcf(checkpoint, NcfScores(hr, ndcg, pop_hr, pop_ndcg, round(train_seconds, 2), split.n_users,
                                            split.n_items))


def evaluate_neumf(interactions: pd.DataFrame, config: NcfConfig = NcfConfig()) -> dict:
    """The scores of `fit_and_evaluate` as one JSON-able dict."""
    return dataclasses.asdict(fit_and_evaluate(interactions, config).scores)
