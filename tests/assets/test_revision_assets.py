import datetime as dt
import json

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines import settings
from learning_pipelines.db import bulk, tables
from learning_pipelines.db import revision_queues as queue_store
from learning_pipelines.db.engine import get_engine
from learning_pipelines.db.learner_settings import calendars_and_preferences
from learning_pipelines.db.memory_state_progress import Progress, write_progress
from learning_pipelines.db.preferences import write_learning_prefs
from learning_pipelines.db.reads import calendars_in_use, concept_graph, learner_ids
from learning_pipelines.definitions import defs
from learning_pipelines.defs.card_memory_states import card_memory_states, card_memory_states_job
from learning_pipelines.defs.complexity import concept_complexity, scores_in_unit_interval
from learning_pipelines.defs.learner_shards import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG, learner_shards
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.revision_queue_automation import (
    revision_queue_rollover_windows,
    revision_queue_shards_after_states,
)
from learning_pipelines.defs.revision_queues import (
    ROLLOVER_WINDOW_TAG,
    STATES_CUTOFF_TAG,
    revision_queues,
    revision_queues_job,
)
from learning_pipelines.demo import load_platform
from learning_pipelines.domain import revision, rollovers
from learning_pipelines.domain.learner_shards import shard_of
from learning_pipelines.domain.revision import InvalidPreference
from learning_pipelines.domain.simulate import simulate_platform
from tests.support.fsrs_optimization import optimize_fsrs


def t(day, time_of_day, days=0):
    """A UTC instant on `day` (plus `days`)."""
    return pd.Timestamp(f"{day + dt.timedelta(days=days)}T{time_of_day}", tz="UTC")


def _frame(engine, statement):
    with engine.connect() as conn:
        return bulk.read_frame(conn, statement)


@pytest.fixture
def queue_warehouse(warehouse_url, warehouse_engine, today):
    """Two learners with hand-made memory states, one concept without a theme."""
    with warehouse_engine.begin() as conn:
        # Both learners' day `today` (the UTC date) lasts past the end of the UTC day, so a test builds it at any hour.
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": [1, 2], "timezone": ["UTC", "America/New_York"],
                                                           "day_start_hour": [4, 4]}))
        bulk.bulk_insert(conn, tables.themes, pd.DataFrame({"theme_id": [1, 2], "name": ["algebra", "geometry"]}))
        bulk.bulk_insert(conn, tables.concepts, pd.DataFrame({"concept_id": [10, 11, 12, 13],
                                                              "name": ["a", "b", "c", "d"]}))
        bulk.bulk_insert(conn, tables.concept_theme_map, pd.DataFrame({"concept_id": [10, 11, 12], "theme_id": [1, 1, 2]}))
        write_learning_prefs(conn, pd.DataFrame({"user_id": [2], "spacing_multiplier": [1.0],
                                                 "retention_target_override": [0.9], "revision_daily_target": [30]}))
        states = pd.DataFrame({
            "user_id": [1, 1, 1, 1, 2], "concept_id": [10, 11, 12, 13, 10],
            "stability_days": [10.0] * 5,
            "due_at": [t(today, "03:59"), t(today, "12:00"), t(today, "00:00", days=2), t(today, "05:00"),
                       t(today, "18:59")],
        })
        states["last_review_at"] = states["due_at"] - pd.Timedelta(days=10)
        bulk.bulk_insert(conn, tables.card_memory_states, states.assign(difficulty=5.0, n_reviews=3,
                                                                        weights_source="global", decay=0.1542))
        # As card_memory_states records it: these states include every review (there are none).
        write_progress(conn, Progress(0, 0, [], dt.datetime.now(dt.timezone.utc), None, None, None))
    return warehouse_url


QUEUE_ASSETS = [revision_queues]  # its two checks run in its step


SHARDS = learner_shards.get_partition_keys()


def _shard_of(user_id: int) -> str:
    return SHARDS[int(shard_of([user_id], len(SHARDS))[0])]


