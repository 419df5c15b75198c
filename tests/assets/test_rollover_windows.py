"""Every learner's own night: on each daylight-saving day of 2026, learners in ten zones (and start hours the clocks
jump over or repeat) get their queue for their day from the window holding their rollover, built before it, with
every review stored up to 30 minutes before their rollover in it."""

import datetime as dt

import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.db.engine import get_engine
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.domain import rollovers
from learning_pipelines.domain.learner_calendar import day_start_seconds
from learning_pipelines.domain.learner_shards import shard_of
from learning_pipelines.flows.card_memory_states import bring_up_to_date
from learning_pipelines.flows.revision_queues import build_shards_day
from tests.domain.test_learner_calendar import CALENDARS, DST_DAYS_2026

SHARDS = learner_shards.get_partition_keys()
CONCEPTS = (1, 2)


def _utc(seconds: int) -> pd.Timestamp:
    return pd.Timestamp(seconds, unit="s", tz="UTC")


def _platform(engine, day: dt.date) -> pd.DataFrame:
    """Two learners per calendar: one reviews both their due cards 40 minutes before their rollover into `day`,
    the other does not. Each card was first reviewed three days before."""
    learners = pd.DataFrame([(2 * i + k + 1, zone, hour, bool(k)) for i, (zone, hour) in enumerate(CALENDARS)
                             for k in (0, 1)], columns=["user_id", "timezone", "day_start_hour", "reviews_late"])
    learners["rollover"] = [_utc(day_start_seconds(day, z, h)) for z, h in
                            zip(learners["timezone"], learners["day_start_hour"])]
    reviews = []
    for learner in learners.itertuples():
        for concept in CONCEPTS:
            reviews.append((learner.user_id, concept, learner.rollover - pd.Timedelta(days=3)))
            if learner.reviews_late:
                reviews.append((learner.user_id, concept, learner.rollover - pd.Timedelta(minutes=40)))
    reviews = pd.DataFrame(reviews, columns=["user_id", "concept_id", "reviewed_at"])
    reviews = reviews.assign(id=range(1, len(reviews) + 1), rating=3, review_duration_ms=5000)
    with engine.begin() as conn:
        bulk.bulk_insert(conn, tables.users, learners[["user_id", "timezone", "day_start_hour"]])
        bulk.bulk_insert(conn, tables.themes, pd.DataFrame({"theme_id": [1], "name": ["t"]}))
        bulk.bulk_insert(conn, tables.concepts, pd.DataFrame({"concept_id": list(CONCEPTS), "name": ["a", "b"]}))
        bulk.bulk_insert(conn, tables.concept_theme_map, pd.DataFrame({"concept_id": list(CONCEPTS), "theme_id": 1}))
        bulk.insert_review_logs(conn, reviews)
        bring_up_to_date(conn, learner_chunk=1000)
    return learners


@pytest.mark.parametrize("day", DST_DAYS_2026, ids=str)
def test_every_learners_queue_is_built_before_their_rollover_with_their_evening_in_it(warehouse_url, day):
    engine = get_engine(warehouse_url)
    learners = _platform(engine, day)
    calendars = learners[["timezone", "day_start_hour"]].drop_duplicates()
    windows = rollovers.rollovers(calendars, [day]).drop_duplicates("window_start")["window_start"]
    shard_of_learner = pd.Series([SHARDS[i] for i in shard_of(learners["user_id"], len(SHARDS))],
                                 index=learners["user_id"])
    for window in sorted(windows):
        window = window.to_pydatetime()
        build_time = rollovers.build_time(window)  # the window's refresh and cutoff, before its first rollover
        rolling = learners.loc[rollovers.in_window(learners, day, window), "user_id"]
        for shard in sorted(set(shard_of_learner[rolling])):
            build_shards_day(engine, day, [shard], cutoff=build_time, now=build_time, window_start=window)

    with engine.connect() as conn:
        summary = bulk.read_frame(conn, sa.select(tables.revision_queue_user_summary)
                                  .where(tables.revision_queue_user_summary.c.queue_date == day)).set_index("user_id")
        built = bulk.read_frame(conn, sa.select(tables.revision_queue_windows))
    learners = learners.set_index("user_id")
    assert set(summary.index) == set(learners.index), "every learner has their queue for their day"
    summary = summary.loc[learners.index]
    assert (summary["valid_from"] == learners["rollover"]).all(), "valid from their rollover, exactly"
    ends = [_utc(day_start_seconds(day + dt.timedelta(days=1), z, h)) for z, h in
            zip(learners["timezone"], learners["day_start_hour"])]
    assert (summary["valid_until"] == pd.Series(ends, index=learners.index)).all()
    assert (summary["cutoff_at"] <= summary["valid_from"] - pd.Timedelta(minutes=15)).all(), "built before it"
    assert (summary["cutoff_at"] >= summary["valid_from"] - pd.Timedelta(minutes=30)).all(), "30 minutes at most"
    reviewed = learners["reviews_late"]
    assert (summary.loc[reviewed[reviewed].index, "due_today_total"] == 0).all(), \
        "cards reviewed 40 minutes before the rollover are not due"
    assert (summary.loc[reviewed[~reviewed].index, "due_today_total"] == len(CONCEPTS)).all(), "the others are"
    assert (built["first_rollover_at"] >= built["window_start"]).all()
    assert (built["first_rollover_at"] < built["window_start"] + pd.Timedelta(rollovers.WINDOW)).all()


