"""Learners and the window builds of their revision queues, written as the pipelines write them, for the tests of
what operators see (the exporter's queue figures, the lateness alert on a real Prometheus). Which window, day and
learner shard a learner's current day is built in comes from the learner calendar alone (domain/learner_calendar.py),
not from the exporter's code."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, revision_queues, tables
from learning_pipelines.domain.learner_calendar import current_day, day_start_seconds
from learning_pipelines.domain.learner_shards import shard_keys, shard_of
from learning_pipelines.domain.revision import ALL_THEMES
from learning_pipelines.domain.rollovers import BUILD_LEAD, WINDOW

WINDOW_SECONDS = int(WINDOW.total_seconds())
BUILD_KEY = ["window_start", "queue_date", "learner_shard"]
READY_AFTER_CUTOFF = dt.timedelta(minutes=3)  # a healthy build: ready well before its window opens


def register(engine: sa.Engine, learners: pd.DataFrame) -> None:
    """Rows of `users` (user_id, timezone, day_start_hour, created_at)."""
    with engine.begin() as conn:
        bulk.bulk_insert(conn, tables.users, learners)


def current_builds(learners: pd.DataFrame, now: dt.datetime, n_shards: int, day_offset: int = 0) -> pd.DataFrame:
    """Per learner (user_id, timezone, day_start_hour; a time zone as the recipes read it): learner_shard and the
    build of their current day (the day after with `day_offset` 1): queue_date, rollover_at, day_ends_at,
    window_start (UTC)."""
    keys = shard_keys(n_shards)
    rows = []
    for learner, shard in zip(learners.itertuples(), shard_of(learners["user_id"].to_numpy(), n_shards)):
        day = current_day(now, learner.timezone, int(learner.day_start_hour)) + dt.timedelta(days=day_offset)
        start = day_start_seconds(day, learner.timezone, int(learner.day_start_hour))
        end = day_start_seconds(day + dt.timedelta(days=1), learner.timezone, int(learner.day_start_hour))
        rows.append((learner.user_id, keys[shard], day, start, end, start - start % WINDOW_SECONDS))
    builds = pd.DataFrame(rows, columns=["user_id", "learner_shard", "queue_date", "rollover_at", "day_ends_at",
                                         "window_start"])
    for column in ("rollover_at", "day_ends_at", "window_start"):
        builds[column] = pd.to_datetime(builds[column], unit="s", utc=True)
    return builds


def built_keys(engine: sa.Engine) -> set[tuple]:
    """(window_start, queue_date, learner_shard) of every window build stored."""
    with engine.connect() as conn:
        stored = bulk.read_frame(conn, sa.select(*(tables.revision_queue_windows.c[key] for key in BUILD_KEY)))
    return {(pd.Timestamp(window), day, shard) for window, day, shard in stored.itertuples(index=False)}


def write_builds(engine: sa.Engine, builds: pd.DataFrame, ready_at: dt.datetime | None = None,
                 due_per_learner: int = 3, overdue_per_learner: int = 1) -> None:
    """One window build per (window_start, queue_date, learner_shard) of `builds` (as current_builds gives them),
    ready at `ready_at` (by default READY_AFTER_CUTOFF after its cutoff, BUILD_LEAD before its window), with
    statistics of `due_per_learner` (at least 1) and `overdue_per_learner` concepts for each of its learners."""
    with engine.begin() as conn:
        for (window_start, queue_date, shard), learners in builds.groupby(BUILD_KEY):
            cutoff = window_start.to_pydatetime() - BUILD_LEAD
            ready = ready_at or cutoff + READY_AFTER_CUTOFF
            first_rollover = learners["rollover_at"].min().to_pydatetime()
            # As the recipes count them: the total (ALL_THEMES) and per theme, here "1" with every concept due of
            # each learner but one, "2" with that one.
            stats = pd.DataFrame({"window_start": window_start, "theme_key": [ALL_THEMES, "1", "2"],
                                  "n_learners": len(learners),
                                  "due_today": [due * len(learners) for due in (due_per_learner, due_per_learner - 1, 1)],
                                  "overdue": [overdue * len(learners) for overdue in (overdue_per_learner,) * 2 + (0,)]})
            revision_queues.write_windows(conn, queue_date, stats.assign(learner_shard=shard), pd.DataFrame({
                "learner_shard": [shard],
                "window_start": [window_start], "n_learners": [len(learners)], "first_rollover_at": [first_rollover],
                "day_ends_at": [learners["day_ends_at"].max().to_pydatetime()], "cutoff_at": [cutoff],
                "ready_at": [ready], "late": [ready > first_rollover]}))
