"""One learner shard's revision queues for one day: built from the memory states, written in one transaction,
then read back as stored for the shard's checks."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import pandas as pd
import sqlalchemy as sa

from learning_pipelines import pause_points
from learning_pipelines.db import bulk, learner_locks, learner_settings, reads, revision_queues
from learning_pipelines.db.memory_state_progress import why_not_covering
from learning_pipelines.domain import revision
from learning_pipelines.domain.chunking import QUEUE_LEARNER_CHUNK, chunks
from learning_pipelines.flows.refusals import Refused
from learning_pipelines.flows.summaries import Instant, Markdown


@dataclasses.dataclass(frozen=True)
class QueueShardSummary:
    stats: pd.DataFrame  # the shard's day totals by theme, as written to queue_stats_daily
    n_theme_rows: int
    n_learners: int
    rejected_preferences: pd.DataFrame  # user_id, problem: learners whose stored preferences were refused
    stored: dict[str, int]  # revision_queues.stored_consistency of the rows as stored
    cutoff: dt.datetime
    seconds: float

    @property
    def every_due_concept_accounted_for(self) -> bool:
        return self.stored["due_in_mapped_themes"] + self.stored["logged_as_debt"] == self.stored["due_today_total"]

    def metadata(self) -> dict:
        everything = self.stats.set_index("theme_key").loc[revision.ALL_THEMES]
        themes = self.stats.loc[self.stats["theme_key"] != revision.ALL_THEMES]
        return {
            "dagster/row_count": int(self.n_theme_rows),
            "n_learners": self.n_learners,
            "due_today_total": int(everything["due_today"]),
            "overdue_total": int(everything["overdue"]),
            "n_rejected_preferences": len(self.rejected_preferences),
            "cutoff": Instant(self.cutoff),
            "seconds": self.seconds,
            "themes": Markdown("The shard's top themes by cards due today\n\n" + themes.sort_values(
                "due_today", ascending=False).head(10).to_markdown(index=False)),
        }


def build_shard_day(engine: sa.Engine, day: dt.date, shard: str, cutoff: dt.datetime,
                    states_refreshed: bool = False) -> QueueShardSummary:
    """Per learner of `shard` and theme, the concepts due by the end of the learner's own `day` (overdue ones apart),
    themes ranked; a summary per learner, the shard's day totals, fallbacks logged as tag-quality debt; the shard's
    rows of the day replaced in one transaction. Refused when the memory states may miss a review stored before
    `cutoff`, unless `states_refreshed` (this run brought them up to date: every review before it is in them)."""
    started = time.perf_counter()
    with engine.begin() as conn:
        stale = None if states_refreshed else why_not_covering(conn, cutoff)
        if stale:
            raise Refused(f"{stale}. Run card_memory_states_job first (the nightly schedule does, then launches "
                          "every shard).")
        bulk.plan_without_jit(conn)
        # Only learners that still exist, locked against `learners forget` until commit (db/learner_locks).
        in_shard = learner_locks.lock_existing(conn, reads.shard_learners(conn, shard))
        pause_points.reached("revision_queues.learners_locked")
        totals, n_theme_rows, n_learners = [], 0, 0
        # The first chunk's read starts here, on its own connection on PostgreSQL.
        with revision_queues.card_states_read_ahead(conn, list(chunks(in_shard, QUEUE_LEARNER_CHUNK))) as states_of:
            calendars, preferences = learner_settings.calendars_and_preferences(conn, in_shard)
            learners, rejected = revision.effective_preferences(calendars, preferences)
            concept_ids, theme_map, edges = reads.concept_graph(conn)
            concept_themes = revision.concept_theme_keys(concept_ids["concept_id"].to_numpy(), theme_map, edges)
            revision_queues.clear_shard_day(conn, day, shard, in_shard)
            pause_points.reached("revision_queues.day_cleared")
            with revision_queues.chunks_written_behind(conn) as write_chunk:
                for states in states_of:
                    # the chunk's learners with cards (a learner without any has no queue)
                    chunk = learners.loc[learners["user_id"].isin(states["user_id"])]
                    queues = revision.build_queues(states, chunk, concept_themes, day)
                    write_chunk(day, queues, chunk, dt.datetime.now(dt.timezone.utc), cutoff)
                    totals.append(revision.theme_totals(queues))
                    n_theme_rows += len(queues.themes)
                    n_learners += len(chunk)
                    pause_points.reached("revision_queues.chunk_written")
        stats = revision.day_stats(totals)
        revision_queues.write_shard_stats(conn, day, shard, stats)
        pause_points.reached("revision_queues.before_commit")
    with engine.begin() as conn:
        stored = revision_queues.stored_consistency(conn, day, in_shard)
    return QueueShardSummary(stats, n_theme_rows, n_learners, rejected, stored, cutoff, time.perf_counter() - started)
