"""card_memory_states' progress: how far the stored states go in the warehouse's stream of reviews.

"New" follows `review_logs.ingest_seq`. On PostgreSQL numbers are handed out before commit, so a
transaction still running when a run reads the highest number may later commit lower ones. A run
therefore records the transactions in flight at its read, and the next run reads again from the
last number that was final (every earlier transaction finished) — the re-read reviews are told
apart from new ones by each card's review count (domain/memory_states.split_pending).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables

progress_table, logs = tables.card_memory_state_progress, tables.review_logs


@dataclasses.dataclass(frozen=True)
class Progress:
    covered_seq: int  # every review numbered up to here is in the states, and no more can appear
    applied_seq: int  # the highest number in the states
    pending_xids: list[str]  # transactions in flight when applied_seq was read (PostgreSQL)
    as_of: dt.datetime  # every review committed before this is in the states
    global_version: int | None
    own_trained_at: dt.datetime | None
    prefs_updated_at: dt.datetime | None


def read_progress(conn: sa.Connection) -> Progress | None:
    row = conn.execute(sa.select(progress_table)).mappings().first()
    if row is None:
        return None
    return Progress(int(row["covered_seq"]), int(row["applied_seq"]), json.loads(row["pending_xids"]), row["as_of"],
                    row["global_version"], row["own_trained_at"], row["prefs_updated_at"])


def write_progress(conn: sa.Connection, progress: Progress) -> None:
    conn.execute(progress_table.delete())
    conn.execute(progress_table.insert().values(
        progress_id=1, **{**dataclasses.asdict(progress), "pending_xids": json.dumps(progress.pending_xids)}))


# Which transactions a run counts as in flight (HighWater.in_flight_scope), as its metadata and `deploy verify` say.
IN_FLIGHT_DATABASE = "this database"
IN_FLIGHT_SERVER = "every database on the server"
IN_FLIGHT_NONE = "none (SQLite has one writer at a time)"


# A role sees the transaction ids of other roles' sessions in pg_stat_activity only as a superuser or a member of
# pg_read_all_stats (they read NULL otherwise): only then can another database's transactions be told apart.
_SEES_EVERY_SESSION = "pg_has_role('pg_read_all_stats', 'USAGE')"


# One statement, so the high-water mark, the snapshot and the sessions are read together. A transaction counts
# as in flight when the snapshot lists it (it may hold reviews numbered below what the snapshot shows), unless a
# session or prepared transaction of another database holds it; and when a session or prepared transaction of this
# database holds it, even above the snapshot's xmax, whose ids pg_snapshot_xip leaves out although they are just as
# invisible. Excluding others' rather than keeping only ours: one that ends between the snapshot and the read of
# the sessions stays counted, and is found finished by the next run. pg_stat_activity gives 32-bit xids: each
# becomes the xid8 within 2^31 of the snapshot's xmax, as every transaction still running is.
_HIGH_WATER_SQL = f"""
WITH snapshot AS (SELECT pg_current_snapshot() AS taken, {_SEES_EVERY_SESSION} AS sees_every_session),
transactions AS (
    SELECT backend_xid AS xid,
           coalesce(datid = (SELECT oid FROM pg_database WHERE datname = current_database()), false) AS here
    FROM pg_stat_activity WHERE backend_xid IS NOT NULL
    UNION ALL
    SELECT transaction, database = current_database() FROM pg_prepared_xacts),
in_flight AS (
    SELECT x FROM snapshot, pg_snapshot_xip(snapshot.taken) x
    WHERE NOT (snapshot.sees_every_session AND xid(x) IN (SELECT xid FROM transactions WHERE NOT here))
    UNION
    SELECT (top.xmax + ((t.xid::text::bigint - top.xmax % 4294967296 + 6442450944) % 4294967296 - 2147483648))
           ::text::xid8
    FROM transactions t, (SELECT pg_snapshot_xmax(taken)::text::bigint AS xmax FROM snapshot) top
    WHERE t.here)
SELECT (SELECT coalesce(max(ingest_seq), 0) FROM review_logs),
       ARRAY(SELECT x::text FROM in_flight WHERE x IS DISTINCT FROM pg_current_xact_id_if_assigned() ORDER BY x),
       statement_timestamp(), (SELECT sees_every_session FROM snapshot)