def _queue_shard(url, shard, day, **kwargs):
    return dg.materialize(QUEUE_ASSETS, resources={"warehouse": Warehouse(database_url=url)},
                          partition_key=dg.MultiPartitionKey({"day": str(day), "shard": shard}), **kwargs)


def _queue(url, day, **kwargs):
    """Every learner shard of `day`, one run each: {shard: result}."""
    return {shard: _queue_shard(url, shard, day, **kwargs) for shard in SHARDS}


def _day_rows(engine, day):
    def snapshot(table):
        return _frame(engine, sa.select(table).where(table.c.queue_date == day).order_by(*table.primary_key.columns))

    return {table.name: snapshot(table) for table in (tables.revision_queue_theme, tables.revision_queue_user_summary,
                                                      tables.queue_stats_daily, tables.tag_quality_debt_log)}


def test_queues_for_a_day_are_written_checked_and_idempotent(queue_warehouse, warehouse_engine, today):
    first = _queue(queue_warehouse, today)
    checks = [e for result in first.values() for e in result.get_asset_check_evaluations()]
    assert len(checks) == 2 * len(SHARDS) and all(e.passed for e in checks)
    before = _day_rows(warehouse_engine, today)
    _queue(queue_warehouse, today)
    after_rerun = _day_rows(warehouse_engine, today)
    for name, frame in before.items():
        after = after_rerun[name]
        pd.testing.assert_frame_equal(frame.drop(columns=["generated_at", "cutoff_at"], errors="ignore"),
                                      after.drop(columns=["generated_at", "cutoff_at"], errors="ignore"))

    summary = before["revision_queue_user_summary"].set_index("user_id")
    assert (summary.loc[1, "due_today_total"], summary.loc[1, "overdue_total"]) == (3, 1)
    assert json.loads(summary.loc[1, "recommended_theme_ids"]) == ["1", "UNMAPPED"]
    assert (summary.loc[2, "due_today_total"], summary.loc[2, "revision_daily_target"]) == (1, 30)
    themes = before["revision_queue_theme"]
    assert set(themes.loc[themes["user_id"] == 1, "theme_key"]) == {"1", "2", "UNMAPPED"}
    debt = before["tag_quality_debt_log"]
    assert debt[["user_id", "concept_id", "fallback_key"]].values.tolist() == [[1, 13, "UNMAPPED"]]
    with warehouse_engine.connect() as conn:
        stats = queue_store.day_totals(conn, today, SHARDS).set_index("theme_key")
    assert stats.loc["*", "due_today"] == 4 and stats.loc["*", "n_learners"] == 2
    assert stats.loc["1", "due_today"] == 3
    assert set(before["queue_stats_daily"]["learner_shard"]) == {_shard_of(1), _shard_of(2)}, \
        "every shard with learners writes its own totals"
    day_starts = {1: t(today, "04:00"), 2: pd.Timestamp(f"{today}T04:00", tz="America/New_York").tz_convert("UTC")}
    assert set(before["queue_stats_daily"]["window_start"]) == set(day_starts.values()), "totals per rollover window"
    assert (summary["valid_from"] == pd.Series(day_starts)).all()
    for user_id, row in summary.iterrows():
        run = first[_shard_of(user_id)]
        cutoff = run.asset_materializations_for_node("revision_queues")[0].metadata["cutoff"].value
        assert abs(row["cutoff_at"] - pd.Timestamp(cutoff, unit="s", tz="UTC")) < pd.Timedelta(milliseconds=1)


