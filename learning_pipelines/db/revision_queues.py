"""Reads and writes of the daily revision queues."""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines import pause_points
from learning_pipelines.db import bulk, learner_locks, tables
from learning_pipelines.domain.revision import FALLBACK_PREFIX, UNMAPPED, QueueChunk

LEARNER_TABLES = learner_locks.in_lock_order(
    (tables.revision_queue_theme, tables.revision_queue_user_summary, tables.tag_quality_debt_log,
     tables.revision_queue_target_concept))


def card_states(conn: sa.Connection, user_ids) -> pd.DataFrame:
    """user_id, concept_id, stability_days, last_review_at, decay of every card of the learners `user_ids`."""
    states = tables.card_memory_states
    query = sa.select(states.c.user_id, states.c.concept_id, states.c.stability_days, states.c.last_review_at,
                      states.c.decay)
    return pd.concat([bulk.read_frame_fixed_width(conn, query.where(where))
                      for where in bulk.id_conditions(conn, states.c.user_id, user_ids)], ignore_index=True)


@contextlib.contextmanager
def card_states_read_ahead(conn: sa.Connection, learner_chunks: list) -> Iterator[Iterator[pd.DataFrame]]:
    """An iterator over card_states of each chunk of learners in turn. On PostgreSQL the first chunk is read
    from the start of the block, and each next one while the caller works on the current one, on a connection
    of their own (the server scans and sends while Python computes); each read sees what was committed when it
    started, as a read in the caller's transaction would (READ COMMITTED). Elsewhere each chunk is read in the
    caller's connection when asked for."""
    if conn.dialect.name != "postgresql":
        yield (card_states(conn, chunk) for chunk in learner_chunks)
        return
    with conn.engine.connect() as reader, concurrent.futures.ThreadPoolExecutor(1) as pool:
        # One backend per read, no JIT: the read overlaps Python's work on the previous chunk, so parallel
        # workers would only take cores from it, and compiling each chunk's plan cost more than it saved
        # (200,000 states: 1.35 s with both, 0.46 s without, on 2 cores).
        bulk.plan_without_jit(reader)
        reader.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
        pending = [pool.submit(card_states, reader, chunk) for chunk in learner_chunks[:1]]

        def in_turn() -> Iterator[pd.DataFrame]:
            for chunk in learner_chunks[1:]:
                ready = pending.pop().result()
                pending.append(pool.submit(card_states, reader, chunk))
                yield ready
            if pending:
                yield pending.pop().result()

        try:
            yield in_turn()
        finally:
            for future in pending:  # the caller stopped early: let the read in flight end before closing
                future.cancel() or future.exception()


def clear_learners_day(conn: sa.Connection, day: dt.date, builds: pd.DataFrame, user_ids) -> None:
    """Delete `day`'s rows of the learners `user_ids`, and the statistics and window records of the day of `builds`
    (learner_shard, window_start: the builds about to be written). Statistics written under another number of
    shards stay (day_totals reads the current count's only): deleting them here would make every shard of the day
    wait on the same rows.

    Every learner-day written has its summary row (an empty queue has one too), so only the learners with a summary
    of the day are searched in the other tables: in normal operation a window's learners have none yet."""
    stats = tables.queue_stats_daily
    pairs = [(str(shard), pd.Timestamp(window).to_pydatetime()) for shard, window in
             builds[["learner_shard", "window_start"]].itertuples(index=False)]
    built_before = learners_with_day(conn, day, user_ids)
    for table in LEARNER_TABLES:
        if len(built_before):
            bulk.delete_with_ids(conn, table, table.c.user_id, built_before, table.c.queue_date == day)
        pause_points.reached(f"revision_queues.cleared_{table.name}")
    if not pairs:
        return
    for table in (stats, tables.revision_queue_windows):
        conn.execute(table.delete().where(table.c.queue_date == day, sa.tuple_(
            table.c.learner_shard, table.c.window_start).in_(pairs)))


