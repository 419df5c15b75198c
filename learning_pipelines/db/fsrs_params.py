"""FSRS weights in the warehouse: what the optimization reads and writes (srs_user_params and a new
fsrs_global_params version), the shadow evaluation's reviews and eval_metrics_daily rows, and what the
eligibility sensor reads. The weights in use are read by db.memory_states.current_weights."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, reads, tables
from learning_pipelines.db.memory_states import current_weights
from learning_pipelines.domain.fsrs_training import TrainingResult
from learning_pipelines.domain.memory_states import LearnerWeights

params, global_params, eval_metrics = tables.srs_user_params, tables.fsrs_global_params, tables.eval_metrics_daily


@dataclasses.dataclass(frozen=True)
class TrainingInputs:
    reviews: pd.DataFrame  # every review with its learner's calendar, in time order
    previous: pd.DataFrame  # srs_user_params as stored


def training_inputs(conn: sa.Connection) -> TrainingInputs:
    return TrainingInputs(reads.reviews_with_calendar(conn), bulk.read_frame(conn, sa.select(params)))


def record_training(conn: sa.Connection, trained: TrainingResult) -> int:
    """A new fsrs_global_params version, and srs_user_params replaced by the training's rows."""
    conn.execute(global_params.insert().values(
        weights=json.dumps(trained.global_weights.tolist()), n_reviews=trained.global_n_reviews,
        n_learners=trained.n_training_learners, logloss=trained.global_logloss, trained_at=trained.trained_at))
    conn.execute(params.delete())
    return bulk.bulk_insert(conn, params, trained.user_params[[c.name for c in params.columns]])


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
