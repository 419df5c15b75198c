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
    """NeuMF; with `config.history_length` L, each user's GMF and MLP vectors also add an average of history
    embeddings over the L items they touched last before the one scored, weighted by how recent each is (weights
    learned per position; SVD++/FISM's idea, in time order): learners move through related resources, and the
    latest ones say more about the next than the whole history does. Scoring without an explicit history uses
    `recent_items`: each user's last L items of the training data, or later ones (`NcfCheckpoint.remember_latest`)."""

    def __init__(self, n_users: int, n_items: int, config: NcfConfig):
        super().__init__()
        half = config.mlp_layers[0] // 2
        self.n_items, self.gmf_factors = n_items, config.gmf_factors
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
        self.history = None
        if config.history_length:
            # Code n_items pads a history shorter than L: its row stays zero and is never trained.
            self.history = nn.EmbeddingBag(n_items + 1, config.gmf_factors + half, mode="sum", padding_idx=n_items)
            nn.init.normal_(self.history.weight, std=0.01)
            with torch.no_grad():
                self.history.weight[n_items].zero_()
            self.recency = nn.Parameter(torch.ones(config.history_length))
            self.register_buffer("recent_items", torch.full((n_users, config.history_length), n_items))

    def user_vectors(self, users: torch.Tensor,
                     history: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(GMF, MLP) user vectors; `history`: (len(users), L) item codes, n_items where there is none."""
        gmf, mlp = self.gmf_user(users), self.mlp_user(users)
        if self.history is None:
            return gmf, mlp
        history = self.recent_items[users] if history is None else history
        present = (history < self.n_items).sum(dim=1, keepdim=True).clamp(min=1)
        recent = self.history(history, per_sample_weights=self.recency.expand(len(history), -1)) / present
        return gmf + recent[:, :self.gmf_factors], mlp + recent[:, self.gmf_factors:]

    def score_rows(self, users: torch.Tensor, items: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """(len(users), k) logits: each user against their own row of `items` (len(users), k), the user's vectors
        computed once for the row."""
        gmf_user, mlp_user = self.user_vectors(users, history)
        gmf = gmf_user.unsqueeze(1) * self.gmf_item(items)
        mlp = self._mlp_rows(mlp_user, self.mlp_item(items))
        # The output layer on [GMF, MLP], without building the concatenation.
        weight = self.output.weight[0]
        return gmf @ weight[:self.gmf_factors] + mlp @ weight[self.gmf_factors:] + self.output.bias

    def _mlp_rows(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The MLP on [user, item] for each item of a row, (b, k, width): the first layer is W_user u + W_item i, so
        its user half is computed once per row and [user, item] is never built (a third of a step's time)."""
        if not len(self.mlp):
            return torch.cat([user.unsqueeze(1).expand(-1, items.shape[1], -1), items], dim=2)
        first, half = self.mlp[0], user.shape[1]
        hidden = (nn.functional.linear(items, first.weight[:, half:])
                  + nn.functional.linear(user, first.weight[:, :half], first.bias).unsqueeze(1))
        return self.mlp[1:](hidden)

    def forward(self, users: torch.Tensor, items: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """One logit per (user, item) pair."""
        return self.score_rows(users, items.unsqueeze(1), history).squeeze(1)


def preceding_items(users: np.ndarray, items: np.ndarray, length: int, pad: int) -> np.ndarray:
    """users, items: interactions sorted by user then time. (len(users), length): per interaction the same user's
    `length` items just before it, oldest first, `pad` where there are fewer."""
    position = np.arange(len(users))
    first_of_user = np.maximum.accumulate(np.where(np.r_[True, users[1:] != users[:-1]], position, 0))
    history = np.full((len(users), length), pad, dtype=np.int64)
    for offset in range(1, length + 1):
        source = position - offset
        history[:, length - offset] = np.where(source >= first_of_user, items[np.maximum(source, 0)], pad)
    return history


def latest_items(users: np.ndarray, items: np.ndarray, n_users: int, length: int, pad: int) -> np.ndarray:
    """users, items: sorted by user then time. (n_users, length): each user's last `length` items, oldest first."""
    latest = np.full((n_users, length), pad, dtype=np.int64)
    if not len(users):
        return latest
    ends = np.flatnonzero(np.r_[users[1:] != users[:-1], True])
    # A user's latest items: what came before their last one, then that one.
    before_last = preceding_items(users, items, length, pad)[ends]
    latest[users[ends]] = np.concatenate([before_last[:, 1:], items[ends, None]], axis=1)
    return latest


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


def validation_split(split: LeaveOneOut, n_candidates: int = 100, seed: int = 7,
                     max_users: int | None = None) -> LeaveOneOut:
    """The same protocol inside the training data: each user's latest training item (their second-latest
    interaction) held out and ranked among items absent from their training data, for users with at least two
    training items (at most `max_users` of them, drawn at random; the others keep every training item). It reads
    `split.train` only, so the evaluation items never shape a choice made on it."""
    frame = split.train.sort_values(["user", "time", "item"], kind="stable")
    counts = np.bincount(frame["user"], minlength=split.n_users)
    users = np.flatnonzero(counts >= 2)
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed + 1).choice(users, size=max_users, replace=False))
    return _hold_out_latest(frame, split.n_users, split.n_items, users, n_candidates, seed + 1)


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
    """Each id's learned vector: GMF factors then MLP embedding (gmf_factors + mlp_layers[0] // 2 floats); a
    user's includes the recency-weighted average history embedding of their latest items when the model has one."""
    user_ids: np.ndarray
    user_vectors: np.ndarray  # (len(user_ids), width)
    resource_ids: np.ndarray
    resource_vectors: np.ndarray  # (len(resource_ids), width)

    def of_learners(self, user_ids: np.ndarray) -> NcfEmbeddings:
        """The same embeddings with only these users' vectors (every resource's kept)."""
        kept = np.isin(self.user_ids, user_ids)
        return dataclasses.replace(self, user_ids=self.user_ids[kept], user_vectors=self.user_vectors[kept])


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
            users = torch.from_numpy(np.maximum(user_code, 0))
            items = torch.from_numpy(np.maximum(item_code, 0)).expand(len(user_ids), -1)
            probabilities = torch.sigmoid(self.model.score_rows(users, items)).numpy()
        probabilities[:, item_code < 0] = 0.0
        probabilities[user_code < 0] = np.nan
        return probabilities

    def remember_latest(self, interactions: pd.DataFrame) -> None:
        """A history model scores each user after the items they touched last: those become their latest items in
        `interactions` (user, item, time ids), for the users and items the model knows. Others keep theirs."""
        if self.model.history is None:
            return
        frame = pd.DataFrame({"user": pd.Index(self.user_ids).get_indexer(interactions["user"]),
                              "item": pd.Index(self.resource_ids).get_indexer(interactions["item"]),
                              "time": interactions["time"].to_numpy()})
        frame = frame.loc[(frame["user"] >= 0) & (frame["item"] >= 0)]
        frame = frame.sort_values(["user", "time", "item"], kind="stable").drop_duplicates(["user", "item"],
                                                                                           keep="last")
        users = frame["user"].to_numpy(np.int64)
        latest = latest_items(users, frame["item"].to_numpy(np.int64), len(self.user_ids),
                              self.config.history_length, self.model.n_items)
        known = np.unique(users)
        with torch.no_grad():
            self.model.recent_items[torch.from_numpy(known)] = torch.from_numpy(latest[known])

    def embeddings(self) -> NcfEmbeddings:
        model = self.model
        with torch.no_grad():
            users = torch.cat(model.user_vectors(torch.arange(len(self.user_ids))), dim=1).numpy()
            items = torch.cat([model.gmf_item.weight, model.mlp_item.weight], dim=1).numpy()
        return NcfEmbeddings(self.user_ids, users, self.resource_ids, items)


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
    from learning_pipelines.domain.ncf_search import choose_config  # it builds on this module

    split = leave_one_out(interactions, seed=config.seed if config else seed)
    choice = None if config else choose_config(split, seed=seed)
    config = config or choice.config
    started = time.perf_counter()
    training = NeumfTraining(split.train, split.n_users, split.n_items, config)
    for _ in range(config.epochs):
        training.epoch()
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
