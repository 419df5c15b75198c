"""The review ids that the good rows of the file being imported have taken so far, kept in a
temporary table of the import's transaction, so a file read in chunks finds its duplicates across
chunks while its memory stays that of one chunk, whatever the file's size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk

_IDS_PER_QUERY = 5000  # SQLite's IN lists; PostgreSQL takes a chunk's ids as one array

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

    def first_lines(self, ids) -> np.ndarray:
        """Line of the first good row with each id; 0 where no good row has taken it."""
        found = self._read(ids)
        return np.asarray(pd.Series(found["first_line"].to_numpy(), index=found["id"].to_numpy())
                          .reindex(np.asarray(ids, dtype=np.int64)).fillna(0), dtype=np.int64)

    def fresh(self, ids) -> np.ndarray:
        """Whether each id was taken by a row new to the warehouse (one this import stores)."""
        found = self._read(ids)
        return np.isin(np.asarray(ids, dtype=np.int64), found.loc[found["fresh"].astype(bool), "id"].to_numpy())

    def take(self, ids, first_lines, fresh) -> None:
        """Record ids that no good row has taken yet, each once."""
        bulk.bulk_insert(self._conn, _taken, pd.DataFrame({
            "id": np.asarray(ids, dtype=np.int64), "first_line": np.asarray(first_lines, dtype=np.int64),
            "fresh": np.asarray(fresh, dtype=bool)}))

    def drop(self) -> None:
        _taken.drop(self._conn)

    def _read(self, ids) -> pd.DataFrame:
        wanted = np.unique(np.asarray(ids, dtype=np.int64))
        if not len(wanted):
            return pd.DataFrame({"id": pd.Series(dtype="int64"), "first_line": pd.Series(dtype="int64"),
                                 "fresh": pd.Series(dtype=bool)})
        if self._conn.dialect.name == "postgresql":
            parts = [_taken.c.id == sa.any_(sa.literal(wanted.tolist(), sa.ARRAY(sa.BigInteger)))]
        else:
            parts = [_taken.c.id.in_(part.tolist())
                     for part in np.array_split(wanted, -(-len(wanted) // _IDS_PER_QUERY))]
        return pd.concat([bulk.read_frame(self._conn, sa.select(_taken).where(where)) for where in parts],
                         ignore_index=True)
