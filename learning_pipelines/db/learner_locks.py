"""What a writer of learners' rows locks, and in which order: `learners forget` is final, and no two writers deadlock.

Every transaction that writes rows of learners (revision queues, recommendations, card memory states, FSRS
weights, NCF user embeddings) and `learners forget` take their locks in this order:

1. the `users` rows of the learners it writes, in user_id order: a writer `FOR KEY SHARE` (`lock_existing`, so
   writers never wait on each other, nor on a learner's change of settings), `forget` `FOR UPDATE`
   (`lock_for_forget`);
2. card_memory_states' lock (`lock_memory_states`, exclusive: the update and `forget`;
   `share_memory_states_lock`, shared: a learner shard's replay);
3. the tables, in LEARNER_TABLE_ORDER.

A writer takes (1) before its first write of learner rows and writes only the learners (1) returned, the ones
that still exist: a learner forgotten before that is not among them, and a `forget` that starts later waits for
the writer's commit, then deletes what it wrote. The card_memory_states update writes states of any learner and
skips (1): its exclusive (2), taken before it reads, serializes it with `forget`, which takes (2) before it
deletes anything. Reads made before (1) may still hold a learner forgotten since; their rows are never written.

On SQLite the first write of a transaction takes the database's one write lock until commit: (1) is that lock
(taken by an empty write) and a read of which learners still exist under it.
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables

# Every table with learners' rows, in the order writers and `forget` write them: a learner shard's FSRS write
# (weights, then the replayed states), the card_memory_states update (states, then replay requests), a queue
# shard's day, recommendations, embeddings; the log of calendars read as UTC, written last by the recipes that read
# calendars; tables that refer to `users` come before it (forget deletes it last).
LEARNER_TABLE_ORDER: tuple[sa.Table, ...] = (
    tables.srs_user_params,
    tables.card_memory_states,
    tables.card_memory_state_replays,
    tables.revision_queue_theme,
    tables.revision_queue_user_summary,
    tables.tag_quality_debt_log,
    tables.revision_queue_target_concept,
    tables.user_recommendations,
    tables.ncf_user_embeddings,
    tables.review_log_intervals,
    tables.review_logs,
    tables.user_interactions,
    tables.user_learning_prefs,
    tables.learner_calendar_fallbacks,
    tables.users,
)


def in_lock_order(written: tuple[sa.Table, ...] | list[sa.Table]) -> list[sa.Table]:
    """`written` sorted as LEARNER_TABLE_ORDER lists them."""
    return sorted(written, key=LEARNER_TABLE_ORDER.index)


def lock_existing(conn: sa.Connection, user_ids) -> np.ndarray:
    """Locks the `users` rows of `user_ids` against `forget` until the caller commits; the sorted ids that still
    exist, the only learners the caller may write."""
    return _lock(conn, user_ids, "FOR KEY SHARE")


def lock_for_forget(conn: sa.Connection, user_ids) -> np.ndarray:
    """Locks the `users` rows of `user_ids` for deletion, after every writer that holds them has committed; the
    sorted ids that exist."""
    return _lock(conn, user_ids, "FOR UPDATE")


def lock_memory_states(conn: sa.Connection) -> None:
    """card_memory_states for this transaction alone: one update at a time, and never beside a learner shard's
    replay or `forget`. A second update waits here (on SQLite at most the 30 s busy timeout, then it fails), then
    finds the first one's work done."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('card_memory_states'))"))
    else:  # any write statement takes SQLite's single write lock
        progress = tables.card_memory_state_progress
        conn.execute(progress.update().where(sa.false()).values(progress_id=progress.c.progress_id))


def share_memory_states_lock(conn: sa.Connection) -> None:
    """card_memory_states shared with the other learner shards until commit: shards rewrite their own learners'
    states side by side, never beside an update (`lock_memory_states`), which reads and writes any learner's."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock_shared(hashtext('card_memory_states'))"))
    else:
        lock_memory_states(conn)


def _lock(conn: sa.Connection, user_ids, mode: str) -> np.ndarray:
    wanted = np.unique(np.asarray(user_ids, dtype=np.int64))
    users = tables.users
    if conn.dialect.name == "postgresql":
        rows = conn.execute(sa.text(f"SELECT user_id FROM users WHERE user_id = ANY(CAST(:ids AS bigint[])) "
                                    f"ORDER BY user_id {mode}"), {"ids": wanted.tolist()}).scalars()
        return np.fromiter(rows, dtype=np.int64)
    conn.execute(users.update().where(sa.false()).values(user_id=users.c.user_id))  # the write lock, until commit
    found = [user_id for where in bulk.id_conditions(conn, users.c.user_id, wanted)
             for user_id in conn.execute(sa.select(users.c.user_id).where(where)).scalars()]
    return np.sort(np.asarray(found, dtype=np.int64))
