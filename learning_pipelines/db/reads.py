"""Reads shared by several assets."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.db.learner_calendars import FALLBACK_TIME_ZONE, calendars
from learning_pipelines.domain import learner_shards
from learning_pipelines.domain.chunking import chunks


def reviews_with_calendar(conn: sa.Connection, start: dt.datetime | None = None, end: dt.datetime | None = None,
                          user_ids: list[int] | None = None, after_seq: int | None = None,
                          upto_seq: int | None = None, cards: pd.DataFrame | None = None,
                          concept_from: int | None = None, concept_to: int | None = None) -> pd.DataFrame:
    """Reviews in [start, end) (of these learners; of these cards: user_id, concept_id; with concept_id in
    [concept_from, concept_to); numbered in (after_seq, upto_seq]) with their learner's time zone (UTC for one that
    is not a key of tzdata: db/learner_calendars.py) and day start, in time order (reviewed_at, then id)."""
    logs = tables.review_logs
    query = (sa.select(logs.c.id, logs.c.user_id, logs.c.concept_id, logs.c.rating, logs.c.reviewed_at,
                       logs.c.ingest_seq, calendars.c.timezone, calendars.c.day_start_hour)
             .join(calendars, calendars.c.user_id == logs.c.user_id))
    if start is not None:
        query = query.where(logs.c.reviewed_at >= start)
    if end is not None:
        query = query.where(logs.c.reviewed_at < end)
    if after_seq is not None:
        query = query.where(logs.c.ingest_seq > after_seq)
    if upto_seq is not None:
        query = query.where(logs.c.ingest_seq <= upto_seq)
    query = query.where(*concept_range(logs.c.concept_id, concept_from, concept_to))
    if cards is not None:
        frame = _read_cards(conn, query, cards)
    elif user_ids is not None:
        frame = bulk.read_frame_with_ids(conn, query, logs.c.user_id, user_ids)
    else:
        frame = bulk.read_frame(conn, query)
    for column in ("id", "user_id", "concept_id", "rating", "day_start_hour"):
        frame[column] = frame[column].astype("int64")
    return frame.sort_values(["reviewed_at", "id"], kind="stable").reset_index(drop=True)


def concept_range(column: sa.ColumnElement, concept_from: int | None, concept_to: int | None) -> list:
    """Conditions for `column` in [concept_from, concept_to); None leaves that side open."""
    return ([column >= concept_from] if concept_from is not None else []) + \
        ([column < concept_to] if concept_to is not None else [])




def _read_cards(conn: sa.Connection, query: sa.Select, cards: pd.DataFrame) -> pd.DataFrame:
    """`query`'s review_logs rows of these cards (user_id, concept_id) only."""
    logs = tables.review_logs
    keys = cards[["user_id", "concept_id"]].drop_duplicates()
    if keys.empty:
        return bulk.read_frame(conn, query.where(sa.false()))
    if conn.dialect.name == "postgresql":  # one index probe per card and partition
        key_table = sa.func.unnest(sa.literal(keys["user_id"].astype("int64").tolist(), sa.ARRAY(sa.BigInteger)),
                                   sa.literal(keys["concept_id"].astype("int64").tolist(), sa.ARRAY(sa.BigInteger))) \
            .table_valued(sa.column("user_id", sa.BigInteger), sa.column("concept_id", sa.BigInteger)).render_derived()
        return bulk.read_frame(conn, query.join(key_table, sa.and_(key_table.c.user_id == logs.c.user_id,
                                                                   key_table.c.concept_id == logs.c.concept_id)))
    pairs = list(keys.itertuples(index=False, name=None))
    return pd.concat([bulk.read_frame(conn, query.where(sa.tuple_(logs.c.user_id, logs.c.concept_id)
                                                        .in_(part)))
                      for part in chunks(pairs, bulk.CARDS_PER_IN_LIST)], ignore_index=True)


def learner_ids(conn: sa.Connection) -> np.ndarray:
    """Every learner's user_id (one column of users: what splitting learners into shards starts from)."""
    return bulk.read_frame_fixed_width(conn, sa.select(tables.users.c.user_id))["user_id"].to_numpy(np.int64)


def shard_learners(conn: sa.Connection, shard: str) -> np.ndarray:
    """The user_ids of every learner in the learner shard `shard` (a key of domain.learner_shards)."""
    return learner_shards.learners_in(learner_ids(conn), shard)


def learners_with_calendars(conn: sa.Connection, in_use: pd.DataFrame) -> np.ndarray:
    """The user_ids of every learner whose calendar, as the recipes read it (learner_calendars.calendars), is one of
    `in_use` (timezone, day_start_hour), by the index on users (timezone, day_start_hour). A learner whose stored
    time zone is no key of tzdata reads as UTC: found by a scan of `users`, only when `in_use` has UTC calendars."""
    users, zones = tables.users, tables.time_zones
    pairs = [(zone, int(hour)) for zone, hour in in_use[["timezone", "day_start_hour"]].itertuples(index=False)]
    if not pairs:
        return np.array([], dtype=np.int64)
    found = [bulk.read_frame(conn, sa.select(users.c.user_id).where(
        sa.tuple_(users.c.timezone, users.c.day_start_hour).in_(part)))["user_id"] for part in chunks(pairs, 500)]
    utc_hours = [hour for zone, hour in pairs if zone == FALLBACK_TIME_ZONE]
    if utc_hours:
        found.append(bulk.read_frame(conn, sa.select(users.c.user_id).where(
            users.c.day_start_hour.in_(utc_hours),
            ~sa.exists().where(zones.c.name == users.c.timezone)))["user_id"])
    return np.sort(np.concatenate([part.to_numpy(np.int64) for part in found]))


