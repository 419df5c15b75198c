"""Bringing card_memory_states up to date with every review stored: what is new since the last run carried
forward, what needs a replay replayed, in one transaction with the progress it records."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines import pause_points
from learning_pipelines.db import (
    learner_calendars,
    learner_locks,
    learner_settings,
    memory_state_reads,
    memory_state_writes,
    tables,
)
from learning_pipelines.db.memory_state_progress import (
    Progress,
    high_water,
    read_progress,
    settled,
    transactions_finished,
    write_progress,
)
from learning_pipelines.domain import memory_states
from learning_pipelines.domain.memory_states import LearnerWeights
from learning_pipelines.flows.learner_states import rewrite_learner_states
from learning_pipelines.flows.summaries import Instant, preview


@dataclasses.dataclass(frozen=True)
class PendingWork:
    """Everything a run must bring into the states, read in the run's transaction."""

    weights: LearnerWeights
    new_reviews: pd.DataFrame  # reviews numbered after the last final number, with calendars
    stored: pd.DataFrame  # stored states of the cards those reviews touch
    reread_upto: int | None  # reviews numbered up to here may be in the states already (re-read window)
    replay_requests: pd.DataFrame  # cards whose history lost a review (card_memory_state_replays)
    learners_to_replay: np.ndarray  # weights changed, or no states yet
    learners_to_reschedule: np.ndarray  # preferences changed: same states, new due times
    next_progress: Progress
    in_flight_scope: str  # whose transactions were counted as in flight (HighWater.in_flight_scope)


# A first run waits this long for transactions in flight when it reads (their reviews may carry
# numbers below what it sees); past it, the next run reads every numbered review again.
FIRST_RUN_SETTLE = dt.timedelta(seconds=30)
PREFERENCES_LOOKBACK = dt.timedelta(hours=1)


def pending_work(conn: sa.Connection) -> PendingWork:
    """What this run must bring into the states, read where it stands: after the progress the last run recorded."""
    previous = read_progress(conn)
    high = high_water(conn)
    current = memory_state_reads.current_weights(conn)
    prefs_since = previous.prefs_updated_at - PREFERENCES_LOOKBACK if previous and previous.prefs_updated_at else None
    new_prefs, prefs_updated_at = memory_state_reads.learners_with_new_preferences(conn, prefs_since)
    if previous is None:  # the first run replays every card from its history
        read_from, replay = high.seq, memory_state_reads.learners_with_reviews(conn)
        covered = high.seq if settled(conn, high.in_flight, FIRST_RUN_SETTLE) else 0
    else:
        read_from = previous.covered_seq
        weights_changed = (current.global_version, current.own_trained_at) != (previous.global_version,
                                                                               previous.own_trained_at)
        replay = (memory_state_reads.learners_on_other_weights(conn, current.weights) if weights_changed
                  else np.zeros(0, np.int64))
        covered = (high.seq if not high.in_flight
                   else previous.applied_seq if transactions_finished(conn, previous.pending_xids)
                   else previous.covered_seq)
    applied = max(high.seq, previous.applied_seq if previous else 0)
    return PendingWork(
        weights=current.weights,
        new_reviews=memory_state_reads.new_reviews(conn, read_from, high.seq),
        stored=memory_state_reads.stored_states(conn, read_from, high.seq),
        reread_upto=previous.applied_seq if previous else None,
        replay_requests=memory_state_reads.replay_requests(conn),
        learners_to_replay=np.asarray(replay, dtype=np.int64),
        learners_to_reschedule=np.setdiff1d(new_prefs, replay) if previous else np.zeros(0, np.int64),
        next_progress=Progress(min(covered, applied), applied, high.in_flight, high.as_of, current.global_version,
                               current.own_trained_at,
                               prefs_updated_at or (previous.prefs_updated_at if previous else None)),
        in_flight_scope=high.in_flight_scope,
    )


