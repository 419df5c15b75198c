"""The project's one stable hash: the same integers give the same 63-bit value in every process, on every
machine and in every release (it is splitmix64, not Python's salted hash). Review ids, learner shards, A/B groups
and the global fit's sample of learners are all drawn from it, each with a salt of its own."""

from __future__ import annotations

import numpy as np

_MASK_63 = np.uint64(0x7FFF_FFFF_FFFF_FFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def stable_hash(first, *more) -> np.ndarray:
    """A non-negative 63-bit hash (int64) of each row of the integer columns `first`, `more`..., chained in order."""
    with np.errstate(over="ignore"):
        hashed = _splitmix64(np.asarray(first, dtype=np.int64).astype(np.uint64))
        for column in more:
            hashed = _splitmix64(hashed ^ np.asarray(column, dtype=np.int64).astype(np.uint64))
    return (hashed & _MASK_63).astype(np.int64)


def salted_hash(ids, salt: int) -> np.ndarray:
    """stable_hash of each id with `salt`: a pseudo-random draw per id that one salt keeps apart from another's."""
    ids = np.asarray(ids, dtype=np.int64)
    return stable_hash(ids, np.full(len(ids), salt, dtype=np.int64), np.zeros(len(ids), dtype=np.int64))
