"""What card_memory_states writes: the states of cards and learners, and requests to replay cards."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, reads, tables
from learning_pipelines.domain.chunking import chunks
from learning_pipelines.domain.memory_states import CARD

states = tables.card_memory_states


def upsert_states(conn: sa.Connection, frame: pd.DataFrame) -> int:
    """Replace the stored states of these cards."""
    delete_keys(conn, states, frame)
    return bulk.bulk_insert(conn, states, frame)


def refresh_statistics(conn: sa.Connection) -> None:
    """After a replay rewrote many states, let PostgreSQL's planner see them before the next run reads
    by card (autovacuum may come later)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("ANALYZE card_memory_states"))


def replace_learners(conn: sa.Connection, user_ids, frame: pd.DataFrame, concept_from: int | None = None,
                     concept_to: int | None = None) -> int:
    """Replace every stored state of these learners, of their cards with concept_id in [concept_from, concept_to)
    when given (cards they no longer have disappear)."""
    bulk.delete_with_ids(conn, states, states.c.user_id, user_ids,
                         *reads.concept_range(states.c.concept_id, concept_from, concept_to))
    return bulk.bulk_insert(conn, states, frame)


def request_replays(conn: sa.Connection, cards: pd.DataFrame, requested_at: dt.datetime) -> int:
    """These cards' histories changed other than by a new review: the next run replays them."""
    cards = cards[CARD].drop_duplicates()
    if cards.empty:
        return 0
    delete_keys(conn, tables.card_memory_state_replays, cards)
    return bulk.bulk_insert(conn, tables.card_memory_state_replays, cards.assign(requested_at=requested_at))


def delete_keys(conn: sa.Connection, table: sa.Table, cards: pd.DataFrame) -> None:
    """Delete the rows of `table` (keyed by user_id, concept_id) of these cards."""
    if cards.empty:
        return
    if conn.dialect.name == "postgresql":  # one index probe per card
        conn.execute(sa.text(f"DELETE FROM {table.name} t USING unnest(CAST(:users AS bigint[]), "
                             "CAST(:concepts AS bigint[])) AS k(user_id, concept_id) "
                             "WHERE t.user_id = k.user_id AND t.concept_id = k.concept_id"), bulk.card_key_arrays(cards))
        return
    keys = list(cards[CARD].itertuples(index=False, name=None))
    for part in chunks(keys, bulk.CARDS_PER_IN_LIST):
        conn.execute(table.delete().where(sa.tuple_(table.c.user_id, table.c.concept_id).in_(part)))
