"""A learner's time zone is a key of tzdata: the database refuses any other on both backends, every writer of
learners checks it first, and a learner stored with another before that is read as UTC, alone (issue 27, item 7)."""

import datetime as dt
import re
import sqlite3

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command

from learning_pipelines.cli import main
from learning_pipelines.db import bulk, learner_calendars, migrate, reads, tables
from learning_pipelines.db.engine import get_engine
from learning_pipelines.db.learner_settings import calendars_and_preferences
from learning_pipelines.defs.card_memory_states import card_memory_states
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.review_logs import review_logs
from learning_pipelines.defs.revision_queues import revision_queues
from learning_pipelines.demo import load_platform
from learning_pipelines.domain import time_zones
from learning_pipelines.domain.learner_shards import shard_of
from learning_pipelines.domain.simulate import simulate_platform
from learning_pipelines.ingest.importer import import_review_file
from tests.support.bad_time_zones import BAD_TIME_ZONES

BACKENDS = ["sqlite", "postgresql"]
REFUSED_BY_THE_DATABASE = (sa.exc.IntegrityError,)


def _url_at(request, backend: str, revision: str) -> str:
    url = request.getfixturevalue("empty_sqlite_url" if backend == "sqlite" else "empty_postgres_url")
    command.upgrade(migrate.alembic_config(url), revision)
    return url


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


# --- the database refuses them ---

def test_the_time_zones_table_holds_tzdatas_keys(warehouse_engine):
    with warehouse_engine.connect() as conn:
        stored = set(conn.execute(sa.select(tables.time_zones.c.name)).scalars())
    assert stored == time_zones.tzdata_keys()


def test_the_database_refuses_a_time_zone_that_is_not_a_key_however_it_is_written(warehouse_engine):
    users = tables.users
    with warehouse_engine.begin() as conn:
        conn.execute(users.insert().values(user_id=1))  # the default, UTC
        conn.execute(users.insert().values(user_id=2, timezone="Pacific/Chatham"))
        bulk.bulk_insert(conn, users, pd.DataFrame({"user_id": [3], "timezone": ["Asia/Kathmandu"]}))
    for user_id, bad in enumerate(BAD_TIME_ZONES, start=10):
        for write in (users.insert().values(user_id=user_id, timezone=bad),
                      pd.DataFrame({"user_id": [user_id], "timezone": [bad]}),  # COPY on PostgreSQL
                      users.update().where(users.c.user_id == 2).values(timezone=bad)):
            with pytest.raises(REFUSED_BY_THE_DATABASE), warehouse_engine.begin() as conn:
                bulk.bulk_insert(conn, users, write) if isinstance(write, pd.DataFrame) else conn.execute(write)
    with warehouse_engine.connect() as conn:
        assert conn.execute(sa.select(users.c.user_id, users.c.timezone).order_by(users.c.user_id)).all() == [
            (1, "UTC"), (2, "Pacific/Chatham"), (3, "Asia/Kathmandu")]


def test_sqlite_refuses_it_on_a_connection_that_leaves_foreign_keys_off(empty_sqlite_url):
    migrate.upgrade(empty_sqlite_url)
    connection = sqlite3.connect(sa.engine.make_url(empty_sqlite_url).database)  # SQLite's default: foreign keys off
    try:
        assert connection.execute("PRAGMA foreign_keys").fetchone() == (0,)
        connection.execute("INSERT INTO users (user_id, timezone) VALUES (1, 'Europe/Berlin')")
        with pytest.raises(sqlite3.IntegrityError, match="users.timezone is not a key of time_zones"):
            connection.execute("INSERT INTO users (user_id, timezone) VALUES (2, 'america/new_york')")
        with pytest.raises(sqlite3.IntegrityError, match="users.timezone is not a key of time_zones"):
            connection.execute("UPDATE users SET timezone = '+05:30' WHERE user_id = 1")
        assert connection.execute("SELECT user_id, timezone FROM users").fetchall() == [(1, "Europe/Berlin")]
    finally:
        connection.close()


