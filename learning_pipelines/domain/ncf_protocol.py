"""The NCF paper's leave-one-out protocol (He et al. 2017) for implicit feedback: each user's latest item is held out
and ranked among 99 sampled items the user never interacted with (HR@10, NDCG@10 in `metrics`); the same protocol
inside the training data for validation; popularity's scores as the baseline every model is compared with.

Interactions are (user, item) pairs, each a positive, with the time it happened.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd


@dataclasses.dataclass(frozen=True)
class LeaveOneOut:
    train: pd.DataFrame  # user, item (codes), time of the pair's latest interaction: one row per distinct pair
    users: np.ndarray  # (n_evaluated,) user codes whose held-out item is ranked
    test_item: np.ndarray  # (n_evaluated,) each evaluated user's held-out item
    candidates: np.ndarray  # (n_evaluated, n_candidates): held-out item first, then items the user never touched
    n_users: int
    n_items: int


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
    """interactions: user, item, time. Users and items are re-coded 0..n-1 in the order of their sorted ids. Every
    user's latest item is held out (no earlier interaction with it stays in training) and ranked among items they
    never touched."""
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


def popularity_scores(split: LeaveOneOut) -> np.ndarray:
    """(n_evaluated, n_candidates): each candidate's number of training interactions."""
    counts = np.bincount(split.train["item"], minlength=split.n_items).astype(float)
    return counts[split.candidates]
