"""Stored reviews looked up by id, cheaply on a review_logs partitioned by month."""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, partitions
from learning_pipelines.db.tables import review_logs


def stored_reviews(conn: sa.Connection, ids, columns: list[str]) -> pd.DataFrame:
    """The stored reviews with any of `ids`: their id and `columns`.

    A partitioned review_logs is keyed by (id, reviewed_at), so a review with a given id may be in any
    month, and asking review_logs for it searches every partition's index. Each partition is asked
    instead for the ids between its smallest and largest, read from its index as the lookup starts,
    rows committed a moment ago included: the ids of a review log grow with time, so an id reaches
    one or two partitions, not every one.
    """
    wanted = np.unique(np.asarray(ids, dtype=np.int64))
    selected = [review_logs.c.id, *(review_logs.c[name] for name in columns)]
    if conn.dialect.name != "postgresql" or partitions.relation_kind(conn, partitions.PARENT_TABLE) != "p":
        return bulk.read_frame_with_ids(conn, sa.select(*selected), review_logs.c.id, wanted).drop_duplicates("id")
    frames = []
    for name, low, high in _id_ranges(conn) if len(wanted) else []:
        inside = wanted[(wanted >= low) & (wanted <= high)]
        if len(inside):
            partition = sa.table(name, *(sa.column(column.name, column.type) for column in selected))
            frames.append(bulk.read_frame_with_ids(conn, sa.select(*partition.c), partition.c.id, inside))
    if not frames:  # no partition holds any of the ids: the empty answer, with its columns
        return bulk.read_frame_with_ids(conn, sa.select(*selected), review_logs.c.id, [])
    return pd.concat(frames, ignore_index=True).drop_duplicates("id")


def _id_ranges(conn: sa.Connection) -> list[tuple[str, int, int]]:
    """(name, smallest id, largest id) of every partition of review_logs holding rows."""
    names = conn.execute(sa.text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(:parent) ORDER BY c.relname"), {"parent": partitions.PARENT_TABLE}).scalars()
    quote = conn.dialect.identifier_preparer.quote
    ranges = []
    for name in names:
        low, high = conn.execute(sa.text(f"SELECT min(id), max(id) FROM {quote(name)}")).one()  # nosec B608  # a catalog name, quoted
        if low is not None:
            ranges.append((name, low, high))
    return ranges