def test_the_database_refuses_a_negative_interval(warehouse_engine):
    row = {"review_id": 1, "reviewed_at": dt.datetime(2026, 4, 4, 14, 5, tzinfo=dt.timezone.utc), "user_id": 1,
           "concept_id": 1, "review_number": 2}
    with pytest.raises(REFUSED_BY_THE_DATABASE), warehouse_engine.begin() as conn:
        conn.execute(tables.review_log_intervals.insert().values(**row, elapsed_days=-1))
    with warehouse_engine.begin() as conn:
        conn.execute(tables.review_log_intervals.insert().values(**row, elapsed_days=0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_learners_and_intervals_stored_before_the_migration_do_not_fail_it(request, backend):
    """Migration 0014 checks new writes only: what was stored stays, can be corrected, and the way back works."""
    url = _url_at(request, backend, "0013")
    engine = sa.create_engine(url)
    bad_learners = dict(enumerate(BAD_TIME_ZONES, start=1))
    with engine.begin() as conn:
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": [*bad_learners, 99],
                                                           "timezone": [*bad_learners.values(), "Asia/Tokyo"]}))
        conn.execute(tables.review_log_intervals.insert().values(
            review_id=1, reviewed_at=dt.datetime(2026, 4, 4, 14, 5, tzinfo=dt.timezone.utc), user_id=1, concept_id=1,
            review_number=2, elapsed_days=-1))
    engine.dispose()

    migrate.upgrade(url)
    engine = get_engine(url)
    users = tables.users
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(users.c.user_id, users.c.timezone)).all())
        assert stored == {**bad_learners, 99: "Asia/Tokyo"}
        assert conn.execute(sa.select(tables.review_log_intervals.c.elapsed_days)).scalars().all() == [-1]
        fallen_back = learner_calendars.fallbacks_among(conn, [*bad_learners, 99])
        assert dict(zip(fallen_back["user_id"], fallen_back["timezone"])) == bad_learners
        calendars, _ = calendars_and_preferences(conn, [*bad_learners, 99])
        assert calendars.set_index("user_id")["timezone"].to_dict() == {**dict.fromkeys(bad_learners, "UTC"),
                                                                         99: "Asia/Tokyo"}
        # what the rollover windows are made of
        assert reads.calendars_in_use(conn).values.tolist() == [["Asia/Tokyo", 4], ["UTC", 4]]
    with engine.begin() as conn:  # their other settings can change; their time zone only to a key
        conn.execute(users.update().where(users.c.user_id == 1).values(day_start_hour=6))
        conn.execute(users.update().where(users.c.user_id == 2).values(timezone="America/New_York"))
    with pytest.raises(REFUSED_BY_THE_DATABASE), engine.begin() as conn:
        conn.execute(users.update().where(users.c.user_id == 2).values(timezone="Mars/Olympus"))

    command.downgrade(migrate.alembic_config(url), "0013")
    engine.dispose()
    migrate.upgrade(url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(users.c.timezone).where(users.c.user_id == 3)).scalar_one() == "america/new_york"


# --- every writer of learners checks them first ---