def test_the_stored_consistency_sees_rows_that_disagree(queue_warehouse, warehouse_engine, today):
    _queue(queue_warehouse, today)
    everyone = [1, 2]
    with warehouse_engine.connect() as conn:
        assert queue_store.stored_consistency(conn, today, everyone) == {
            "learners_mismatched": 0, "due_in_mapped_themes": 3, "logged_as_debt": 1, "due_today_total": 4}
    theme, summary, debt = tables.revision_queue_theme, tables.revision_queue_user_summary, tables.tag_quality_debt_log
    with warehouse_engine.begin() as conn:
        conn.execute(summary.update().where(summary.c.user_id == 2).values(overdue_total=summary.c.overdue_total + 1))
        conn.execute(theme.update().where(theme.c.user_id == 1, theme.c.theme_key == "1")
                     .values(due_today=theme.c.due_today + 5))
        conn.execute(debt.delete())
    with warehouse_engine.connect() as conn:
        assert queue_store.stored_consistency(conn, today, everyone) == {
            "learners_mismatched": 2, "due_in_mapped_themes": 8, "logged_as_debt": 0, "due_today_total": 4}
        assert queue_store.stored_consistency(conn, today, [1])["learners_mismatched"] == 1


def test_a_past_day_is_refused_rather_than_built_from_todays_states(queue_warehouse, warehouse_engine, today):
    ended = (today - dt.timedelta(days=2)).isoformat()  # over on every calendar, whatever the hour
    result = _queue_shard(queue_warehouse, _shard_of(1), ended, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert f"{ended} has ended for these learners on their own calendars" in failure.description
    assert _frame(warehouse_engine, sa.select(tables.revision_queue_user_summary)).empty


def test_queues_refuse_memory_states_that_miss_reviews_stored_before_the_cutoff(queue_warehouse, warehouse_engine,
                                                                                 today):
    """Reviews stored after the states were brought up to date: the queue is not built from them."""
    with warehouse_engine.begin() as conn:
        write_progress(conn, Progress(0, 0, [], dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1),
                                      None, None, None))
        bulk.insert_review_logs(conn, pd.DataFrame({"id": [1], "reviewed_at": [t(today, "01:00")], "user_id": [1],
                                                    "concept_id": [10], "rating": [3], "review_duration_ms": [900]}))
    result = _queue_shard(queue_warehouse, _shard_of(1), today, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "Run card_memory_states_job first" in failure.description
    assert _frame(warehouse_engine, sa.select(tables.revision_queue_user_summary)).empty


def test_preferences_out_of_range_are_refused_at_write(queue_warehouse, warehouse_engine):
    with warehouse_engine.begin() as conn:
        with pytest.raises(InvalidPreference, match="user 1: retention_target_override 0.99 outside"):
            write_learning_prefs(conn, pd.DataFrame({"user_id": [1, 2], "retention_target_override": [0.99, 0.8]}))
    prefs = _frame(warehouse_engine, sa.select(tables.user_learning_prefs))
    assert prefs["retention_target_override"].tolist() == [0.9], "nothing of the refused batch was written"
    with pytest.raises(sa.exc.IntegrityError):  # and the table itself refuses them too
        with warehouse_engine.begin() as conn:
            conn.execute(tables.user_learning_prefs.insert().values(user_id=1, spacing_multiplier=3.0))


def test_the_rollover_windows_sensor_refreshes_the_states_before_each_window(queue_warehouse):
    """Learners in UTC and New York (day start 04:00): windows at 04:00 and 09:00 UTC (winter), each refreshed 15
    minutes before; a tick with nothing due skips, and the cursor moves on."""
    warehouse = {"warehouse": Warehouse(database_url=queue_warehouse)}
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=warehouse,
                                          cursor=(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).isoformat())
        result = revision_queue_rollover_windows(context)
    [request] = result.run_requests
    windows = [dt.datetime.fromisoformat(w) for w in request.tags[ROLLOVER_WINDOW_TAG].split(",")]
    assert {(w.hour, w.minute) for w in windows} <= {(4, 0), (8, 0), (9, 0)} and windows  # 08:00 in summer
    assert all(w <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=15) for w in windows)
    assert revision_queue_rollover_windows.job_name == card_memory_states_job.name
    with dg.instance_for_test() as instance:
        quiet = revision_queue_rollover_windows(dg.build_sensor_context(instance=instance, resources=warehouse,
                                                                        cursor=result.cursor))
    assert not quiet.run_requests and quiet.cursor >= result.cursor
    assert defs().resolve_job_def(revision_queues_job.name).asset_layer.executable_asset_keys == {revision_queues.key}


