"""Item histories in time order, as NeuMF's history variant (`ncf_model.NeuMF`) reads them: per interaction the
items the same user touched just before it (what training scores it after), per user their latest items (what
scoring without an explicit history uses)."""

from __future__ import annotations

import numpy as np


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