def review_counts(conn: sa.Connection, user_ids=None) -> pd.DataFrame:
    """user_id, n_reviews for every learner with reviews (of `user_ids`, when given)."""
    logs = tables.review_logs
    query = sa.select(logs.c.user_id, sa.func.count().label("n_reviews")).group_by(logs.c.user_id)
    return bulk.read_frame(conn, query) if user_ids is None else \
        bulk.read_frame_with_ids(conn, query, logs.c.user_id, user_ids)


def concept_graph(conn: sa.Connection) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(concept ids, concept_theme_map, concept_edges)."""
    return (bulk.read_frame(conn, sa.select(tables.concepts.c.concept_id)),
            bulk.read_frame(conn, sa.select(tables.concept_theme_map)),
            bulk.read_frame(conn, sa.select(tables.concept_edges)))


# Below this many rows counting is cheap; above it a scrape every 15 s must not scan the table.
EXACT_COUNT_LIMIT = 1_000_000


def row_count(conn: sa.Connection, table: sa.Table) -> int:
    """Rows in `table` (partitions included): exact on SQLite and for small tables; on a large
    PostgreSQL table, the planner's estimate (pg_class.reltuples, kept by autovacuum/ANALYZE)."""
    exact = sa.select(sa.func.count()).select_from(table)
    if conn.dialect.name != "postgresql":
        return conn.execute(exact).scalar_one()
    # Partitions (and plain tables) hold the statistics; never-analyzed ones (-1) count as unknown.
    known = conn.execute(sa.text(
        "SELECT coalesce(sum(c.reltuples) FILTER (WHERE c.reltuples >= 0), 0) FROM pg_class c WHERE c.relkind = 'r' "
        "AND (c.oid = to_regclass(:t) OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(:t)))"
    ), {"t": table.name}).scalar_one()
    return int(known) if known >= EXACT_COUNT_LIMIT else conn.execute(exact).scalar_one()


def learners_with_ref_prefix(conn: sa.Connection, prefix: str) -> int:
    """Learners whose users.external_ref starts with `prefix` (e.g. the demo's simulated ones)."""
    users = tables.users
    return conn.execute(sa.select(sa.func.count()).select_from(users)
                        .where(users.c.external_ref.startswith(prefix, autoescape=True))).scalar_one()


def review_time_bounds(conn: sa.Connection) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The earliest and latest reviewed_at in review_logs (None, None without reviews)."""
    logs = tables.review_logs
    return tuple(conn.execute(sa.select(sa.func.min(logs.c.reviewed_at), sa.func.max(logs.c.reviewed_at))).one())


def exact_row_counts(conn: sa.Connection) -> dict[str, int]:
    """Every warehouse table's rows, counted (for small warehouses: the demo's report)."""
    return {name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for name, table in tables.metadata.tables.items()}


# The distinct stored calendars by a skip scan of the index on users (timezone, day_start_hour) (migration 0017): one
# probe per calendar, not a read of every learner (a window's build asks, 96 windows x shards a day); then read as
# learner_calendars.calendars reads them (a time zone that is no key of time_zones as UTC).
_CALENDARS_IN_USE_SKIPPING = f"""
    WITH RECURSIVE stored (timezone, day_start_hour) AS (
        (SELECT timezone, day_start_hour FROM users ORDER BY timezone, day_start_hour LIMIT 1)
        UNION ALL
        SELECT next.timezone, next.day_start_hour FROM stored CROSS JOIN LATERAL (
            SELECT timezone, day_start_hour FROM users
            WHERE (timezone, day_start_hour) > (stored.timezone, stored.day_start_hour)
            ORDER BY timezone, day_start_hour LIMIT 1) next
    )
    SELECT DISTINCT COALESCE(time_zones.name, '{FALLBACK_TIME_ZONE}') AS timezone, stored.day_start_hour
    FROM stored LEFT JOIN time_zones ON time_zones.name = stored.timezone"""


def calendars_in_use(conn: sa.Connection) -> pd.DataFrame:
    """Every distinct (timezone, day_start_hour) of the learners, a time zone that is not a key of tzdata read as UTC
    (db/learner_calendars.py): what decides when someone rolls over."""
    if conn.dialect.name == "postgresql":
        in_use = pd.DataFrame(conn.execute(sa.text(_CALENDARS_IN_USE_SKIPPING)).all(),
                              columns=["timezone", "day_start_hour"])
    else:
        in_use = bulk.read_frame(conn, sa.select(calendars.c.timezone, calendars.c.day_start_hour).distinct())
    return in_use.astype({"day_start_hour": int}).sort_values(["timezone", "day_start_hour"], ignore_index=True)