def test_complexity_tracks_the_simulated_truth(empty_sqlite_url):
    from learning_pipelines.db import migrate
    from learning_pipelines.db.engine import get_engine

    migrate.upgrade(empty_sqlite_url)
    engine = get_engine(empty_sqlite_url)
    platform = simulate_platform(n_learners=150, n_concepts=120, n_resources=10, days=150, seed=13)
    load_platform(engine, platform)
    resources = {"warehouse": Warehouse(database_url=empty_sqlite_url)}
    optimize_fsrs(empty_sqlite_url)
    result = dg.materialize([card_memory_states, concept_complexity, scores_in_unit_interval], resources=resources)
    assert all(e.passed for e in result.get_asset_check_evaluations() if e.asset_key.path == ["concept_complexity"])
    scores = _frame(engine, sa.select(tables.concept_complexity)).set_index("concept_id")
    assert len(scores) == 120 and scores["score"].between(0, 1).all()
    assert scores["confidence"].between(0, 1).all() and (scores["n_learners"] > 0).all()
    truth = platform.true_concept_complexity.reindex(scores.index)
    agreement = scores["score"].rank().corr(truth.rank())  # Spearman
    assert agreement > 0.4


@pytest.fixture
def platform_states_url(empty_sqlite_url):
    """A simulated platform whose memory states are up to date (on the default weights)."""
    from learning_pipelines.db import migrate

    migrate.upgrade(empty_sqlite_url)
    load_platform(get_engine(empty_sqlite_url),
                  simulate_platform(n_learners=40, n_concepts=60, n_resources=10, days=60, seed=5))
    dg.materialize([card_memory_states], resources={"warehouse": Warehouse(database_url=empty_sqlite_url)})
    return empty_sqlite_url


def _sorted(frame, key):
    return frame.sort_values(key).reset_index(drop=True)


def test_all_shards_give_exactly_the_rows_of_the_same_computation_unsharded(platform_states_url, today):
    """Every learner of the platform, in whatever zone: tomorrow (UTC) has not ended for anyone. A learner without
    cards gets an empty queue (nothing due), so the app tells "nothing due" from "not built yet"."""
    engine = get_engine(platform_states_url)
    today = today + dt.timedelta(days=1)
    assert all(result.success for result in _queue(platform_states_url, today).values())
    with engine.connect() as conn:
        calendars, preferences = calendars_and_preferences(conn, learner_ids(conn))
        learners, _ = revision.effective_preferences(calendars, preferences)
        states = queue_store.card_states(conn, learners["user_id"])
        concept_ids, theme_map, edges = concept_graph(conn)
        themes = revision.concept_theme_keys(concept_ids["concept_id"].to_numpy(), theme_map, edges)
        unsharded = revision.build_queues(states, learners, themes, today)
        stored_totals = queue_store.day_totals(conn, today, SHARDS)
    stored = _day_rows(engine, today)
    assert len({_shard_of(u) for u in states["user_id"]}) == len(SHARDS) > 1, "every shard has learners"
    assert len(stored["revision_queue_user_summary"]) == len(learners)
    key = ["user_id", "theme_key"]
    theme_columns = ["user_id", "theme_key", "due_today", "overdue", "mastery", "rank"]
    pd.testing.assert_frame_equal(_sorted(stored["revision_queue_theme"][theme_columns], key),
                                  _sorted(unsharded.themes[theme_columns], key), check_dtype=False)
    summary_columns = ["user_id", "due_today_total", "overdue_total", "recommended_theme_ids"]
    pd.testing.assert_frame_equal(_sorted(stored["revision_queue_user_summary"][summary_columns], "user_id"),
                                  _sorted(unsharded.summaries[summary_columns], "user_id"), check_dtype=False)
    debt_columns = ["user_id", "concept_id", "fallback_key", "reason"]
    pd.testing.assert_frame_equal(_sorted(stored["tag_quality_debt_log"][debt_columns], ["user_id", "concept_id"]),
                                  _sorted(unsharded.debt[debt_columns], ["user_id", "concept_id"]), check_dtype=False)
    expected_totals = _day_totals(unsharded)
    pd.testing.assert_frame_equal(_sorted(stored_totals, "theme_key"), _sorted(expected_totals, "theme_key"),
                                  check_dtype=False)


