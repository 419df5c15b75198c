"""What card_memory_states reads: new reviews and the stored states they continue, the histories to replay, the
weights and preferences in use."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, reads, tables
from learning_pipelines.db.learner_calendars import calendars
from learning_pipelines.domain import fsrs
from learning_pipelines.domain.chunking import chunks
from learning_pipelines.domain.memory_states import CARD, LearnerWeights

states, logs = tables.card_memory_states, tables.review_logs


def new_reviews(conn: sa.Connection, after_seq: int, upto_seq: int) -> pd.DataFrame:
    """Reviews numbered in (after_seq, upto_seq] with their learner's calendar, in time order."""
    return reads.reviews_with_calendar(conn, after_seq=after_seq, upto_seq=upto_seq)


def stored_states(conn: sa.Connection, after_seq: int, upto_seq: int) -> pd.DataFrame:
    """The stored states of the cards that got reviews numbered in (after_seq, upto_seq], with their calendar."""
    touched = (sa.select(logs.c.user_id, logs.c.concept_id).distinct()
               .where(logs.c.ingest_seq > after_seq, logs.c.ingest_seq <= upto_seq).subquery())
    return bulk.read_frame(conn, sa.select(
        states.c.user_id, states.c.concept_id, states.c.stability_days, states.c.difficulty, states.c.n_reviews,
        states.c.first_rating, states.c.last_review_at, calendars.c.timezone, calendars.c.day_start_hour,
    ).join(touched, sa.and_(touched.c.user_id == states.c.user_id, touched.c.concept_id == states.c.concept_id))
     .join(calendars, calendars.c.user_id == states.c.user_id))


def review_counts(conn: sa.Connection, cards: pd.DataFrame) -> pd.DataFrame:
    """user_id, concept_id, n_stored_reviews: every review held now for each of these cards."""
    if cards.empty:
        return cards.assign(n_stored_reviews=pd.Series(dtype="int64"))
    if conn.dialect.name == "postgresql":  # one index probe per card and partition, never a scan
        return pd.DataFrame(conn.execute(sa.text(
            "SELECT k.user_id, k.concept_id, (SELECT count(*) FROM review_logs r WHERE r.user_id = k.user_id "
            "AND r.concept_id = k.concept_id) AS n_stored_reviews "
            "FROM unnest(CAST(:users AS bigint[]), CAST(:concepts AS bigint[])) AS k(user_id, concept_id)"),
            bulk.card_key_arrays(cards)).all(), columns=["user_id", "concept_id", "n_stored_reviews"])
    keys = list(cards[CARD].itertuples(index=False, name=None))
    return pd.concat([bulk.read_frame(conn, sa.select(logs.c.user_id, logs.c.concept_id,
                                                      sa.func.count().label("n_stored_reviews"))
                                      .where(sa.tuple_(logs.c.user_id, logs.c.concept_id).in_(part))
                                      .group_by(logs.c.user_id, logs.c.concept_id))
                      for part in chunks(keys, bulk.CARDS_PER_IN_LIST)], ignore_index=True)


def learner_histories(conn: sa.Connection, user_ids, concept_from: int | None = None,
                      concept_to: int | None = None) -> pd.DataFrame:
    """Every review of these learners (of their cards with concept_id in [concept_from, concept_to)) with their
    calendar, in time order."""
    return reads.reviews_with_calendar(conn, user_ids=[int(u) for u in user_ids], concept_from=concept_from,
                                       concept_to=concept_to)


def card_histories(conn: sa.Connection, cards: pd.DataFrame) -> pd.DataFrame:
    """Every review of these cards (user_id, concept_id) with their learner's calendar, in time order."""
    return reads.reviews_with_calendar(conn, cards=cards)


def learner_review_counts(conn: sa.Connection, user_ids) -> pd.DataFrame:
    """user_id, n_reviews of these learners (those with reviews)."""
    return reads.review_counts(conn, [int(u) for u in user_ids])