"""


@dataclasses.dataclass(frozen=True)
class HighWater:
    seq: int  # the highest ingest_seq committed
    in_flight: list[str]  # transactions running at that moment: their reviews may carry lower numbers
    as_of: dt.datetime
    in_flight_scope: str  # whose transactions `in_flight` lists: IN_FLIGHT_DATABASE, _SERVER or _NONE


def high_water(conn: sa.Connection) -> HighWater:
    """The review high-water mark, read in one snapshot with the transactions it may not include yet: this
    database's where the role sees every session, else (IN_FLIGHT_SERVER) every database's on the server."""
    if conn.dialect.name != "postgresql":  # one writer at a time: a visible number is final
        as_of = dt.datetime.now(dt.timezone.utc)
        return HighWater(int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(logs.c.ingest_seq), 0))).scalar_one()),
                         [], as_of, IN_FLIGHT_NONE)
    seq, in_flight, as_of, sees_every_session = conn.execute(sa.text(_HIGH_WATER_SQL)).one()
    return HighWater(int(seq), list(in_flight), as_of, IN_FLIGHT_DATABASE if sees_every_session else IN_FLIGHT_SERVER)


@dataclasses.dataclass(frozen=True)
class InFlightScope:
    """Whose open transactions a role's runs count as in flight, and how to narrow them to the warehouse."""

    label: str  # IN_FLIGHT_DATABASE, _SERVER or _NONE
    grant: str | None  # the statement that would make it IN_FLIGHT_DATABASE, where it is not


def in_flight_scope(conn: sa.Connection) -> InFlightScope:
    """Whose transactions card_memory_states counts as in flight on this connection's role (see high_water)."""
    if conn.dialect.name != "postgresql":
        return InFlightScope(IN_FLIGHT_NONE, None)
    sees_every_session, grant = conn.execute(sa.text(
        f"SELECT {_SEES_EVERY_SESSION}, format('GRANT pg_read_all_stats TO %I', current_user)")).one()
    return InFlightScope(IN_FLIGHT_DATABASE, None) if sees_every_session else InFlightScope(IN_FLIGHT_SERVER, grant)


def transactions_finished(conn: sa.Connection, xids: list[str]) -> bool:
    if not xids:
        return True
    running = conn.execute(sa.text(
        "SELECT count(*) FROM unnest(CAST(:xids AS xid8[])) x WHERE pg_xact_status(x) = 'in progress'"),
        {"xids": xids}).scalar_one()
    return running == 0


def settled(conn: sa.Connection, xids: list[str], patience: dt.timedelta) -> bool:
    """Whether these transactions finish within `patience` (polled)."""
    deadline = time.monotonic() + patience.total_seconds()
    while not transactions_finished(conn, xids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def why_not_covering(conn: sa.Connection, cutoff: dt.datetime) -> str | None:
    """Why the stored states may miss a review stored before `cutoff`; None when they include them all."""
    progress = read_progress(conn)
    if progress is None:
        return "card_memory_states has never been materialized"
    if progress.as_of >= cutoff:
        return None
    newest = high_water(conn).seq
    if newest == progress.applied_seq and progress.covered_seq == progress.applied_seq:
        return None  # nothing reached the warehouse since the states were brought up to date
    return (f"card_memory_states includes reviews up to {progress.as_of:%Y-%m-%d %H:%M:%S} UTC "
            f"(review #{progress.applied_seq}); the warehouse holds reviews up to #{newest} before this run's cutoff "
            f"{cutoff:%Y-%m-%d %H:%M:%S} UTC")


def months_beyond_states(conn: sa.Connection) -> pd.DataFrame:
    """month (YYYY-MM-01, UTC), n_reviews, highest_seq of the reviews card_memory_states may not include
    yet (numbered after its last final number)."""
    progress = read_progress(conn)
    if conn.dialect.name == "postgresql":
        month = sa.func.to_char(sa.func.timezone("UTC", logs.c.reviewed_at), "YYYY-MM-01")
    else:
        month = sa.func.strftime("%Y-%m-01", logs.c.reviewed_at)
    return bulk.read_frame(conn, sa.select(month.label("month"), sa.func.count().label("n_reviews"),
                                           sa.func.max(logs.c.ingest_seq).label("highest_seq"))
                           .where(logs.c.ingest_seq > (progress.covered_seq if progress else 0))
                           .group_by(month).order_by(month))
