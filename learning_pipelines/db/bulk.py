"""Set-based reads and writes: COPY on PostgreSQL, executemany on SQLite, never row-at-a-time ORM."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.csv
import sqlalchemy as sa

from learning_pipelines.db import partitions
from learning_pipelines.db.tables import review_logs
from learning_pipelines.db.types import UtcDateTime

_SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def _is_time(column: sa.Column) -> bool:
    return isinstance(column.type, UtcDateTime)


def _is_integer(column: sa.Column) -> bool:
    return isinstance(column.type, sa.Integer)


def _prepared(table: sa.Table, frame: pd.DataFrame, dialect: str) -> pd.DataFrame:
    """The frame's columns that the table has, in the representation the driver expects."""
    unknown = set(frame.columns) - set(table.columns.keys())
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {sorted(unknown)}")
    out = pd.DataFrame(index=frame.index)
    for name in frame.columns:
        column, values = table.columns[name], frame[name]
        if _is_time(column):
            stamps = pd.to_datetime(values, utc=True)
            if dialect == "sqlite":
                out[name] = stamps.dt.strftime(_SQLITE_TIME_FORMAT).where(stamps.notna(), None)
            else:  # microseconds, as PostgreSQL keeps them (truncated, not rounded)
                out[name] = stamps.dt.floor("us").dt.as_unit("us")
        elif _is_integer(column):
            out[name] = pd.array(values, dtype="Int64")
        else:
            out[name] = values
    return out


def _csv(prepared: pd.DataFrame) -> io.BytesIO:
    """The frame as CSV for COPY: NULL as an empty field, an empty string as "". Arrow's writer is about ten
    times faster than pandas'; a column Arrow cannot type (Python objects of mixed kinds) falls back to pandas."""
    buffer = io.BytesIO()
    try:
        table = pyarrow.Table.from_pandas(prepared, preserve_index=False)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError):
        buffer.write(prepared.to_csv(index=False, header=False, na_rep="", quoting=csv.QUOTE_MINIMAL).encode())
    else:
        pyarrow.csv.write_csv(table, buffer, pyarrow.csv.WriteOptions(include_header=False))
    buffer.seek(0)
    return buffer


@dataclasses.dataclass(frozen=True)
class EncodedRows:
    """Rows of a table made ready for the driver (`encode_rows`), to be inserted later by `insert_encoded`: the
    encoding is Python's work and the insert the server's, so a writer can encode the next rows while the server
    takes in these."""

    table: sa.Table
    columns: list[str]
    payload: io.BytesIO | list[tuple]  # CSV for COPY on PostgreSQL; parameter tuples elsewhere
    n_rows: int


def encode_rows(dialect: str, table: sa.Table, frame: pd.DataFrame) -> EncodedRows:
    """`frame`'s rows for `table`, encoded for a connection of `dialect`."""
    prepared = _prepared(table, frame, dialect)
    if dialect == "postgresql":
        payload = _csv(prepared) if len(prepared) else io.BytesIO()
    else:
        payload = list(prepared.astype(object).where(prepared.notna(), None).itertuples(index=False, name=None))
    return EncodedRows(table, list(prepared.columns), payload, len(prepared))


def insert_encoded(conn: sa.Connection, rows: EncodedRows) -> int:
    """Insert `rows` (encode_rows for this connection's dialect) inside the caller's transaction."""
    if rows.n_rows == 0:
        return 0
    column_sql = ", ".join(f'"{c}"' for c in rows.columns)
    if conn.dialect.name == "postgresql":
        statement = f'COPY "{rows.table.name}" ({column_sql}) FROM STDIN WITH (FORMAT csv)'
        cursor = conn.connection.dbapi_connection.cursor()
        rows.payload.seek(0)  # from the start, also when inserted again (into another transaction)
        try:
            cursor.copy_expert(statement, rows.payload)
        except conn.dialect.loaded_dbapi.Error as error:
            # The raw cursor bypasses SQLAlchemy: raise what its execute would (callers catch SQLAlchemyError).
            raise sa.exc.DBAPIError.instance(statement, None, error, conn.dialect.loaded_dbapi.Error,
                                             hide_parameters=True, dialect=conn.dialect) from error
        finally:
            cursor.close()
    else:
        placeholders = ", ".join("?" for _ in rows.columns)
        conn.exec_driver_sql(f'INSERT INTO "{rows.table.name}" ({column_sql}) VALUES ({placeholders})', rows.payload)
    return rows.n_rows