def _day_totals(queues: revision.QueueChunk) -> pd.DataFrame:
    """queue_stats_daily's day totals counted the plain way, row by theme row (the reference the stored ones, summed
    over shards and windows, must equal): theme_key, n_learners, due_today, overdue; ALL_THEMES: every theme."""
    themes, summaries = queues.themes, queues.summaries
    per_theme = themes.assign(n_learners=(themes["due_today"] > 0).astype(int)).groupby("theme_key")[
        ["n_learners", "due_today", "overdue"]].sum()
    everything = pd.DataFrame({"n_learners": [int((summaries["due_today_total"] > 0).sum())],
                               "due_today": [int(summaries["due_today_total"].sum())],
                               "overdue": [int(summaries["overdue_total"].sum())]}, index=[revision.ALL_THEMES])
    return pd.concat([per_theme, everything]).rename_axis("theme_key").reset_index()


def test_a_shard_rerun_replaces_exactly_its_learners_rows(platform_states_url, today):
    engine = get_engine(platform_states_url)
    _queue(platform_states_url, today)
    before = _day_rows(engine, today)
    rerun, untouched = SHARDS[0], SHARDS[1]
    with engine.begin() as conn:  # every card of every learner due long ago: the queues must change
        conn.execute(tables.card_memory_states.update().values(last_review_at=t(today, "00:00", days=-400)))
    _queue_shard(platform_states_url, rerun, today)
    after = _day_rows(engine, today)

    for name in ("revision_queue_theme", "revision_queue_user_summary", "tag_quality_debt_log"):
        shards = {table: frame["user_id"].map(_shard_of) for table, frame in (("before", before[name]),
                                                                              ("after", after[name]))}
        kept = before[name][shards["before"] != rerun].reset_index(drop=True)
        pd.testing.assert_frame_equal(after[name][shards["after"] != rerun].reset_index(drop=True), kept)
    stats_before, stats_after = (frame.groupby(["learner_shard", "theme_key"])[["n_learners", "due_today", "overdue"]]
                                 .sum() for frame in (before["queue_stats_daily"], after["queue_stats_daily"]))
    pd.testing.assert_frame_equal(stats_after.loc[untouched], stats_before.loc[untouched])
    assert (stats_after.loc[(rerun, "*"), "overdue"] > stats_before.loc[(rerun, "*"), "overdue"]), \
        "the rerun shard's learners now have overdue cards"


def test_a_day_built_under_another_number_of_shards_is_replaced(platform_states_url, today):
    """Rows of the day written when the learners were split another way are still found and replaced."""
    engine = get_engine(platform_states_url)
    _queue(platform_states_url, today)
    before = _day_rows(engine, today)
    stats = tables.queue_stats_daily
    with engine.begin() as conn:  # as if the day had been built with 2 shards
        conn.execute(stats.delete().where(stats.c.learner_shard != SHARDS[0]))
        conn.execute(stats.update().values(learner_shard="00-of-02"))
    assert all(result.success for result in _queue(platform_states_url, today).values())
    after = _day_rows(engine, today)
    for name in ("revision_queue_theme", "revision_queue_user_summary", "tag_quality_debt_log"):
        pd.testing.assert_frame_equal(after[name].drop(columns=["generated_at", "cutoff_at"], errors="ignore"),
                                      before[name].drop(columns=["generated_at", "cutoff_at"], errors="ignore"))
    assert set(after["queue_stats_daily"]["learner_shard"]) == {*SHARDS, "00-of-02"}


