"""FSRS weights in the warehouse: what the optimization reads and writes (a new fsrs_global_params version from a
sample of learners; a shard's srs_user_params rows from its learners' reviews), the shadow evaluation's reviews and
eval_metrics_daily rows, and what the eligibility sensor reads. The weights in use are read by
db.memory_state_reads.current_weights."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, reads, tables
from learning_pipelines.db.memory_state_reads import current_weights
from learning_pipelines.domain.fsrs_policy import HOLDOUT_SHARE
from learning_pipelines.domain.fsrs_training import GlobalFit
from learning_pipelines.domain.memory_states import LearnerWeights
from learning_pipelines.domain.stable_hash import salted_hash

params, global_params, eval_metrics = tables.srs_user_params, tables.fsrs_global_params, tables.eval_metrics_daily


def global_training_sample(conn: sa.Connection, max_reviews: int) -> pd.DataFrame:
    """Every review (with calendar, in time order) of learners drawn in a fixed pseudo-random order until
    about `max_reviews` / (1 - HOLDOUT_SHARE) reviews: what the pooled fit needs, never the whole history."""
    counts = reads.review_counts(conn).sort_values("user_id")
    order = np.argsort(salted_hash(counts["user_id"], _SAMPLE_SALT), kind="stable")
    drawn = counts.iloc[order]
    wanted = max_reviews / (1 - HOLDOUT_SHARE)
    take = int(np.searchsorted(drawn["n_reviews"].cumsum().to_numpy(), wanted)) + 1
    return reads.reviews_with_calendar(conn, user_ids=drawn["user_id"].iloc[:take].tolist())


_SAMPLE_SALT = 0x61_0BA1  # the order learners are drawn in for the pooled fit


def record_global_fit(conn: sa.Connection, fit: GlobalFit) -> int:
    """A new fsrs_global_params version; returns its number."""
    return int(conn.execute(global_params.insert().values(
        weights=json.dumps(fit.weights.tolist()), n_reviews=fit.n_reviews, n_learners=fit.n_learners,
        logloss=fit.logloss, trained_at=fit.trained_at).returning(global_params.c.version)).scalar_one())


def latest_global_weights(conn: sa.Connection) -> np.ndarray | None:
    """The weights of the latest fsrs_global_params version (None before the first fit)."""
    latest = conn.execute(sa.select(global_params.c.weights).order_by(global_params.c.version.desc()).limit(1)).first()
    return np.array(json.loads(latest.weights), dtype=float) if latest else None


@dataclasses.dataclass(frozen=True)
class TrainingInputs:
    reviews: pd.DataFrame  # every review of the learners with their calendar, in time order
    previous: pd.DataFrame  # their srs_user_params rows as stored


def training_inputs(conn: sa.Connection, user_ids) -> TrainingInputs:
    return TrainingInputs(reads.reviews_with_calendar(conn, user_ids=user_ids),
                          bulk.read_frame_with_ids(conn, sa.select(params), params.c.user_id, user_ids))


def replace_learner_params(conn: sa.Connection, user_ids, rows: pd.DataFrame) -> int:
    """These learners' srs_user_params rows replaced by `rows` (learners without reviews lose theirs)."""
    bulk.delete_with_ids(conn, params, params.c.user_id, user_ids)
    return bulk.bulk_insert(conn, params, rows[[c.name for c in params.columns]])


@dataclasses.dataclass(frozen=True)
class ShadowInputs:
    history: pd.DataFrame  # every review, up to the day's end, of the learners who reviewed that day
    weights: LearnerWeights  # the latest global weights and every learner's own


def shadow_inputs(conn: sa.Connection, start: dt.datetime, end: dt.datetime) -> ShadowInputs:
    """What scoring the reviews in [start, end) needs: their learners' histories (a prediction replays
    the card from its first review) and the weights in use."""
    day = reads.reviews_with_calendar(conn, start=start, end=end)
    learners = day["user_id"].unique().tolist()
    history = reads.reviews_with_calendar(conn, end=end, user_ids=learners) if learners else day
    return ShadowInputs(history, current_weights(conn).weights)


def replace_shadow_day(conn: sa.Connection, day: dt.date, metrics: pd.DataFrame, evaluated_at: dt.datetime) -> int:
    """The day's eval_metrics_daily rows replaced by `metrics` (one row per A/B group)."""
    conn.execute(eval_metrics.delete().where(eval_metrics.c.day == day))
    return bulk.bulk_insert(conn, eval_metrics, metrics.assign(day=day, evaluated_at=evaluated_at))


def eligibility_inputs(conn: sa.Connection) -> pd.DataFrame:
    """user_id, n_reviews, training_cooldown_until of every learner with reviews."""
    counts = reads.review_counts(conn)
    cooldowns = bulk.read_frame(conn, sa.select(params.c.user_id, params.c.training_cooldown_until))
    learners = counts.merge(cooldowns, on="user_id", how="left")
    learners["user_id"] = learners["user_id"].astype("int64")
    return learners
