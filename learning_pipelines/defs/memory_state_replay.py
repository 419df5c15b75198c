"""Replaying learners' memory states from their full history: after their weights changed (a learner
shard's optimization) or when card_memory_states finds learners on other weights."""

import numpy as np
import sqlalchemy as sa

from learning_pipelines.db import memory_states as store
from learning_pipelines.domain import memory_states
from learning_pipelines.domain.memory_states import LearnerWeights

REPLAY_LEARNER_CHUNK = 2000  # learners whose reviews are counted per query, and most learners per read
# Most reviews per read: what a replay holds in memory at once, whatever the largest learner (BENCHMARKS.md,
# "Memory states: one large learner").
REPLAY_REVIEWS_PER_READ = 250_000


def replay_learners(conn: sa.Connection, learners: np.ndarray, weights: LearnerWeights, learner_chunk: int,
                    reviews_per_read: int = REPLAY_REVIEWS_PER_READ) -> None:
    """Every state of these learners recomputed with `weights` and rescheduled, inside the caller's transaction,
    in reads of at most `learner_chunk` learners and `reviews_per_read` reviews (a larger learner's cards in
    several) so memory stays flat."""
    for offset in range(0, len(learners), learner_chunk):
        chunk = learners[offset:offset + learner_chunk]
        learner_counts = store.learner_review_counts(conn, chunk)
        large = learner_counts.loc[learner_counts["n_reviews"] > reviews_per_read, "user_id"]
        card_counts = store.card_review_counts(conn, large)
        for read in memory_states.replay_reads(chunk, learner_counts, card_counts, reviews_per_read):
            history = store.learner_histories(conn, read.user_ids, read.concept_from, read.concept_to)
            replayed = memory_states.schedule(memory_states.replay(history, weights),
                                              *store.learner_settings(conn, read.user_ids))
            store.replace_learners(conn, read.user_ids, replayed, read.concept_from, read.concept_to)