def _next_window(url) -> tuple[dt.datetime, dt.date]:
    """The next rollover window of the platform's learners, and the day they roll into."""
    with get_engine(url).connect() as conn:
        calendars = calendars_in_use(conn)
    now = dt.datetime.now(dt.timezone.utc)
    first = rollovers.windows_due(calendars, now, now + dt.timedelta(days=1)).iloc[0]
    return first["window_start"].to_pydatetime(), first["queue_date"]


def _refresh(repository, instance, url, tags):
    refresh = repository.get_job(card_memory_states_job.name).execute_in_process(
        instance=instance, resources={"warehouse": Warehouse(database_url=url)}, tags=tags)
    success = instance.all_logs(refresh.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)[0].dagster_event
    return refresh, revision_queue_shards_after_states(dg.build_run_status_sensor_context(
        sensor_name=revision_queue_shards_after_states.name, dagster_instance=instance,
        dagster_run=instance.get_run_by_id(refresh.run_id), dagster_event=success,
        resources={"warehouse": Warehouse(database_url=url)}))


def test_a_windows_refresh_launches_every_shard_of_its_day_with_the_window_and_its_cutoff(platform_states_url):
    window, day = _next_window(platform_states_url)
    warehouse = {"warehouse": Warehouse(database_url=platform_states_url)}
    repository = defs().get_repository_def()
    with dg.instance_for_test() as instance:
        refresh, requests = _refresh(repository, instance, platform_states_url,
                                     {ROLLOVER_WINDOW_TAG: window.isoformat()})
        as_of = refresh.asset_materializations_for_node("card_memory_states")[0].metadata["as_of"].value
        # One run over the range of the day's shard partitions: every shard of the window built together.
        [request] = requests
        assert request.partition_key is None
        assert (request.tags[PARTITION_RANGE_START_TAG], request.tags[PARTITION_RANGE_END_TAG]) == tuple(
            str(dg.MultiPartitionKey({"day": str(day), "shard": shard})) for shard in (SHARDS[0], SHARDS[-1]))
        assert request.run_config["ops"]["revision_queues"]["config"]["window_start"] == window.isoformat()
        cutoff = dt.datetime.fromisoformat(request.tags[STATES_CUTOFF_TAG])
        assert abs(cutoff.timestamp() - as_of) < 1e-3

        # A review that reaches the warehouse after the refresh does not hold the window's shards back...
        with get_engine(platform_states_url).begin() as conn:
            bulk.insert_review_logs(conn, pd.DataFrame({"id": [10**9], "reviewed_at": [pd.Timestamp.now(tz="UTC")],
                                                        "user_id": [1], "concept_id": [1], "rating": [3],
                                                        "review_duration_ms": [900]}))
        shard_job = repository.get_job(revision_queues_job.name)
        built = shard_job.execute_in_process(instance=instance, resources=warehouse, tags=request.tags,
                                             run_config=request.run_config)
        assert built.success
        assert sorted(str(event.partition) for event in built.get_asset_materialization_events()) == sorted(
            str(dg.MultiPartitionKey({"day": str(day), "shard": shard})) for shard in SHARDS)
        with get_engine(platform_states_url).connect() as conn:
            summary = bulk.read_frame(conn, sa.select(tables.revision_queue_user_summary))
            users = bulk.read_frame(conn, sa.select(tables.users))
        rolling = users.loc[rollovers.in_window(users, day, window), "user_id"]
        assert set(summary["user_id"]) == set(rolling) and len(rolling), "exactly the window's learners"
        assert (abs(summary["cutoff_at"] - pd.Timestamp(cutoff)) < pd.Timedelta(milliseconds=1)).all()
        assert (summary["valid_from"] >= pd.Timestamp(window)).all()
        assert (summary["valid_from"] < pd.Timestamp(window + rollovers.WINDOW)).all()
        # ...while a shard launched later without the refresh's cutoff refuses the states that miss it.
        later = shard_job.execute_in_process(instance=instance, resources=warehouse, raise_on_error=False,
                                             run_config=request.run_config, partition_key=dg.MultiPartitionKey(
                                                 {"day": str(day), "shard": SHARDS[1]}))
        assert not later.success
        # A cutoff written by hand without a time zone is UTC, not a crash.
        naive = cutoff.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat()
        assert shard_job.execute_in_process(instance=instance, resources=warehouse,
                                            tags={STATES_CUTOFF_TAG: naive}, run_config=request.run_config,
                                            partition_key=dg.MultiPartitionKey({"day": str(day),
                                                                                "shard": SHARDS[2]})).success