def _review_file(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("user_id,card_id,review_rating,review_time,review_duration\n"
                    "7,10,3,2024-05-01T10:00:00Z,4000\n7,10,4,2024-05-03T10:00:00Z,3000\n")
    return path


def test_an_import_registers_learners_only_in_a_time_zone_that_is_a_key(warehouse_engine, tmp_path):
    path = _review_file(tmp_path)
    for bad in BAD_TIME_ZONES:
        with pytest.raises(time_zones.InvalidTimeZone) as refused:
            import_review_file(warehouse_engine, path, register_unknown=True, register_timezone=bad)
        assert str(refused.value).startswith(f"the learners this import registers: time zone {bad!r} is not an IANA key")
    for table in (tables.users, tables.review_logs, tables.review_log_rejects, tables.review_log_imports):
        assert _count(warehouse_engine, table) == 0, table.name

    summary = import_review_file(warehouse_engine, path, register_unknown=True, register_timezone="Asia/Kathmandu")
    assert (summary.n_registered_users, summary.n_loaded) == (1, 2)
    with warehouse_engine.connect() as conn:
        assert conn.execute(sa.select(tables.users.c.user_id, tables.users.c.timezone)).all() == [(7, "Asia/Kathmandu")]


def test_the_import_command_refuses_a_bad_time_zone_in_one_line(empty_sqlite_url, tmp_path, capsys):
    migrate.upgrade(empty_sqlite_url)
    path = _review_file(tmp_path)
    status = main(["import", str(path), "--register-unknown", "--timezone", "America/New_York\n",
                   "--database-url", empty_sqlite_url])
    stderr = capsys.readouterr().err
    assert status == 2 and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert stderr.startswith("error: the learners this import registers: time zone 'America/New_York\\n' is not an "
                             "IANA key of tzdata") and "did you mean 'America/New_York'?" in stderr
    assert main(["import", str(path), "--timezone", "UTC", "--database-url", empty_sqlite_url]) == 2
    assert "--timezone is the time zone of the learners --register-unknown registers" in capsys.readouterr().err
    assert _count(get_engine(empty_sqlite_url), tables.users) == 0


@pytest.fixture(scope="module")
def small_platform():
    return simulate_platform(n_learners=4, n_concepts=10, n_themes=2, n_resources=5, days=10, seed=5)


def _with_time_zone(platform, user_id: int, name: str):
    users = platform.users.copy()
    users.loc[users["user_id"] == user_id, "timezone"] = name
    return type(platform)(**{**platform.__dict__, "users": users})


def test_the_demo_writes_learners_only_in_a_time_zone_that_is_a_key(warehouse_engine, small_platform):
    for bad in BAD_TIME_ZONES:
        with pytest.raises(time_zones.InvalidTimeZone, match=f"^{re.escape(f'simulated learner 3: time zone {bad!r} ')}"):
            load_platform(warehouse_engine, _with_time_zone(small_platform, 3, bad))
    assert _count(warehouse_engine, tables.users) == 0
    assert load_platform(warehouse_engine, small_platform)["users"] == 4


def test_the_demo_command_refuses_a_bad_time_zone_in_one_line(empty_sqlite_url, small_platform, monkeypatch, capsys,
                                                                tmp_path):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("LEARNING_PIPELINES_DATABASE_URL", empty_sqlite_url)
    monkeypatch.setattr("learning_pipelines.demo.simulate_platform",
                        lambda **_: _with_time_zone(small_platform, 2, "+05:30"))
    assert main(["demo", "--learners", "4", "--no-materialize"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.strip() == (f"error: simulated learner 2: time zone '+05:30' is not an IANA key of tzdata "
                              f"{time_zones.TZDATA_VERSION} (e.g. 'America/New_York', 'UTC')")
    assert _count(get_engine(empty_sqlite_url), tables.users) == 0


# --- one learner stored with a bad one is read as UTC, and nobody else notices ---

GOOD_LEARNERS = {8: "America/New_York", 9: "UTC"}  # west of UTC or on it: their day of the UTC date has not ended
CHATHAM_LEARNER = 10  # its day of the UTC date may have ended: in the month's intervals only
MONTH = "2026-04-01"


def _reviews(user_ids) -> pd.DataFrame:
    """Per learner, two cards reviewed at the same four instants: in Pacific/Chatham the middle two are the first
    03:10 and the second 02:50 of 2026-04-05 (its clocks go back from 03:45 to 02:45)."""
    times = pd.to_datetime(["2026-04-03T10:00Z", "2026-04-04T13:25Z", "2026-04-04T14:05Z", "2026-04-06T10:00Z"])
    rows = [{"user_id": user_id, "concept_id": concept_id, "reviewed_at": at, "rating": 3}
            for user_id in user_ids for concept_id in (1, 2) for at in times]
    return pd.DataFrame(rows).assign(id=lambda frame: range(1, len(frame) + 1), review_duration_ms=5000, state=1)


def _shards_of(user_ids) -> list[str]:
    keys = learner_shards.get_partition_keys()
    return sorted({keys[int(i)] for i in shard_of(list(user_ids), len(keys))})


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_learner_stored_with_a_bad_time_zone_falls_back_to_utc_and_the_night_goes_on(request, backend, now):
    url = _url_at(request, backend, "0013")  # stored before the database refused them
    bad_learners = dict(enumerate(BAD_TIME_ZONES, start=1))
    learners = {**bad_learners, **GOOD_LEARNERS, CHATHAM_LEARNER: "Pacific/Chatham"}
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": list(learners), "timezone": list(learners.values()),
                                                           "day_start_hour": 3}))
        bulk.bulk_insert(conn, tables.concepts, pd.DataFrame({"concept_id": [1, 2], "name": ["a", "b"]}))
        bulk.insert_review_logs(conn, _reviews(learners))
    engine.dispose()
    migrate.upgrade(url)
    engine = get_engine(url)
    resources = {"warehouse": Warehouse(database_url=url)}
    queued = [*bad_learners, *GOOD_LEARNERS]

    with dg.DagsterInstance.ephemeral() as instance:
        month = dg.materialize([review_logs], resources=resources, partition_key=MONTH, instance=instance)
        states = dg.materialize([card_memory_states], resources=resources, instance=instance)
        queues = [dg.materialize([revision_queues], resources=resources, instance=instance,
                                 partition_key=dg.MultiPartitionKey({"day": str(now.date()), "shard": shard}))
                  for shard in _shards_of(queued)]
        warnings = [entry.user_message for result in (month, states) for entry in instance.all_logs(result.run_id)
                    if "calendar was read as UTC" in entry.user_message]

    assert month.success and states.success and all(queue.success for queue in queues)
    assert states.asset_materializations_for_node("card_memory_states")[0].metadata[
        "learners_on_utc_calendar_fallback"].value == len(bad_learners)
    assert len(warnings) == 2 * len(bad_learners)
    with engine.connect() as conn:
        logged = bulk.read_frame(conn, sa.select(tables.learner_calendar_fallbacks))
        intervals = bulk.read_frame(conn, sa.select(tables.review_log_intervals))
        stored_states = bulk.read_frame(conn, sa.select(tables.card_memory_states))
        summaries = bulk.read_frame(conn, sa.select(tables.revision_queue_user_summary)
                                    .where(tables.revision_queue_user_summary.c.queue_date == now.date()))
    assert dict(zip(logged["user_id"], logged["timezone"])) == bad_learners
    assert (logged["first_noticed_at"] <= logged["last_noticed_at"]).all()
    # Days counted in UTC for the fallen back, as for the UTC learner; in Chatham the second 02:50 is on the 5th too.
    first_card = intervals.loc[intervals["concept_id"] == 1].sort_values(["user_id", "reviewed_at"])
    elapsed = first_card.groupby("user_id")["elapsed_days"].apply(lambda days: days.fillna(-1).astype(int).tolist())
    assert elapsed.to_dict() == {**dict.fromkeys(bad_learners, [-1, 1, 0, 2]), 8: [-1, 1, 0, 2], 9: [-1, 1, 0, 2],
                                 CHATHAM_LEARNER: [-1, 2, 0, 1]}
    assert len(intervals) == len(_reviews(learners))
    assert set(stored_states["user_id"]) == set(learners)
    assert set(queued) <= set(summaries["user_id"])