def bulk_insert(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    """Insert every row of `frame` into `table` inside the caller's transaction."""
    if frame.empty:
        return 0
    return insert_encoded(conn, encode_rows(conn.dialect.name, table, frame))


def review_log_months(reviewed_at: pd.Series) -> list[dt.date]:
    """First day of every UTC month the review times fall in: the review_logs partitions they need."""
    stamps = pd.to_datetime(reviewed_at, utc=True).dropna()
    month_codes = np.unique(stamps.dt.year.to_numpy() * 12 + stamps.dt.month.to_numpy() - 1)
    return [dt.date(int(c) // 12, int(c) % 12 + 1, 1) for c in month_codes]


def insert_review_logs(conn: sa.Connection, frame: pd.DataFrame) -> int:
    """Bulk insert into review_logs, creating the month partitions it needs first (PostgreSQL).

    Partitions missing here are created in the caller's transaction. A caller that has already read
    review_logs or written users/concepts creates them before its transaction instead
    (partitions.create_month_partitions): otherwise two such writers deadlock.

    Rows are numbered in `ingest_seq` in frame order: by the column's sequence default on
    PostgreSQL (the transaction takes its id first, so a run that sees the numbers handed out also
    sees the transaction in flight: db/memory_state_progress.py); on SQLite here, from the counter the table's
    trigger uses (which would number them too, one UPDATE per row).
    """
    if frame.empty:
        return 0
    partitions.ensure_month_partitions(conn, review_log_months(frame["reviewed_at"]))
    if conn.dialect.name == "sqlite":
        # The UPDATE takes SQLite's write lock, so the numbers read back are this transaction's alone.
        conn.execute(sa.text("UPDATE review_logs_ingest_counter SET last_seq = last_seq + :n"), {"n": len(frame)})
        last = conn.execute(sa.text("SELECT last_seq FROM review_logs_ingest_counter")).scalar_one()
        frame = frame.assign(ingest_seq=np.arange(last - len(frame) + 1, last + 1, dtype=np.int64))
    elif conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_current_xact_id()"))
    return bulk_insert(conn, review_logs, frame)


def read_frame(conn: sa.Connection, statement: sa.Select) -> pd.DataFrame:
    """Run a select into a DataFrame; UTC time columns come back as datetime64[UTC]."""
    frame = pd.read_sql(statement, conn)
    for column in statement.selected_columns:
        if isinstance(column.type, UtcDateTime) and column.name in frame:
            frame[column.name] = pd.to_datetime(frame[column.name], utc=True, format="ISO8601")
    return frame


def plan_without_jit(conn: sa.Connection) -> None:
    """For the rest of the caller's transaction on PostgreSQL, plans are not JIT-compiled: the batch steps'
    reads by learner ids are costed high enough to trigger it, and compiling took longer than the reads
    (a shard's learners listed with their cards: 0.28 s with it, 0.16 s without)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL jit = off")


# PostgreSQL's binary COPY: a 19-byte header, then per row a field count and each field's length and bytes
# (big-endian), then a 2-byte trailer. With every column fixed-width and non-null, rows are one numpy record.
_COPY_HEADER, _COPY_TRAILER = 19, 2
_POSTGRES_EPOCH_US = 946_684_800 * 10**6  # timestamptz counts microseconds from 2000-01-01 UTC
_BINARY_FIELDS = ((sa.BigInteger, ">i8"), (sa.SmallInteger, ">i2"), (sa.Integer, ">i4"), (sa.Float, ">f8"),
                  (UtcDateTime, ">i8"))


def _binary_field(column: sa.ColumnElement) -> str:
    """The big-endian numpy type of `column` in binary COPY (subclasses first: BigInteger is an Integer)."""
    for kind, code in _BINARY_FIELDS:
        if isinstance(column.type, kind):
            return code
    raise TypeError(f"{column.name}: {column.type} has no fixed width in binary COPY")


def read_frame_fixed_width(conn: sa.Connection, statement: sa.Select) -> pd.DataFrame:
    """read_frame for a select of non-null integer, float and UTC time columns only, many rows: on
    PostgreSQL one binary COPY decoded by numpy (no Python object per value), elsewhere read_frame."""
    if conn.dialect.name != "postgresql":
        return read_frame(conn, statement)
    columns = list(statement.selected_columns)
    record = np.dtype([("n_fields", ">i2")] + [field for i, column in enumerate(columns) for field in
                                                ((f"length_{i}", ">i4"), (column.name, _binary_field(column)))])
    compiled = statement.compile(dialect=conn.dialect)
    cursor = conn.connection.dbapi_connection.cursor()
    buffer = io.BytesIO()
    try:
        sql = cursor.mogrify(str(compiled), compiled.params).decode()
        cursor.copy_expert(f"COPY ({sql}) TO STDOUT (FORMAT binary)", buffer)
    finally:
        cursor.close()
    data = buffer.getbuffer()
    n_rows, left_over = divmod(len(data) - _COPY_HEADER - _COPY_TRAILER, record.itemsize)
    rows = np.frombuffer(data, dtype=record, count=n_rows, offset=_COPY_HEADER)
    widths = [record[column.name].itemsize for column in columns]
    if left_over or any((rows[f"length_{i}"] != width).any() for i, width in enumerate(widths)):
        raise ValueError("read_frame_fixed_width: a selected value is NULL or not of its column's width")
    frame = pd.DataFrame({column.name: rows[column.name].astype(record[column.name].newbyteorder("="))
                          for column in columns})
    for column in columns:
        if isinstance(column.type, UtcDateTime):
            # as datetime64 values, not integers: to_datetime parses integers one by one (40 ms per 200,000)
            microseconds = (frame[column.name].to_numpy() + _POSTGRES_EPOCH_US).view("datetime64[us]")
            frame[column.name] = pd.to_datetime(microseconds.astype("datetime64[ns]"), utc=True)
    return frame


_IDS_PER_IN_LIST = 5000  # SQLite binds each id of an IN list as a parameter; PostgreSQL takes one array
CARDS_PER_IN_LIST = 2000  # SQLite binds two parameters per card (user_id, concept_id) of a tuple IN list


def card_key_arrays(cards: pd.DataFrame) -> dict[str, list[int]]:
    """The cards' user_ids and concept_ids as two parallel lists: the `users` and `concepts` arrays a PostgreSQL
    statement unnests into (user_id, concept_id) keys."""
    return {"users": cards["user_id"].astype("int64").tolist(), "concepts": cards["concept_id"].astype("int64").tolist()}


def read_frame_with_ids(conn: sa.Connection, statement: sa.Select, column: sa.ColumnElement, ids) -> pd.DataFrame:
    """`statement`'s rows whose `column` is one of `ids` (integers), as read_frame gives them, in as
    few queries as the dialect allows whatever the number of ids."""
    return pd.concat([read_frame(conn, statement.where(where)) for where in id_conditions(conn, column, ids)],
                     ignore_index=True)


def delete_with_ids(conn: sa.Connection, table: sa.Table, column: sa.ColumnElement, ids,
                    *conditions: sa.ColumnElement[bool]) -> None:
    """Delete the rows of `table` whose `column` is one of `ids` (integers) and that meet `conditions`,
    inside the caller's transaction."""
    for where in id_conditions(conn, column, ids):
        conn.execute(table.delete().where(where, *conditions))


def id_conditions(conn: sa.Connection, column: sa.ColumnElement, ids) -> list[sa.ColumnElement[bool]]:
    """Conditions that together select `column` in `ids`: one array on PostgreSQL, IN lists on SQLite."""
    wanted = np.unique(np.asarray(ids, dtype=np.int64))
    if conn.dialect.name == "postgresql":
        return [column == sa.any_(sa.literal(wanted.tolist(), sa.ARRAY(sa.BigInteger)))]
    return [column.in_(part.tolist()) for part in np.array_split(wanted, max(1, -(-len(wanted) // _IDS_PER_IN_LIST)))]


def replace_time_window(
    conn: sa.Connection, table: sa.Table, time_column: str, start: dt.datetime, end: dt.datetime, frame: pd.DataFrame
) -> int:
    """Idempotent partitioned write: delete the window [start, end), then insert the frame."""
    column = table.columns[time_column]
    conn.execute(table.delete().where(column >= start, column < end))
    return bulk_insert(conn, table, frame)