def card_review_counts(conn: sa.Connection, user_ids) -> pd.DataFrame:
    """user_id, concept_id, n_reviews of every card of these learners."""
    query = (sa.select(logs.c.user_id, logs.c.concept_id, sa.func.count().label("n_reviews"))
             .group_by(logs.c.user_id, logs.c.concept_id))
    return bulk.read_frame_with_ids(conn, query, logs.c.user_id, [int(u) for u in user_ids])


def states_of_learners(conn: sa.Connection, user_ids) -> pd.DataFrame:
    """Every stored state of these learners."""
    return bulk.read_frame_with_ids(conn, sa.select(states), states.c.user_id, user_ids)


def learners_with_reviews(conn: sa.Connection) -> np.ndarray:
    return reads.review_counts(conn)["user_id"].to_numpy(np.int64)


@dataclasses.dataclass(frozen=True)
class CurrentWeights:
    weights: LearnerWeights
    global_version: int | None
    own_trained_at: dt.datetime | None


def current_weights(conn: sa.Connection, user_ids=None) -> CurrentWeights:
    """Latest global weights (FSRS-6 defaults before the first fit) and every learner's own weights
    (only these learners' when `user_ids` is given; own_trained_at is then theirs)."""
    global_params, params = tables.fsrs_global_params, tables.srs_user_params
    latest = conn.execute(sa.select(global_params.c.version, global_params.c.weights)
                          .order_by(global_params.c.version.desc()).limit(1)).first()
    own_query = sa.select(params.c.user_id, params.c.weights, params.c.trained_at).where(params.c.weights.is_not(None))
    own_rows = list(conn.execute(own_query).all() if user_ids is None else
                     bulk.read_frame_with_ids(conn, own_query, params.c.user_id, user_ids).itertuples(index=False))
    own = {int(u): np.array(json.loads(w), dtype=float) for u, w, _ in own_rows}
    own_versions = {int(u): f"own@{pd.Timestamp(trained_at).isoformat()}" for u, _, trained_at in own_rows}
    weights = LearnerWeights(
        global_weights=np.array(json.loads(latest.weights), dtype=float) if latest else fsrs.DEFAULT_WEIGHTS,
        global_version=f"global#{latest.version}" if latest else "default", own=own, own_versions=own_versions)
    return CurrentWeights(weights, int(latest.version) if latest else None,
                          max((t for _, _, t in own_rows), default=None))


def learners_on_other_weights(conn: sa.Connection, weights: LearnerWeights, user_ids=None) -> np.ndarray:
    """Learners (of `user_ids`, else all) whose stored states were computed with weights other than their
    current ones."""
    query = sa.select(states.c.user_id, states.c.weights_version).distinct()
    used = bulk.read_frame(conn, query) if user_ids is None else \
        bulk.read_frame_with_ids(conn, query, states.c.user_id, user_ids)
    stale = used["weights_version"].to_numpy(object) != weights.version_of(used["user_id"])
    return np.unique(used.loc[stale, "user_id"].to_numpy(np.int64))


def learners_with_new_preferences(conn: sa.Connection, since: dt.datetime | None) -> tuple[np.ndarray, dt.datetime | None]:
    """Learners whose preferences changed after `since` (every learner with preferences when None),
    and the latest change. `updated_at` is stamped by the writer before it commits, so a change that
    commits late can carry an earlier time: the caller looks back PREFERENCES_LOOKBACK."""
    prefs = tables.user_learning_prefs
    query = sa.select(prefs.c.user_id, prefs.c.updated_at)
    changed = bulk.read_frame(conn, query.where(prefs.c.updated_at > since) if since else query)
    return changed["user_id"].to_numpy(np.int64), changed["updated_at"].max() if len(changed) else since


def count(conn: sa.Connection) -> int:
    return reads.row_count(conn, states)


def replay_requests(conn: sa.Connection) -> pd.DataFrame:
    return bulk.read_frame(conn, sa.select(tables.card_memory_state_replays))
