"""Every card state of some learners computed again from their whole history: after their weights changed (a
learner shard's own fit), or for learners the card_memory_states update finds on other weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import learner_calendars, learner_settings, memory_state_reads, memory_state_writes
from learning_pipelines.domain import memory_states
from learning_pipelines.domain.chunking import REPLAY_REVIEWS_PER_READ, chunks
from learning_pipelines.domain.memory_states import LearnerWeights


def rewrite_learner_states(conn: sa.Connection, learners: np.ndarray, weights: LearnerWeights, learner_chunk: int,
                           reviews_per_read: int = REPLAY_REVIEWS_PER_READ) -> pd.DataFrame:
    """Every state of these learners recomputed with `weights` and rescheduled, inside the caller's transaction,
    in reads of at most `learner_chunk` learners and `reviews_per_read` reviews (a larger learner's cards in
    several) so memory stays flat. Returns those whose calendar fell back to UTC (user_id, timezone as stored),
    recorded in learner_calendar_fallbacks."""
    for chunk in chunks(learners, learner_chunk):
        learner_counts = memory_state_reads.learner_review_counts(conn, chunk)
        large = learner_counts.loc[learner_counts["n_reviews"] > reviews_per_read, "user_id"]
        card_counts = memory_state_reads.card_review_counts(conn, large)
        for read in memory_states.replay_reads(chunk, learner_counts, card_counts, reviews_per_read):
            history = memory_state_reads.learner_histories(conn, read.user_ids, read.concept_from, read.concept_to)
            states = memory_states.schedule(memory_states.states_from_histories(history, weights),
                                            *learner_settings.calendars_and_preferences(conn, read.user_ids))
            memory_state_writes.replace_learners(conn, read.user_ids, states, read.concept_from, read.concept_to)
    return learner_calendars.record_fallbacks(conn, learners)
