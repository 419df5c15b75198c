"""card_memory_states in the warehouse: what is new since the last run, the stored states it continues,
the histories to replay, and the writes that switch states and progress together.

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

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, reads, tables
from learning_pipelines.domain import fsrs
from learning_pipelines.domain.memory_states import CARD, LearnerWeights

_KEY_CHUNK = 2000
states, progress_table, logs = tables.card_memory_states, tables.card_memory_state_progress, tables.review_logs
replays_table = tables.card_memory_state_replays


@dataclasses.dataclass(frozen=True)
class Progress:
    covered_seq: int  # every review numbered up to here is in the states, and no more can appear
    applied_seq: int  # the highest number in the states
    pending_xids: list[str]  # transactions in flight when applied_seq was read (PostgreSQL)
    as_of: dt.datetime  # every review committed before this is in the states
    global_version: int | None
    own_trained_at: dt.datetime | None
    prefs_updated_at: dt.datetime | None


def lock(conn: sa.Connection) -> None:
    """One update at a time: a second run waits here (on SQLite at most the 30 s busy timeout, then it
    fails and is retried), then finds the first one's work done."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('card_memory_states'))"))
    else:  # any write statement takes SQLite's single write lock
        conn.execute(progress_table.update().where(sa.false()).values(progress_id=progress_table.c.progress_id))


def lock_learners(conn: sa.Connection) -> None:
    """Taken by a learner shard before it rewrites its learners' states: shards run side by side, but
    never beside an update (lock), which reads and writes states of any learner."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock_shared(hashtext('card_memory_states'))"))
    else:
        lock(conn)


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


def new_reviews(conn: sa.Connection, after_seq: int, upto_seq: int) -> pd.DataFrame:
    """Reviews numbered in (after_seq, upto_seq] with their learner's calendar, in time order."""
    return reads.reviews_with_calendar(conn, after_seq=after_seq, upto_seq=upto_seq)


def stored_states(conn: sa.Connection, after_seq: int, upto_seq: int) -> pd.DataFrame:
    """The stored states of the cards that got reviews numbered in (after_seq, upto_seq], with their calendar."""
    touched = (sa.select(logs.c.user_id, logs.c.concept_id).distinct()
               .where(logs.c.ingest_seq > after_seq, logs.c.ingest_seq <= upto_seq).subquery())
    users = tables.users
    return bulk.read_frame(conn, sa.select(
        states.c.user_id, states.c.concept_id, states.c.stability_days, states.c.difficulty, states.c.n_reviews,
        states.c.first_rating, states.c.last_review_at, users.c.timezone, users.c.day_start_hour,
    ).join(touched, sa.and_(touched.c.user_id == states.c.user_id, touched.c.concept_id == states.c.concept_id))
     .join(users, users.c.user_id == states.c.user_id))


def review_counts(conn: sa.Connection, cards: pd.DataFrame) -> pd.DataFrame:
    """user_id, concept_id, n_stored_reviews: every review held now for each of these cards."""
    if cards.empty:
        return cards.assign(n_stored_reviews=pd.Series(dtype="int64"))
    if conn.dialect.name == "postgresql":  # one index probe per card and partition, never a scan
        return pd.DataFrame(conn.execute(sa.text(
            "SELECT k.user_id, k.concept_id, (SELECT count(*) FROM review_logs r WHERE r.user_id = k.user_id "
            "AND r.concept_id = k.concept_id) AS n_stored_reviews "
            "FROM unnest(CAST(:users AS bigint[]), CAST(:concepts AS bigint[])) AS k(user_id, concept_id)"),
            _key_arrays(cards)).all(), columns=["user_id", "concept_id", "n_stored_reviews"])
    keys = list(cards[CARD].itertuples(index=False, name=None))
    return pd.concat([bulk.read_frame(conn, sa.select(logs.c.user_id, logs.c.concept_id,
                                                      sa.func.count().label("n_stored_reviews"))
                                      .where(sa.tuple_(logs.c.user_id, logs.c.concept_id).in_(keys[i:i + _KEY_CHUNK]))
                                      .group_by(logs.c.user_id, logs.c.concept_id))
                      for i in range(0, len(keys), _KEY_CHUNK)], ignore_index=True)


def learner_histories(conn: sa.Connection, user_ids, concept_from: int | None = None,
                      concept_to: int | None = None) -> pd.DataFrame:
    """Every review of these learners (of their cards with concept_id in [concept_from, concept_to)) with their
    calendar, in time order."""
    return reads.reviews_with_calendar(conn, user_ids=[int(u) for u in user_ids], concept_from=concept_from,
                                       concept_to=concept_to)


def card_histories(conn: sa.Connection, cards: pd.DataFrame) -> pd.DataFrame:
    """Every review of these cards (user_id, concept_id) with their learner's calendar, in time order."""
    return reads.reviews_with_calendar(conn, cards=cards)


