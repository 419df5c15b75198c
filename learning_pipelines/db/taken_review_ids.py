"""The review ids that the good rows of the file being imported have taken so far, kept in a
temporary table of the import's transaction, so a file read in chunks finds its duplicates across
chunks while its memory stays that of one chunk, whatever the file's size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk

_taken = sa.Table(
    "import_taken_review_ids", sa.MetaData(),
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("first_line", sa.BigInteger, nullable=False),  # line of the first good row with the id
    sa.Column("fresh", sa.Boolean, nullable=False),  # that row was new to the warehouse: this import stores it
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)


class TakenReviewIds:
    """Created inside the import's transaction: it goes with the transaction, committed or rolled back."""

    def __init__(self, conn: sa.Connection):
        self._conn = conn
        _taken.drop(conn, checkfirst=True)  # SQLite keeps a temporary table for the connection's life
        _taken.create(conn)

    def among(self, ids) -> pd.DataFrame:
        """Those of `ids` that good rows have taken, indexed by id: the line of the first good row with
        each (`first_line`) and whether that row was new to the warehouse, one this import stores (`fresh`)."""
        found = bulk.read_frame_with_ids(self._conn, sa.select(_taken), _taken.c.id, ids)
        return found.astype({"first_line": "int64", "fresh": bool}).set_index("id")

    def take(self, ids, first_lines, fresh) -> None:
        """Record ids that no good row has taken yet, each once."""
        bulk.bulk_insert(self._conn, _taken, pd.DataFrame({
            "id": np.asarray(ids, dtype=np.int64), "first_line": np.asarray(first_lines, dtype=np.int64),
            "fresh": np.asarray(fresh, dtype=bool)}))

    def drop(self) -> None:
        _taken.drop(self._conn)