def learners_with_day(conn: sa.Connection, day: dt.date, user_ids) -> np.ndarray:
    """Of the learners `user_ids`, those with a queue summary of `day`, sorted.

    On PostgreSQL one index probe per learner, whatever the planner believes of the day's rows: the day being built
    is the newest, beyond the statistics' range, so a plain `user_id = ANY(...) AND queue_date = day` is planned as
    a scan of every row of the day (every window already built) filtered by learner, a cost that grew window after
    window (bench/rollover_windows.py)."""
    summary = tables.revision_queue_user_summary
    wanted = np.unique(np.asarray(user_ids, dtype=np.int64))
    if len(wanted) == 0:
        return wanted
    if conn.dialect.name != "postgresql":
        return np.sort(np.concatenate([wanted[:0]] + [
            np.asarray(conn.execute(sa.select(summary.c.user_id).where(summary.c.queue_date == day, in_ids))
                       .scalars().all(), dtype=np.int64)
            for in_ids in bulk.id_conditions(conn, summary.c.user_id, wanted)]))
    keys = sa.func.unnest(sa.literal(wanted.tolist(), sa.ARRAY(sa.BigInteger))).table_valued(
        sa.column("user_id", sa.BigInteger)).render_derived()
    # LATERAL with LIMIT: a probe per learner on (queue_date, user_id), never one scan of the day.
    probe = (sa.select(summary.c.user_id).where(summary.c.queue_date == day, summary.c.user_id == keys.c.user_id)
             .limit(1).lateral("probe"))
    found = conn.execute(sa.select(probe.c.user_id).select_from(keys.join(probe, sa.true()))).scalars().all()
    return np.sort(np.asarray(found, dtype=np.int64))


def encoded_chunk(dialect: str, day: dt.date, queues: QueueChunk, learners: pd.DataFrame, generated_at: dt.datetime,
                  cutoff_at: dt.datetime) -> list[bulk.EncodedRows]:
    """One chunk of learners' queues of `day`, encoded for the tables (write_encoded inserts them); `learners` holds
    their revision_daily_target and their day's UTC bounds (valid_from, valid_until)."""
    summaries = queues.summaries.merge(learners[["user_id", "revision_daily_target", "valid_from", "valid_until"]],
                                       on="user_id")
    return [bulk.encode_rows(dialect, table, frame) for table, frame in (
        (tables.revision_queue_theme, queues.themes.assign(queue_date=day)),
        (tables.revision_queue_user_summary, summaries.assign(queue_date=day, generated_at=generated_at,
                                                              cutoff_at=cutoff_at)),
        (tables.tag_quality_debt_log, queues.debt.assign(queue_date=day)),
        (tables.revision_queue_target_concept, queues.target_concepts.assign(queue_date=day)))]


def write_encoded(conn: sa.Connection, chunk: list[bulk.EncodedRows]) -> None:
    for rows in chunk:
        bulk.insert_encoded(conn, rows)


def write_chunk(conn: sa.Connection, day: dt.date, queues: QueueChunk, learners: pd.DataFrame,
                generated_at: dt.datetime, cutoff_at: dt.datetime) -> None:
    """One chunk of learners' queues of `day` (encoded_chunk's arguments), inserted."""
    write_encoded(conn, encoded_chunk(conn.dialect.name, day, queues, learners, generated_at, cutoff_at))


@contextlib.contextmanager
def chunks_written_behind(conn: sa.Connection) -> Iterator[Callable[..., None]]:
    """A write_chunk(conn, ...) that, on PostgreSQL, inserts on a thread of its own one chunk behind the caller:
    the caller encodes chunk k + 1 and computes the next while the server takes in chunk k (each call encodes its
    chunk, then waits for the insert in flight, so at most one encoded chunk waits in memory). The caller leaves
    `conn` alone inside the block; when the block ends every chunk is written, or the first insert's error is
    raised. Elsewhere each write is done at the call (a SQLite connection stays in its thread)."""
    if conn.dialect.name != "postgresql":
        yield lambda *args: write_chunk(conn, *args)
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight: list[concurrent.futures.Future] = []

        def write(*args) -> None:
            encoded = encoded_chunk(conn.dialect.name, *args)
            if in_flight:
                in_flight.pop().result()
            in_flight.append(pool.submit(write_encoded, conn, encoded))

        try:
            yield write
            if in_flight:
                in_flight.pop().result()
        finally:
            for future in in_flight:  # the caller failed: let the write in flight end before the rollback
                future.cancel() or future.exception()