@pytest.mark.parametrize("shards_a_run", [1, 3])
def test_a_window_can_be_built_in_several_runs_of_consecutive_shards(platform_states_url, monkeypatch, shards_a_run):
    """LEARNING_PIPELINES_WINDOW_RUN_SHARDS: a window's shards in runs of that many (one: each shard's partition; with
    the tests' 4 shards, 3: a range of three and a run of the last), every shard in exactly one run, each run building
    its own shards' learners of the window."""
    monkeypatch.setattr(settings, "WINDOW_RUN_SHARDS", shards_a_run)
    window, day = _next_window(platform_states_url)
    warehouse = {"warehouse": Warehouse(database_url=platform_states_url)}
    repository = defs().get_repository_def()
    with dg.instance_for_test() as instance:
        _, requests = _refresh(repository, instance, platform_states_url, {ROLLOVER_WINDOW_TAG: window.isoformat()})
        assert len(requests) == -(-len(SHARDS) // shards_a_run)
        assert len({r.run_key for r in requests}) == len(requests)
        shard_job = repository.get_job(revision_queues_job.name)
        built = [shard_job.execute_in_process(instance=instance, resources=warehouse, tags=r.tags,
                                              run_config=r.run_config, partition_key=r.partition_key)
                 for r in requests]
    partitions = [sorted(str(event.partition) for event in result.get_asset_materialization_events())
                  for result in built]
    assert sorted(key for keys in partitions for key in keys) == sorted(
        str(dg.MultiPartitionKey({"day": str(day), "shard": shard})) for shard in SHARDS)
    assert [len(keys) for keys in partitions] == [min(shards_a_run, len(SHARDS) - begin)
                                                  for begin in range(0, len(SHARDS), shards_a_run)]
    with get_engine(platform_states_url).connect() as conn:
        summary = bulk.read_frame(conn, sa.select(tables.revision_queue_user_summary))
        users = bulk.read_frame(conn, sa.select(tables.users))
        records = bulk.read_frame(conn, sa.select(tables.revision_queue_windows))
    assert set(summary["user_id"]) == set(users.loc[rollovers.in_window(users, day, window), "user_id"])
    assert sorted(records["learner_shard"]) == sorted(SHARDS), "one record per shard of the window"


def test_a_refresh_for_a_window_whose_day_has_ended_launches_no_shard(platform_states_url, today):
    """An old window's refresh re-executed: its day's queues can no longer be built."""
    long_ago = dt.datetime.combine(today - dt.timedelta(days=3), dt.time(4), dt.timezone.utc)
    with dg.instance_for_test() as instance:
        _, result = _refresh(defs().get_repository_def(), instance, platform_states_url,
                             {ROLLOVER_WINDOW_TAG: long_ago.isoformat()})
    assert isinstance(result, dg.SkipReason) and "into a day that has not ended" in result.skip_message


def test_a_retried_window_refresh_runs_its_step_again():
    """From the failure there would be nothing left to retry once the step had finished: no shards that window."""
    job = defs().resolve_job_def(card_memory_states_job.name)
    assert job.tags["dagster/retry_strategy"] == "ALL_STEPS"
