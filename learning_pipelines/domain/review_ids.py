"""Deterministic review ids, so re-importing the same review never creates a second row."""

from __future__ import annotations

import numpy as np

_MASK_63 = np.uint64(0x7FFF_FFFF_FFFF_FFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def derive_review_ids(user_ids, concept_ids, reviewed_at_ms) -> np.ndarray:
    """A positive 63-bit id from (learner, concept, review time in ms) for sources without ids."""
    with np.errstate(over="ignore"):
        h = _splitmix64(np.asarray(user_ids, dtype=np.int64).astype(np.uint64))
        h = _splitmix64(h ^ np.asarray(concept_ids, dtype=np.int64).astype(np.uint64))
        h = _splitmix64(h ^ np.asarray(reviewed_at_ms, dtype=np.int64).astype(np.uint64))
    return (h & _MASK_63).astype(np.int64)
