"""The revision queues of one day of some learner shards (one, or a rollover window's shards together): built from
the memory states, written in one transaction, then read back as stored for the run's checks."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines import pause_points
from learning_pipelines.db import bulk, learner_locks, learner_settings, reads, revision_queues
from learning_pipelines.db.memory_state_progress import why_not_covering
from learning_pipelines.domain import learner_shards, revision, rollovers
from learning_pipelines.domain.chunking import QUEUE_LEARNER_CHUNK, chunks
from learning_pipelines.flows.refusals import Refused
from learning_pipelines.flows.summaries import Instant, Markdown


@dataclasses.dataclass(frozen=True)
class QueueShardSummary:
    stats: pd.DataFrame  # the day's totals by theme of the shards built, as written to queue_stats_daily
    n_theme_rows: int
    n_learners: int
    rejected_preferences: pd.DataFrame  # user_id, problem: learners whose stored preferences were refused
    stored: dict[str, int]  # revision_queues.stored_consistency of the rows as stored
    cutoff: dt.datetime
    seconds: float
    windows: list[dt.datetime]  # the rollover windows built
    n_day_ended: int  # learners left out: the day had ended for them
    n_late: int  # learners whose queue was ready after their rollover
    shards: list[str]  # the learner shards built

    @property
    def every_due_concept_accounted_for(self) -> bool:
        return self.stored["due_in_mapped_themes"] + self.stored["logged_as_debt"] == self.stored["due_today_total"]

    def metadata(self) -> dict:
        everything = self.stats.set_index("theme_key").loc[revision.ALL_THEMES]
        themes = self.stats.loc[self.stats["theme_key"] != revision.ALL_THEMES]
        return {
            "dagster/row_count": int(self.n_theme_rows),
            # The UI shows the row count without saying of what; a run of several shards records the same metadata
            # on each of their partitions: every figure here is the run's.
            "row_count_is": "revision_queue_theme rows this run wrote: the learners of the learner shards and "
                            "windows listed (the same figures on each of the run's partitions)",
            "n_learners": self.n_learners,
            "due_today_total": int(everything["due_today"]),
            "overdue_total": int(everything["overdue"]),
            "n_rejected_preferences": len(self.rejected_preferences),
            "n_learners_day_ended": self.n_day_ended,
            "n_learners_late": self.n_late,
            "windows": [window.isoformat() for window in self.windows],
            "learner_shards": ", ".join(self.shards),
            "cutoff": Instant(self.cutoff),
            "seconds": self.seconds,
            "themes": Markdown("The top themes of the shards built by cards due today\n\n" + themes.sort_values(
                "due_today", ascending=False).head(10).to_markdown(index=False)),
        }


def build_shards_day(engine: sa.Engine, day: dt.date, shards: list[str], cutoff: dt.datetime, now: dt.datetime,
                     window_start: dt.datetime | None = None, states_refreshed: bool = False) -> QueueShardSummary:
    """The queues of `day` of the learners of the learner shards `shards` whose rollover into `day` falls in the
    window starting at `window_start` (every learner of those shards when None), per learner and theme: concepts due
    by the end of their own `day` (overdue ones apart), themes ranked; a summary per learner (an empty one when
    nothing is due) valid over their day's UTC bounds; totals and a record per shard and window; fallbacks logged as
    tag-quality debt. Those learners' rows of the day are replaced in one transaction: a window's shards built
    together share one read of the learners and one stream of chunks (a window of a few thousand learners costs
    one build, not one per shard).

    Learners whose `day` has ended by `now` (on their own calendar) are left out; refused when that leaves none.
    Refused too when the memory states may miss a review stored before `cutoff`, unless `states_refreshed` (this
    run brought them up to date: every review before it is in them)."""
    started = time.perf_counter()
    with engine.begin() as conn:
        stale = None if states_refreshed else why_not_covering(conn, cutoff)
        if stale:
            raise Refused(f"{stale}. Run card_memory_states_job first (the rollover windows sensor does, then "
                          "launches every shard).")
        bulk.plan_without_jit(conn)
        candidates = _shards_learners(conn, shards, day, window_start)
        parts = list(chunks(candidates, QUEUE_LEARNER_CHUNK))
        totals: list[pd.DataFrame] = []
        n_theme_rows = 0
        # The first chunk's states are read from here on, on their own connection on PostgreSQL, while the learners
        # are locked and their settings read. States of a learner left out below (forgotten before the lock, or whose
        # day has ended) are read, never written.
        with revision_queues.card_states_read_ahead(conn, parts) as states_of:
            pause_points.reached("revision_queues.states_reading")
            # Only learners that still exist, locked against `learners forget` until commit (db/learner_locks).
            in_shards = learner_locks.lock_existing(conn, candidates)
            pause_points.reached("revision_queues.learners_locked")
            calendars, preferences = learner_settings.calendars_and_preferences(conn, in_shards)
            learners, n_day_ended = _learners_of(calendars, day, window_start, now)
            learners, rejected = revision.effective_preferences(learners, preferences)
            learners["learner_shard"] = learner_shards.shard_keys_of(learners["user_id"].to_numpy(), shards)
            builds = _builds(learners, shards, window_start)
            build_of = learners.set_index("user_id")[["learner_shard", "window_start"]]
            windows = sorted(builds["window_start"].unique())
            concept_ids, theme_map, edges = reads.concept_graph(conn)
            concept_themes = revision.concept_theme_keys(concept_ids["concept_id"].to_numpy(), theme_map, edges)
            revision_queues.clear_learners_day(conn, day, builds, learners["user_id"].to_numpy())
            pause_points.reached("revision_queues.day_cleared")
            with revision_queues.chunks_written_behind(conn) as write_chunk:
                for ids, states in zip(parts, states_of):
                    chunk = learners.loc[learners["user_id"].isin(ids)]
                    if len(chunk) < len(ids):
                        states = states.loc[states["user_id"].isin(chunk["user_id"])]
                    queues = revision.build_queues(states, chunk, concept_themes, day)
                    write_chunk(day, queues, chunk, dt.datetime.now(dt.timezone.utc), cutoff)
                    totals.append(revision.window_theme_totals(queues, build_of))
                    n_theme_rows += len(queues.themes)
                    pause_points.reached("revision_queues.chunk_written")
        ready_at = dt.datetime.now(dt.timezone.utc)
        stats = revision.window_stats(totals, builds)
        revision_queues.write_windows(conn, day, stats, _window_records(learners, builds, cutoff, ready_at))
        pause_points.reached("revision_queues.before_commit")
    with engine.begin() as conn:
        stored = revision_queues.stored_consistency(conn, day, learners["user_id"].to_numpy())
    return QueueShardSummary(revision.days_stats(stats), n_theme_rows, len(learners), rejected, stored, cutoff,
                             time.perf_counter() - started, [pd.Timestamp(window) for window in windows], n_day_ended,
                             int((learners["valid_from"] < ready_at).sum()), list(shards))


def _builds(learners: pd.DataFrame, shards: list[str], window_start: dt.datetime | None) -> pd.DataFrame:
    """learner_shard, window_start of each build recorded: with `window_start`, that window of every shard (one
    without learners too: it was built, for nobody); else each window the shards' learners roll over in."""
    if window_start is not None:
        return pd.DataFrame({"learner_shard": list(shards), "window_start": pd.Timestamp(window_start)})
    return (learners[["learner_shard", "window_start"]].drop_duplicates()
            .sort_values(["learner_shard", "window_start"], ignore_index=True))