def learner_review_counts(conn: sa.Connection, user_ids) -> pd.DataFrame:
    """user_id, n_reviews of these learners (those with reviews)."""
    return reads.review_counts(conn, [int(u) for u in user_ids])


def card_review_counts(conn: sa.Connection, user_ids) -> pd.DataFrame:
    """user_id, concept_id, n_reviews of every card of these learners."""
    query = (sa.select(logs.c.user_id, logs.c.concept_id, sa.func.count().label("n_reviews"))
             .group_by(logs.c.user_id, logs.c.concept_id))
    return bulk.read_frame_with_ids(conn, query, logs.c.user_id, [int(u) for u in user_ids])


def states_of_learners(conn: sa.Connection, user_ids) -> pd.DataFrame:
    """Every stored state of these learners."""
    ids = [int(u) for u in user_ids]
    return pd.concat([bulk.read_frame(conn, sa.select(states).where(states.c.user_id.in_(ids[i:i + _KEY_CHUNK])))
                      for i in range(0, max(len(ids), 1), _KEY_CHUNK)], ignore_index=True)


def learners_with_reviews(conn: sa.Connection) -> np.ndarray:
    return reads.review_counts(conn)["user_id"].to_numpy(np.int64)


def learner_settings(conn: sa.Connection, user_ids) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(calendars: user_id, timezone, day_start_hour; their stored learning preferences)."""
    users, prefs = tables.users, tables.user_learning_prefs
    calendars, preferences = [], []
    ids = sorted({int(u) for u in user_ids})
    for start in range(0, max(len(ids), 1), _KEY_CHUNK):
        chunk = ids[start:start + _KEY_CHUNK]
        calendars.append(bulk.read_frame(conn, sa.select(users.c.user_id, users.c.timezone, users.c.day_start_hour)
                                         .where(users.c.user_id.in_(chunk))))
        preferences.append(bulk.read_frame(conn, sa.select(prefs).where(prefs.c.user_id.in_(chunk))))
    return pd.concat(calendars, ignore_index=True), pd.concat(preferences, ignore_index=True)


@dataclasses.dataclass(frozen=True)
class CurrentWeights:
    weights: LearnerWeights
    global_version: int | None
    own_trained_at: dt.datetime | None


def current_weights(conn: sa.Connection, user_ids=None) -> CurrentWeights:
    """Latest global weights (FSRS-6 defaults before the first fit) and every learner's own weights
    (only these learners' when `user_ids` is given; own_trained_at is then theirs)."""
    global_params, params = tables.fsrs_global_params, tables.srs_user_params
    latest = conn.execute(sa.select(global_params.c.version, global_params.c.weights)
                          .order_by(global_params.c.version.desc()).limit(1)).first()
    own_query = sa.select(params.c.user_id, params.c.weights, params.c.trained_at).where(params.c.weights.is_not(None))
    own_rows = list((conn.execute(own_query).all() if user_ids is None else
                     bulk.read_frame_with_ids(conn, own_query, params.c.user_id, user_ids).itertuples(index=False)))
    own = {int(u): np.array(json.loads(w), dtype=float) for u, w, _ in own_rows}
    own_versions = {int(u): f"own@{pd.Timestamp(trained_at).isoformat()}" for u, _, trained_at in own_rows}
    weights = LearnerWeights(
        global_weights=np.array(json.loads(latest.weights), dtype=float) if latest else fsrs.DEFAULT_WEIGHTS,
        global_version=f"global#{latest.version}" if latest else "default", own=own, own_versions=own_versions)
    return CurrentWeights(weights, int(latest.version) if latest else None,
                          max((t for _, _, t in own_rows), default=None))


def learners_on_other_weights(conn: sa.Connection, weights: LearnerWeights, user_ids=None) -> np.ndarray:
    """Learners (of `user_ids`, else all) whose stored states were computed with weights other than their
    current ones."""
    query = sa.select(states.c.user_id, states.c.weights_version).distinct()
    used = bulk.read_frame(conn, query) if user_ids is None else \
        bulk.read_frame_with_ids(conn, query, states.c.user_id, user_ids)
    stale = used["weights_version"].to_numpy(object) != weights.version_of(used["user_id"])
    return np.unique(used.loc[stale, "user_id"].to_numpy(np.int64))


def learners_with_new_preferences(conn: sa.Connection, since: dt.datetime | None) -> tuple[np.ndarray, dt.datetime | None]:
    """Learners whose preferences changed after `since` (every learner with preferences when None),
    and the latest change. `updated_at` is stamped by the writer before it commits, so a change that
    commits late can carry an earlier time: the caller looks back PREFERENCES_LOOKBACK."""
    prefs = tables.user_learning_prefs
    query = sa.select(prefs.c.user_id, prefs.c.updated_at)
    changed = bulk.read_frame(conn, query.where(prefs.c.updated_at > since) if since else query)
    return changed["user_id"].to_numpy(np.int64), changed["updated_at"].max() if len(changed) else since


def count(conn: sa.Connection) -> int:
    return reads.row_count(conn, states)


def upsert_states(conn: sa.Connection, frame: pd.DataFrame) -> int:
    """Replace the stored states of these cards."""
    delete_keys(conn, states, frame)
    return bulk.bulk_insert(conn, states, frame)


def _key_arrays(cards: pd.DataFrame) -> dict[str, list[int]]:
    return {"users": cards["user_id"].astype("int64").tolist(), "concepts": cards["concept_id"].astype("int64").tolist()}


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


def replay_requests(conn: sa.Connection) -> pd.DataFrame:
    return bulk.read_frame(conn, sa.select(tables.card_memory_state_replays))


def delete_keys(conn: sa.Connection, table: sa.Table, cards: pd.DataFrame) -> None:
    """Delete the rows of `table` (keyed by user_id, concept_id) of these cards."""
    if cards.empty:
        return
    if conn.dialect.name == "postgresql":  # one index probe per card
        conn.execute(sa.text(f"DELETE FROM {table.name} t USING unnest(CAST(:users AS bigint[]), "
                             "CAST(:concepts AS bigint[])) AS k(user_id, concept_id) "
                             "WHERE t.user_id = k.user_id AND t.concept_id = k.concept_id"), _key_arrays(cards))
        return
    keys = list(cards[CARD].itertuples(index=False, name=None))
    for start in range(0, len(keys), _KEY_CHUNK):
        conn.execute(table.delete().where(sa.tuple_(table.c.user_id, table.c.concept_id)
                                          .in_(keys[start:start + _KEY_CHUNK])))


@dataclasses.dataclass(frozen=True)
class PendingWork:
    """Everything a run must bring into the states, read in the run's transaction."""

    weights: LearnerWeights
    new_reviews: pd.DataFrame  # reviews numbered after the last final number, with calendars
    stored: pd.DataFrame  # stored states of the cards those reviews touch
    reread_upto: int | None  # reviews numbered up to here may be in the states already (re-read window)
    replay_requests: pd.DataFrame  # cards whose history lost a review (card_memory_state_replays)
    learners_to_replay: np.ndarray  # weights changed, or no states yet
    learners_to_reschedule: np.ndarray  # preferences changed: same states, new due times
    next_progress: Progress
    in_flight_scope: str  # whose transactions were counted as in flight (HighWater.in_flight_scope)


# A first run waits this long for transactions in flight when it reads (their reviews may carry
# numbers below what it sees); past it, the next run reads every numbered review again.
FIRST_RUN_SETTLE = dt.timedelta(seconds=30)
PREFERENCES_LOOKBACK = dt.timedelta(hours=1)


def pending_work(conn: sa.Connection) -> PendingWork:
    previous = read_progress(conn)
    high = high_water(conn)
    current = current_weights(conn)
    prefs_since = previous.prefs_updated_at - PREFERENCES_LOOKBACK if previous and previous.prefs_updated_at else None
    new_prefs, prefs_updated_at = learners_with_new_preferences(conn, prefs_since)
    if previous is None:  # the first run replays every card from its history
        read_from, replay = high.seq, learners_with_reviews(conn)
        covered = high.seq if _settled(conn, high.in_flight, FIRST_RUN_SETTLE) else 0
    else:
        read_from = previous.covered_seq
        weights_changed = (current.global_version, current.own_trained_at) != (previous.global_version,
                                                                               previous.own_trained_at)
        replay = learners_on_other_weights(conn, current.weights) if weights_changed else np.zeros(0, np.int64)
        covered = (high.seq if not high.in_flight
                   else previous.applied_seq if transactions_finished(conn, previous.pending_xids)
                   else previous.covered_seq)
    applied = max(high.seq, previous.applied_seq if previous else 0)
    return PendingWork(
        weights=current.weights,
        new_reviews=new_reviews(conn, read_from, high.seq),
        stored=stored_states(conn, read_from, high.seq),
        reread_upto=previous.applied_seq if previous else None,
        replay_requests=replay_requests(conn),
        learners_to_replay=np.asarray(replay, dtype=np.int64),
        learners_to_reschedule=np.setdiff1d(new_prefs, replay) if previous else np.zeros(0, np.int64),
        next_progress=Progress(min(covered, applied), applied, high.in_flight, high.as_of, current.global_version,
                               current.own_trained_at, prefs_updated_at or (previous.prefs_updated_at if previous else None)),
        in_flight_scope=high.in_flight_scope,
    )


def _settled(conn: sa.Connection, xids: list[str], patience: dt.timedelta) -> bool:
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
    return (f"card_memory_states includes reviews up to {progress.as_of:%Y-%m-%d %H:%M:%S} UTC (review #{progress.applied_seq}); "
            f"the warehouse holds reviews up to #{newest} before this run's cutoff {cutoff:%Y-%m-%d %H:%M:%S} UTC")


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
