"""Reads and writes of concept complexity."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables


def card_signals(conn: sa.Connection) -> pd.DataFrame:
    """Every card's first rating and current state: user_id, concept_id, first_rating, difficulty,
    stability_days, n_reviews (from card_memory_states, not the review history)."""
    states = tables.card_memory_states
    return bulk.read_frame(conn, sa.select(states.c.user_id, states.c.concept_id, states.c.first_rating,
                                           states.c.difficulty, states.c.stability_days, states.c.n_reviews))


def replace_scores(conn: sa.Connection, scores: pd.DataFrame) -> int:
    table = tables.concept_complexity
    conn.execute(table.delete())
    return bulk.bulk_insert(conn, table, scores[[c.name for c in table.columns]])


def scores_outside_unit_interval(conn: sa.Connection) -> tuple[int, int]:
    """(scores stored, scores outside [0, 1])."""
    table = tables.concept_complexity
    return conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case(
        (sa.or_(table.c.score < 0, table.c.score > 1, table.c.score.is_(None)), 1), else_=0)), 0))).one()