def write_windows(conn: sa.Connection, day: dt.date, stats: pd.DataFrame, built: pd.DataFrame) -> None:
    """The statistics of `day` per learner shard and window (learner_shard, window_start, theme_key, n_learners,
    due_today, overdue) and a row of revision_queue_windows per shard and window built (`built`: learner_shard,
    window_start, n_learners, first_rollover_at, day_ends_at, cutoff_at, ready_at, late)."""
    bulk.bulk_insert(conn, tables.queue_stats_daily, stats.assign(queue_date=day))
    bulk.bulk_insert(conn, tables.revision_queue_windows, built.assign(queue_date=day))


def day_totals(conn: sa.Connection, day: dt.date, shards: list[str]) -> pd.DataFrame:
    """queue_stats_daily of `day` summed over the learner shards `shards` (the current count's keys): theme_key,
    n_learners, due_today, overdue."""
    stats = tables.queue_stats_daily
    return bulk.read_frame(conn, sa.select(stats.c.theme_key, sa.func.sum(stats.c.n_learners).label("n_learners"),
                                           sa.func.sum(stats.c.due_today).label("due_today"),
                                           sa.func.sum(stats.c.overdue).label("overdue"))
                           .where(stats.c.queue_date == day, stats.c.learner_shard.in_(shards))
                           .group_by(stats.c.theme_key).order_by(stats.c.theme_key))


def stored_consistency(conn: sa.Connection, day: dt.date, user_ids) -> dict[str, int]:
    """As stored for `day` and those of the learners `user_ids` (a learner shard) with a summary row: learners
    whose summary differs from their theme rows, due cards in mapped themes, cards logged as tag-quality debt,
    and their due total.

    Each learner's theme and debt rows are summed by subqueries on that learner's key, so the cost follows the
    shard's rows whatever the planner believes of the day's (a join or a filter on the day reads every shard's
    rows of it, as many as a night's statistics have not yet seen)."""
    theme, summary, debt = tables.revision_queue_theme, tables.revision_queue_user_summary, tables.tag_quality_debt_log
    mapped = ~theme.c.theme_key.like(f"{FALLBACK_PREFIX}%") & (theme.c.theme_key != UNMAPPED)

    def learners_sum(table: sa.Table, value: sa.ColumnElement) -> sa.ScalarSelect:
        return (sa.select(sa.func.coalesce(sa.func.sum(value), 0))
                .where(table.c.queue_date == summary.c.queue_date, table.c.user_id == summary.c.user_id)
                .scalar_subquery())

    found = {"learners_mismatched": 0, "due_in_mapped_themes": 0, "logged_as_debt": 0, "due_today_total": 0}
    for in_summary in bulk.id_conditions(conn, summary.c.user_id, user_ids):
        per_learner = sa.select(
            summary.c.due_today_total, summary.c.overdue_total,
            learners_sum(theme, theme.c.due_today).label("due"), learners_sum(theme, theme.c.overdue).label("overdue"),
            learners_sum(theme, sa.case((mapped, theme.c.due_today), else_=0)).label("mapped_due"),
            learners_sum(debt, sa.literal(1)).label("debt"),
        ).where(summary.c.queue_date == day, in_summary).subquery()
        differs = (per_learner.c.due != per_learner.c.due_today_total) | (
            per_learner.c.overdue != per_learner.c.overdue_total)
        totals = conn.execute(sa.select(*(sa.func.coalesce(sa.func.sum(value), 0) for value in (
            sa.case((differs, 1), else_=0), per_learner.c.mapped_due, per_learner.c.debt,
            per_learner.c.due_today_total)))).one()
        for name, value in zip(found, totals):
            found[name] += value
    return {name: int(value) for name, value in found.items()}
