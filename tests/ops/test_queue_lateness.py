"""What the exporter tells operators about revision queues built per rollover window, on SQLite and PostgreSQL:
learners whose rollover passed without their queue and how long ago (per learner shard, 0 when healthy), the queues
current now, and the cutoff-to-ready time of each window build. The alert on it is in test_prometheus_server.py."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from learning_pipelines import settings
from learning_pipelines.db import migrate
from learning_pipelines.db.engine import get_engine
from learning_pipelines.domain.learner_shards import shard_keys, shard_of
from learning_pipelines.observability.exporter import WINDOW_BUILD_BUCKETS, LearningPipelinesCollector, count_learners
from tests.support.queue_windows import current_builds, register, write_builds

SHARDS = shard_keys(settings.LEARNER_SHARDS)
MISSING = "revision_queue_learners_without_todays_queue"
OLDEST = "revision_queue_oldest_missing_rollover_age_seconds"
LONG_AGO = pd.Timestamp("2026-01-01", tz="UTC")  # registered well before any day these tests look at


def _learners(calendars: list[tuple[str, int]], per_calendar: int, first_id: int = 1,
              created_at: pd.Timestamp = LONG_AGO) -> pd.DataFrame:
    """`per_calendar` learners of each calendar (time zone, day_start_hour), ids from `first_id` on."""
    rows = [(first_id + i * len(calendars) + c, zone, hour, created_at) for i in range(per_calendar)
            for c, (zone, hour) in enumerate(calendars)]
    return pd.DataFrame(rows, columns=["user_id", "timezone", "day_start_hour", "created_at"])


class _Clock:
    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def _collector(url: str, now: dt.datetime, **options) -> tuple[LearningPipelinesCollector, _Clock]:
    clock = _Clock(now)
    return LearningPipelinesCollector(dg.DagsterInstance.ephemeral(), get_engine(url), clock=clock, **options), clock


def _scrape(collector: LearningPipelinesCollector) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode()) for s in family.samples}


def _per_shard(values: dict, name: str) -> dict[str, float]:
    found = {dict(labels)["learner_shard"]: value for (sample, labels), value in values.items() if sample == name}
    assert set(found) == set(SHARDS), f"{name} is exported for every learner shard"
    return found


def _expected_per_shard(learners_without_queue: pd.DataFrame, now: dt.datetime) -> tuple[dict, dict]:
    """Per shard: learners, and seconds since the oldest rollover (0 when none), of `current_builds` rows."""
    counts = learners_without_queue.groupby("learner_shard").size()
    oldest = learners_without_queue.groupby("learner_shard")["rollover_at"].min()
    return ({shard: float(counts.get(shard, 0)) for shard in SHARDS},
            {shard: (pd.Timestamp(now) - oldest[shard]).total_seconds() if shard in oldest else 0.0
             for shard in SHARDS})


# The six zones of the issue, and zones with 30- and 45-minute offsets and a daylight-saving change in 2026.
CALENDARS = [("UTC", 4), ("Europe/Berlin", 4), ("America/New_York", 4), ("Asia/Tokyo", 4), ("America/Los_Angeles", 4),
             ("Asia/Kolkata", 4), ("Asia/Kathmandu", 4), ("Pacific/Chatham", 3), ("Australia/Lord_Howe", 2),
             ("America/St_Johns", 0)]


def test_learners_whose_rollover_passed_without_their_queue_are_counted_per_shard(warehouse_url):
    now = dt.datetime(2026, 3, 8, 12, 5, tzinfo=dt.timezone.utc)  # New York's spring-forward day
    learners = _learners(CALENDARS, per_calendar=9)
    register(get_engine(warehouse_url), learners)
    builds = current_builds(learners, now, settings.LEARNER_SHARDS)
    stopped = builds["window_start"] == builds.loc[learners["timezone"] == "Asia/Kolkata", "window_start"].iloc[0]
    write_builds(get_engine(warehouse_url), builds.loc[~stopped])

    collector, clock = _collector(warehouse_url, now)
    values = _scrape(collector)
    expected_missing, expected_oldest = _expected_per_shard(builds.loc[stopped], now)
    assert _per_shard(values, MISSING) == expected_missing
    assert sum(expected_missing.values()) == 9  # Kolkata's learners, alone in their window
    assert _per_shard(values, OLDEST) == pytest.approx(expected_oldest)
    assert max(expected_oldest.values()) == (now - dt.datetime(2026, 3, 7, 22, 30, tzinfo=dt.timezone.utc)).seconds

    # The stopped window is built, late: every learner has their day's queue.
    write_builds(get_engine(warehouse_url), builds.loc[stopped], ready_at=now)
    clock.now = now + dt.timedelta(minutes=1)
    healthy = _scrape(collector)
    assert _per_shard(healthy, MISSING) == dict.fromkeys(SHARDS, 0)
    assert _per_shard(healthy, OLDEST) == dict.fromkeys(SHARDS, 0)


@pytest.mark.parametrize(("now", "zone", "hour", "rollover_at"), [
    # The clocks jump from 02:00 to 02:30: the day starts at the jump.
    (dt.datetime(2026, 10, 3, 16, 40, tzinfo=dt.timezone.utc), "Australia/Lord_Howe", 2,
     dt.datetime(2026, 10, 3, 15, 30, tzinfo=dt.timezone.utc)),
    # The clocks jump from 02:45 to 03:45: 03:00 does not exist.
    (dt.datetime(2026, 9, 26, 15, 10, tzinfo=dt.timezone.utc), "Pacific/Chatham", 3,
     dt.datetime(2026, 9, 26, 14, 0, tzinfo=dt.timezone.utc)),
    # 01:00 occurs twice: the day starts at the first.
    (dt.datetime(2026, 11, 1, 6, 10, tzinfo=dt.timezone.utc), "America/New_York", 1,
     dt.datetime(2026, 11, 1, 5, 0, tzinfo=dt.timezone.utc)),
])
def test_a_rollover_on_a_daylight_saving_change_day_is_judged_at_its_exact_instant(empty_sqlite_url, now, zone, hour,
                                                                                   rollover_at):
    migrate.upgrade(empty_sqlite_url)
    learners = _learners([(zone, hour)], per_calendar=5)
    register(get_engine(empty_sqlite_url), learners)
    values = _scrape(_collector(empty_sqlite_url, now)[0])
    assert sum(_per_shard(values, MISSING).values()) == 5
    assert max(_per_shard(values, OLDEST).values()) == (now - rollover_at).total_seconds()
    # Built in the window of that instant, they have their queue.
    builds = current_builds(learners, now, settings.LEARNER_SHARDS)
    assert set(builds["window_start"]) == {pd.Timestamp(rollover_at)}
    write_builds(get_engine(empty_sqlite_url), builds)
    assert sum(_per_shard(_scrape(_collector(empty_sqlite_url, now)[0]), MISSING).values()) == 0


def test_a_learner_registered_after_their_days_cutoff_is_not_late(empty_sqlite_url):
    """Their first queue comes at their next rollover: no build of their current day took them."""
    migrate.upgrade(empty_sqlite_url)
    now = dt.datetime(2026, 6, 10, 6, 0, tzinfo=dt.timezone.utc)  # UTC learners rolled over at 04:00, cutoff 03:45
    cutoff = pd.Timestamp("2026-06-10 03:45", tz="UTC")
    register(get_engine(empty_sqlite_url), pd.concat([
        _learners([("UTC", 4)], per_calendar=1, first_id=1, created_at=cutoff - pd.Timedelta(seconds=1)),
        _learners([("UTC", 4)], per_calendar=1, first_id=2, created_at=cutoff),
        _learners([("UTC", 4)], per_calendar=1, first_id=3, created_at=pd.Timestamp(now))]))
    values = _scrape(_collector(empty_sqlite_url, now)[0])
    assert sum(_per_shard(values, MISSING).values()) == 1


@pytest.mark.parametrize("empty_url", ["empty_sqlite_url", "empty_postgres_url"])
def test_a_stored_time_zone_that_is_no_iana_key_counts_as_utc(request, empty_url):
    """Learners stored before migration 0014 refused such values: their days follow UTC, as the recipes read them."""
    warehouse_url = request.getfixturevalue(empty_url)
    migrate.upgrade(warehouse_url, "0013")
    bad = ["Mars/Olympus", "america/new_york", "localtime", "+05:30"]
    register(get_engine(warehouse_url), pd.DataFrame({
        "user_id": range(1, len(bad) + 2), "timezone": bad + ["Asia/Tokyo"], "day_start_hour": 4,
        "created_at": LONG_AGO}))
    migrate.upgrade(warehouse_url)
    now = dt.datetime(2026, 6, 10, 6, 0, tzinfo=dt.timezone.utc)
    values = _scrape(_collector(warehouse_url, now)[0])
    assert sum(_per_shard(values, MISSING).values()) == len(bad) + 1
    assert max(_per_shard(values, OLDEST).values()) == 11 * 3600  # Tokyo's day began at 19:00 UTC

    read_as_utc = pd.DataFrame({"user_id": range(1, len(bad) + 1), "timezone": "UTC", "day_start_hour": 4})
    write_builds(get_engine(warehouse_url), current_builds(read_as_utc, now, settings.LEARNER_SHARDS))
    values = _scrape(_collector(warehouse_url, now)[0])
    assert sum(_per_shard(values, MISSING).values()) == 1  # only the Tokyo learner
    assert max(_per_shard(values, OLDEST).values()) == 11 * 3600


def test_learners_are_counted_in_passes_a_page_a_scrape_not_on_every_scrape(warehouse_url):
    """The first pass is read whole; later ones start LEARNER_COUNTS_EVERY after the last ended and read a page of
    learners a scrape, the counts of the last complete pass serving meanwhile."""
    now = dt.datetime(2026, 6, 10, 6, 0, tzinfo=dt.timezone.utc)
    engine = get_engine(warehouse_url)
    register(engine, _learners([("UTC", 4)], per_calendar=3))
    collector, clock = _collector(warehouse_url, now, learner_counts_every=dt.timedelta(minutes=5), learner_page=2)

    def missing() -> float:
        return sum(_per_shard(_scrape(collector), MISSING).values())

    assert missing() == 3  # two pages on the first scrape
    register(engine, _learners([("UTC", 4)], per_calendar=2, first_id=4))
    clock.now = now + dt.timedelta(minutes=4)
    assert missing() == 3  # not read again yet
    clock.now = now + dt.timedelta(minutes=5)
    assert [missing() for _ in range(3)] == [3, 3, 5]  # pages of 2, 2 and 1 learners, then the new counts


def test_a_page_of_learners_is_counted_by_calendar_and_shard_and_recent_ones_kept_apart():
    since = pd.Timestamp("2026-06-08", tz="UTC")
    zones = ["Asia/Kolkata", "UTC"]
    page = pd.DataFrame({"user_id": [1, 2, 3, 4, 5], "zone_code": [1, 1, 0, 1, -1], "day_start_hour": [4, 4, 4, 0, 4],
                         "created_at": [LONG_AGO, LONG_AGO, LONG_AGO, since, LONG_AGO]})
    before, registered_since = count_learners(page, zones, 3, since)
    shard = dict(zip(range(1, 6), (shard_keys(3)[s] for s in shard_of(range(1, 6), 3))))
    expected = pd.DataFrame([("UTC", 4, shard[1]), ("UTC", 4, shard[2]), ("Asia/Kolkata", 4, shard[3])],
                            columns=["timezone", "day_start_hour", "learner_shard"]).value_counts()
    assert before.set_index(["timezone", "day_start_hour", "learner_shard"])["n_learners"].sort_index().to_dict() == \
        expected.sort_index().to_dict()  # learner 5's time zone is not in `zones`: left out
    assert registered_since[["timezone", "day_start_hour", "learner_shard"]].values.tolist() == [["UTC", 0, shard[4]]]
    assert registered_since["created_at"].tolist() == [since]


def test_revision_queue_due_sums_the_queues_current_now(warehouse_url):
    """The queues of every learner's current day, not those of a day that ended, one not begun, or another count of
    learner shards."""
    now = dt.datetime(2026, 6, 10, 12, 0, tzinfo=dt.timezone.utc)
    engine = get_engine(warehouse_url)
    learners = _learners([("UTC", 4), ("Asia/Tokyo", 4), ("America/Los_Angeles", 4)], per_calendar=4)
    register(engine, learners)
    n_shards = settings.LEARNER_SHARDS
    write_builds(engine, current_builds(learners, now, n_shards), due_per_learner=3, overdue_per_learner=1)
    write_builds(engine, current_builds(learners, now - dt.timedelta(days=1), n_shards), due_per_learner=100)
    write_builds(engine, current_builds(learners, now, n_shards, day_offset=1), due_per_learner=100)
    write_builds(engine, current_builds(learners, now, n_shards + 1), due_per_learner=100)

    values = _scrape(_collector(warehouse_url, now)[0])
    assert values[("revision_queue_due", (("kind", "due_today"),))] == 3 * len(learners)
    assert values[("revision_queue_due", (("kind", "overdue"),))] == len(learners)
    assert sum(_per_shard(values, MISSING).values()) == 0


def test_window_build_times_are_those_of_the_builds_ready_in_the_last_day(warehouse_url):
    now = dt.datetime(2026, 6, 10, 12, 0, tzinfo=dt.timezone.utc)
    engine = get_engine(warehouse_url)
    learners = _learners([("UTC", 4), ("Asia/Tokyo", 4)], per_calendar=1)
    register(engine, learners)
    builds = current_builds(learners, now, settings.LEARNER_SHARDS)
    utc, tokyo = builds.loc[learners["timezone"] == "UTC"], builds.loc[learners["timezone"] == "Asia/Tokyo"]
    write_builds(engine, utc, ready_at=dt.datetime(2026, 6, 10, 3, 47, tzinfo=dt.timezone.utc))  # 120 s from cutoff
    write_builds(engine, tokyo, ready_at=dt.datetime(2026, 6, 9, 19, 30, tzinfo=dt.timezone.utc))  # 2700 s
    write_builds(engine, current_builds(learners, now - dt.timedelta(days=2), settings.LEARNER_SHARDS))  # too old

    values = _scrape(_collector(warehouse_url, now)[0])
    buckets = {dict(labels)["le"]: value for (name, labels), value in values.items()
               if name == "revision_queue_window_build_seconds_bucket"}
    assert buckets == {**{str(float(b)): (b >= 120) + (b >= 2700) for b in WINDOW_BUILD_BUCKETS}, "+Inf": 2}
    assert values[("revision_queue_window_build_seconds_gcount", ())] == 2
    assert values[("revision_queue_window_build_seconds_gsum", ())] == 120 + 2700


def test_a_warehouse_stopped_before_migration_0014_shows_its_queues_but_no_learner_counts(empty_sqlite_url):
    migrate.upgrade(empty_sqlite_url, "0013")
    register(get_engine(empty_sqlite_url), _learners([("UTC", 4)], per_calendar=2))
    values = _scrape(_collector(empty_sqlite_url, dt.datetime(2026, 6, 10, 12, 0, tzinfo=dt.timezone.utc))[0])
    assert values[("learning_pipelines_warehouse_up", ())] == 1
    assert values[("revision_queue_due", (("kind", "due_today"),))] == 0
    assert not [name for name, _ in values if name in (MISSING, OLDEST)]
