"""Replaying learners' memory states from their full history: after their weights changed (a learner
shard's optimization) or when card_memory_states finds learners on other weights."""

import numpy as np
import sqlalchemy as sa

from learning_pipelines.db import memory_states as store
from learning_pipelines.domain import memory_states
from learning_pipelines.domain.memory_states import LearnerWeights

REPLAY_LEARNER_CHUNK = 2000  # learners replayed per read


def replay_learners(conn: sa.Connection, learners: np.ndarray, weights: LearnerWeights, learner_chunk: int) -> None:
    """Every state of these learners recomputed with `weights` and rescheduled, `learner_chunk` learners per
    read so memory stays flat, inside the caller's transaction."""
    for offset in range(0, len(learners), learner_chunk):
        chunk = learners[offset:offset + learner_chunk]
        replayed = memory_states.replay(store.learner_histories(conn, chunk), weights)
        store.replace_learners(conn, chunk, memory_states.schedule(replayed, *store.learner_settings(conn, chunk)))
