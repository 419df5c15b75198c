"""Deterministic review ids, so re-importing the same review never creates a second row."""

from __future__ import annotations

import numpy as np

from learning_pipelines.domain.stable_hash import stable_hash


def derive_review_ids(user_ids, concept_ids, reviewed_at_ms) -> np.ndarray:
    """A positive 63-bit id from (learner, concept, review time in ms) for sources without ids."""
    return stable_hash(user_ids, concept_ids, reviewed_at_ms)
