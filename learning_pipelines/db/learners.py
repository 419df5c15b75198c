"""Learners as a whole: which ids the warehouse knows, and forgetting a learner everywhere it holds them.

Every table of `tables.metadata` with a `user_id` column holds learner rows; `review_log_rejects` holds
them inside `raw_row`, the rejected row as JSON (a `user_id` key when the file or table had one).
"""

from __future__ import annotations

import collections
import json
import re

import sqlalchemy as sa

from learning_pipelines.db import learner_locks, tables
from learning_pipelines.domain.chunking import chunks

_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+(\.0*)?\s*")
_DELETE_CHUNK = 5000
_READ_CHUNK = 10_000
rejects = tables.review_log_rejects


def registered_learners(conn: sa.Connection, user_ids: list[int]) -> set[int]:
    """The ids among `user_ids` that have a row in `users`."""
    users = tables.users
    return set(conn.execute(sa.select(users.c.user_id).where(users.c.user_id.in_(user_ids))).scalars())


def learner_named(raw_row: str) -> int | None:
    """The learner a rejected row's JSON names in its user_id (a number, or text that reads as a whole
    number as the importers read it), else None."""
    try:
        value = json.loads(raw_row).get("user_id")
    except (ValueError, AttributeError):
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return int(value.strip().split(".")[0])
    return None


def rejects_naming(conn: sa.Connection, user_ids: list[int]) -> dict[int, list[int]]:
    """reject_id of every rejected row whose JSON names one of `user_ids`, per learner."""
    wanted = set(user_ids)
    found: dict[int, list[int]] = collections.defaultdict(list)
    query = sa.select(rejects.c.reject_id, rejects.c.raw_row).where(
        rejects.c.raw_row.contains('"user_id"', autoescape=True))
    for reject_id, raw_row in conn.execute(query.execution_options(yield_per=_READ_CHUNK)):
        learner = learner_named(raw_row)
        if learner in wanted:
            found[learner].append(int(reject_id))
    return found


def forget(conn: sa.Connection, user_ids: list[int]) -> dict[str, collections.Counter]:
    """Delete every row naming one of `user_ids`, in the caller's transaction. Per table, the rows
    removed per learner (tables that held none of them included, with an empty count).

    Locks as db/learner_locks orders it: the learners' `users` rows first (waiting for every writer that holds
    them to commit; a writer that comes later finds them gone), then card_memory_states' lock (so a memory-state
    update never writes states from reviews this deletes), then deletes table by table in LEARNER_TABLE_ORDER.
    Once the caller commits, no run writes these learners again."""
    learner_locks.lock_for_forget(conn, user_ids)
    learner_locks.lock_memory_states(conn)
    removed: dict[str, collections.Counter] = {}
    for table in learner_locks.LEARNER_TABLE_ORDER:
        deleted = conn.execute(table.delete().where(table.c.user_id.in_(user_ids)).returning(table.c.user_id))
        removed[table.name] = collections.Counter(int(user_id) for user_id in deleted.scalars())
    named = rejects_naming(conn, user_ids)
    reject_ids = [reject_id for ids in named.values() for reject_id in ids]
    for part in chunks(reject_ids, _DELETE_CHUNK):
        conn.execute(rejects.delete().where(rejects.c.reject_id.in_(part)))
    removed[rejects.name] = collections.Counter({learner: len(ids) for learner, ids in named.items()})
    return removed