def test_a_learner_who_moves_gets_the_queue_of_their_new_day_at_their_next_rollover(warehouse_url):
    """New York to Tokyo, as the sensor and the recipe see it: the next window is Tokyo's, for Tokyo's next day; the
    app's view serves the latest day that has started. Their cards are replayed on their new calendar."""
    engine = get_engine(warehouse_url)
    day = dt.date(2026, 12, 7)
    with engine.begin() as conn:
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": [1], "timezone": ["America/New_York"],
                                                           "day_start_hour": [4]}))
        bulk.bulk_insert(conn, tables.concepts, pd.DataFrame({"concept_id": [1], "name": ["a"]}))
        bulk.insert_review_logs(conn, pd.DataFrame({"id": [1], "user_id": [1], "concept_id": [1], "rating": [3],
                                                    "review_duration_ms": [900],
                                                    "reviewed_at": [pd.Timestamp("2026-12-01T12:00Z")]}))
        bring_up_to_date(conn, learner_chunk=1000)
    shard = SHARDS[int(shard_of([1], len(SHARDS))[0])]
    new_york = dt.datetime(2026, 12, 7, 9, tzinfo=dt.timezone.utc)  # 04:00 in New York
    build_shards_day(engine, day, [shard], cutoff=rollovers.build_time(new_york), now=rollovers.build_time(new_york),
                    window_start=new_york)
    with engine.begin() as conn:
        conn.execute(tables.users.update().values(timezone="Asia/Tokyo"))
        replays = conn.execute(sa.select(sa.func.count()).select_from(tables.card_memory_state_replays)).scalar()
    assert replays == 1, "the move asks for the learner's cards to be replayed on their new calendar"

    now = dt.datetime(2026, 12, 7, 12, tzinfo=dt.timezone.utc)
    calendars = pd.DataFrame({"timezone": ["Asia/Tokyo"], "day_start_hour": [4]})
    [next_window] = rollovers.windows_due(calendars, now, now + dt.timedelta(days=1)).itertuples(index=False)
    assert (next_window.window_start, next_window.queue_date) == (
        pd.Timestamp("2026-12-07T19:00Z"), dt.date(2026, 12, 8)), "Tokyo's 04:00 on the 8th"
    tokyo = next_window.window_start.to_pydatetime()
    build_shards_day(engine, next_window.queue_date, [shard], cutoff=rollovers.build_time(tokyo),
                    now=rollovers.build_time(tokyo), window_start=tokyo)
    with engine.connect() as conn:
        days = bulk.read_frame(conn, sa.select(tables.revision_queue_user_summary)).set_index("queue_date")
    assert days.loc[day, "valid_until"] == pd.Timestamp("2026-12-08T09:00Z"), "New York's day as it was built"
    assert days.loc[dt.date(2026, 12, 8), "valid_from"] == pd.Timestamp("2026-12-07T19:00Z")
    # Between 19:00 and 09:00 both have started: the view serves the latest.
    overlap = pd.Timestamp("2026-12-08T01:00Z")
    started = days.loc[(days["valid_from"] <= overlap) & (overlap < days["valid_until"])]
    assert sorted(started.index) == [day, dt.date(2026, 12, 8)]


@pytest.mark.parametrize("window_run", [True, False], ids=["window", "whole day"])
def test_shards_built_together_write_what_they_write_one_by_one(warehouse_url, window_run):
    """A window's run builds its shards together: the same rows, per-shard statistics and records as a run per shard
    (the timestamps of the build aside)."""
    day = DST_DAYS_2026[0]
    engine = get_engine(warehouse_url)
    learners = _platform(engine, day)
    calendars = learners[["timezone", "day_start_hour"]].drop_duplicates()
    windows = sorted(rollovers.rollovers(calendars, [day]).drop_duplicates("window_start")["window_start"])
    builds = [window.to_pydatetime() for window in windows] if window_run else [None]
    now = rollovers.build_time(windows[0].to_pydatetime())
    outputs = ["revision_queue_theme", "revision_queue_user_summary", "tag_quality_debt_log",
               "revision_queue_target_concept", "queue_stats_daily", "revision_queue_windows"]
    stamped = ["generated_at", "cutoff_at", "ready_at", "late"]

    def stored() -> dict[str, pd.DataFrame]:
        with engine.connect() as conn:
            frames = {name: bulk.read_frame(conn, sa.select(tables.metadata.tables[name])) for name in outputs}
        return {name: frame.drop(columns=[c for c in stamped if c in frame]).sort_values(list(
            frame.columns.drop([c for c in stamped if c in frame]))[:4], ignore_index=True)
            for name, frame in frames.items()}

    together = []
    for window in builds:
        together.append(build_shards_day(engine, day, SHARDS, cutoff=now, now=now, window_start=window))
    as_built_together = stored()
    with engine.begin() as conn:
        for name in outputs:
            conn.execute(tables.metadata.tables[name].delete())
    for window in builds:
        for shard in SHARDS:
            build_shards_day(engine, day, [shard], cutoff=now, now=now, window_start=window)
    one_by_one = stored()
    assert len(as_built_together["revision_queue_user_summary"]) == len(learners)
    if window_run:  # every shard's record of each window, learners or not
        assert len(as_built_together["revision_queue_windows"]) == len(SHARDS) * len(windows)
    for name in outputs:
        pd.testing.assert_frame_equal(as_built_together[name], one_by_one[name], obj=name)
    assert sum(built.n_learners for built in together) == len(learners)