def _window_records(learners: pd.DataFrame, builds: pd.DataFrame, cutoff: dt.datetime,
                    ready_at: dt.datetime) -> pd.DataFrame:
    """revision_queue_windows' row of each build (learner shard and window): learners, first rollover, end of the
    last day, cutoff, when ready, and whether that was after the first rollover (late)."""
    key = ["learner_shard", "window_start"]
    per_build = learners.groupby(key).agg(
        n_learners=("user_id", "size"), first_rollover_at=("valid_from", "min"),
        day_ends_at=("valid_until", "max")).reindex(pd.MultiIndex.from_frame(builds[key]))
    per_build["n_learners"] = per_build["n_learners"].fillna(0).astype(int)
    return per_build.reset_index().assign(
        cutoff_at=cutoff, ready_at=ready_at,
        late=(per_build["first_rollover_at"] < pd.Timestamp(ready_at)).to_numpy())


def _shards_learners(conn: sa.Connection, shards: list[str], day: dt.date, window_start: dt.datetime | None):
    """The learners of `shards`; with `window_start`, only those whose calendar rolls over into `day` in that window
    (read by calendar, not the whole shards)."""
    if window_start is None:
        candidates = reads.learner_ids(conn)
    else:
        in_use = reads.calendars_in_use(conn)
        candidates = reads.learners_with_calendars(conn, in_use.loc[rollovers.in_window(in_use, day, window_start)])
    return learner_shards.learners_in_any(candidates, shards)


def _learners_of(calendars: pd.DataFrame, day: dt.date, window_start: dt.datetime | None,
                 now: dt.datetime) -> tuple[pd.DataFrame, int]:
    """The learners to build (those rolling over into `day` in the window, whose `day` has not ended by `now`),
    with their day's UTC bounds (valid_from, valid_until) and window; and how many were left out as ended."""
    starts = rollovers.day_starts_seconds(calendars, day)
    ends = rollovers.day_starts_seconds(calendars, day + dt.timedelta(days=1))
    rolling = (np.ones(len(calendars), dtype=bool) if window_start is None
               else rollovers.windows_of(starts) == int(window_start.timestamp()))
    ended = rolling & (ends <= int(now.timestamp()))
    chosen = rolling & ~ended
    if ended.any() and not chosen.any():
        raise Refused(f"{day} has ended for these learners on their own calendars ({int(ended.sum())} of them): "
                      "queues are built for a learner's current day or a later one, from the memory states of now")
    learners = calendars.loc[chosen].assign(
        valid_from=pd.to_datetime(starts[chosen], unit="s", utc=True),
        valid_until=pd.to_datetime(ends[chosen], unit="s", utc=True),
        window_start=pd.to_datetime(rollovers.windows_of(starts[chosen]), unit="s", utc=True))
    return learners.reset_index(drop=True), int(ended.sum())