@dataclasses.dataclass(frozen=True)
class StatesSummary:
    """What a run brought into card_memory_states."""

    n_states: int
    written: pd.DataFrame  # the states the new reviews and replays changed
    work: PendingWork
    new_reviews: int  # reviews taken in (a re-read review already in the states is not counted)
    cards_advanced: int
    cards_replayed_late_review: int
    seconds: float
    calendar_fallbacks: pd.DataFrame  # user_id, timezone as stored: learners whose calendar was read as UTC

    @property
    def progress(self) -> Progress:
        return self.work.next_progress

    def data_version(self) -> str:
        """Changes exactly when the states may: new reviews taken in, or other weights."""
        return f"{self.progress.applied_seq}:{self.progress.global_version}:{self.progress.own_trained_at}"

    def metadata(self) -> dict:
        return {
            "dagster/row_count": self.n_states,
            "preview": preview(self.written, ["user_id", "concept_id", "stability_days", "difficulty", "due_at"]),
            "new_reviews": self.new_reviews,
            "cards_advanced": self.cards_advanced,
            "cards_replayed_late_review": self.cards_replayed_late_review,
            "cards_replayed_on_request": len(self.work.replay_requests),
            "learners_rescheduled": len(self.work.learners_to_reschedule),
            "learners_replayed": len(self.work.learners_to_replay),
            "reviews_included_up_to": self.progress.applied_seq,
            "in_flight_transactions_from": self.work.in_flight_scope,
            "learners_on_utc_calendar_fallback": len(self.calendar_fallbacks),
            "as_of": Instant(self.progress.as_of),
            "seconds": self.seconds,
        }


def bring_up_to_date(conn: sa.Connection, learner_chunk: int) -> StatesSummary:
    """In the caller's transaction, under card_memory_states' exclusive lock: every card with reviews since the last
    run carried forward by them (a card whose new review is older than its last one replayed from its history, as
    are the cards in card_memory_state_replays), learners whose weights changed replayed in full (`learner_chunk`
    per read), learners whose preferences changed rescheduled; then the progress that says how far the states go."""
    started = time.perf_counter()
    learner_locks.lock_memory_states(conn)
    work = pending_work(conn)
    pause_points.reached("card_memory_states.work_read")
    replaying = work.learners_to_replay
    counts = memory_state_reads.review_counts(
        conn, memory_states.cards_to_count(work.new_reviews, work.stored, work.reread_upto))
    nightly = memory_states.update(work.stored, work.new_reviews, work.weights, counts, work.reread_upto,
                                   skip_learners=replaying)
    replay_cards = pd.concat([nightly.replay_cards, work.replay_requests[["user_id", "concept_id"]]])
    changed = memory_states.latest_per_card(
        memory_state_reads.states_of_learners(conn, work.learners_to_reschedule), nightly.advanced,
        memory_states.states_from_histories(memory_state_reads.card_histories(conn, replay_cards), work.weights))
    memory_state_writes.delete_keys(conn, tables.card_memory_states, work.replay_requests)  # may have no review left
    memory_state_writes.delete_keys(conn, tables.card_memory_state_replays, work.replay_requests)
    scheduled = memory_states.schedule(changed, *learner_settings.calendars_and_preferences(conn, changed["user_id"]))
    memory_state_writes.upsert_states(conn, scheduled)
    pause_points.reached("card_memory_states.states_written")
    replayed_fallbacks = rewrite_learner_states(conn, replaying, work.weights, learner_chunk)
    if len(replaying):
        memory_state_writes.refresh_statistics(conn)
    fallbacks = pd.concat([learner_calendars.record_fallbacks(conn, np.setdiff1d(scheduled["user_id"], replaying)),
                           replayed_fallbacks], ignore_index=True).sort_values("user_id", ignore_index=True)
    write_progress(conn, work.next_progress)
    pause_points.reached("card_memory_states.before_commit")
    return StatesSummary(memory_state_reads.count(conn), scheduled, work, nightly.n_new_reviews, len(nightly.advanced),
                         len(nightly.replay_cards), time.perf_counter() - started, fallbacks)
