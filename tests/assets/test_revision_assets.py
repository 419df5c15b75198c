import datetime as dt
import json

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.db import revision_queues as queue_store
from learning_pipelines.db.engine import get_engine
from learning_pipelines.db.learner_settings import calendars_and_preferences
from learning_pipelines.db.memory_state_progress import Progress, write_progress
from learning_pipelines.db.preferences import write_learning_prefs
from learning_pipelines.db.reads import concept_graph, learner_ids
from learning_pipelines.definitions import defs
from learning_pipelines.defs.card_memory_states import card_memory_states, card_memory_states_job
from learning_pipelines.defs.complexity import concept_complexity, scores_in_unit_interval
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.revision_queue_automation import revision_queue_shards_after_states, revision_queues_nightly
from learning_pipelines.defs.revision_queues import QUEUE_DAY_TAG, STATES_CUTOFF_TAG, revision_queues, revision_queues_job
from learning_pipelines.demo import load_platform
from learning_pipelines.domain import revision
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
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": [1, 2], "timezone": ["UTC", "Asia/Tokyo"],
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
    assert set(before["queue_stats_daily"]["learner_shard"]) == set(SHARDS), "every shard writes its own totals"
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
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    result = _queue_shard(queue_warehouse, _shard_of(1), yesterday, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert f"revision_queues for {yesterday} would be built from today's memory states" in failure.description
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


def test_schedule_refreshes_the_states_at_two_for_that_day():
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 3, 10, 2, 0, tzinfo=dt.timezone.utc))
    request = revision_queues_nightly(context)
    assert revision_queues_nightly.cron_schedule == "0 2 * * *"
    assert revision_queues_nightly.execution_timezone == "UTC"
    assert (request.run_key, request.tags[QUEUE_DAY_TAG]) == ("revision_queues:2026-03-10", "2026-03-10")
    assert revision_queues_nightly.job_name == card_memory_states_job.name
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
    engine = get_engine(platform_states_url)
    assert all(result.success for result in _queue(platform_states_url, today).values())
    with engine.connect() as conn:
        calendars, preferences = calendars_and_preferences(conn, learner_ids(conn))
        learners, _ = revision.effective_preferences(calendars, preferences)
        states = queue_store.card_states(conn, learners["user_id"])
        learners = learners.loc[learners["user_id"].isin(states["user_id"])]
        concept_ids, theme_map, edges = concept_graph(conn)
        themes = revision.concept_theme_keys(concept_ids["concept_id"].to_numpy(), theme_map, edges)
        unsharded = revision.build_queues(states, learners, themes, today)
        stored_totals = queue_store.day_totals(conn, today, SHARDS)
    stored = _day_rows(engine, today)
    assert len({_shard_of(u) for u in learners["user_id"]}) == len(SHARDS) > 1, "every shard has learners"
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
    expected_totals = revision.day_stats([revision.theme_totals(unsharded)])
    pd.testing.assert_frame_equal(_sorted(stored_totals, "theme_key"), _sorted(expected_totals, "theme_key"),
                                  check_dtype=False)


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
    stats_before, stats_after = (frame.set_index(["learner_shard", "theme_key"]) for frame in
                                 (before["queue_stats_daily"], after["queue_stats_daily"]))
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


def test_the_nightly_refresh_launches_every_shard_with_its_cutoff(platform_states_url, today):
    day = today.isoformat()
    warehouse = {"warehouse": Warehouse(database_url=platform_states_url)}
    repository = defs().get_repository_def()
    with dg.instance_for_test() as instance:
        refresh = repository.get_job(card_memory_states_job.name).execute_in_process(
            instance=instance, resources=warehouse, tags={QUEUE_DAY_TAG: day})
        as_of = refresh.asset_materializations_for_node("card_memory_states")[0].metadata["as_of"].value
        success = instance.all_logs(refresh.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)[0].dagster_event
        requests = revision_queue_shards_after_states(dg.build_run_status_sensor_context(
            sensor_name=revision_queue_shards_after_states.name, dagster_instance=instance,
            dagster_run=instance.get_run_by_id(refresh.run_id), dagster_event=success))
        assert sorted(r.partition_key for r in requests) == sorted(
            dg.MultiPartitionKey({"day": day, "shard": shard}) for shard in SHARDS)
        assert len({r.run_key for r in requests}) == len(requests)
        cutoff = dt.datetime.fromisoformat(requests[0].tags[STATES_CUTOFF_TAG])
        assert abs(cutoff.timestamp() - as_of) < 1e-3

        # A review that reaches the warehouse after the refresh does not hold the night's shards back...
        with get_engine(platform_states_url).begin() as conn:
            bulk.insert_review_logs(conn, pd.DataFrame({"id": [10**9], "reviewed_at": [pd.Timestamp.now(tz="UTC")],
                                                        "user_id": [1], "concept_id": [1], "rating": [3],
                                                        "review_duration_ms": [900]}))
        shard_job = repository.get_job(revision_queues_job.name)
        night = shard_job.execute_in_process(instance=instance, resources=warehouse, tags=requests[0].tags,
                                             partition_key=requests[0].partition_key)
        assert night.success
        with get_engine(platform_states_url).connect() as conn:
            cutoffs = bulk.read_frame(conn, sa.select(tables.revision_queue_user_summary.c.cutoff_at))["cutoff_at"]
        assert len(cutoffs) and (abs(cutoffs - pd.Timestamp(cutoff)) < pd.Timedelta(milliseconds=1)).all()
        # ...while a shard launched later without the refresh's cutoff refuses the states that miss it.
        later = shard_job.execute_in_process(instance=instance, resources=warehouse, raise_on_error=False,
                                             partition_key=requests[1].partition_key)
        assert not later.success
        # A cutoff written by hand without a time zone is UTC, not a crash.
        naive = cutoff.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat()
        assert shard_job.execute_in_process(instance=instance, resources=warehouse,
                                            tags={STATES_CUTOFF_TAG: naive},
                                            partition_key=requests[2].partition_key).success


def test_a_refresh_for_a_past_day_launches_no_shard(platform_states_url, today):
    """A late sensor tick, or an old nightly refresh re-executed: its day's queues can no longer be built."""
    repository = defs().get_repository_def()
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    with dg.instance_for_test() as instance:
        refresh = repository.get_job(card_memory_states_job.name).execute_in_process(
            instance=instance, resources={"warehouse": Warehouse(database_url=platform_states_url)},
            tags={QUEUE_DAY_TAG: yesterday})
        success = instance.all_logs(refresh.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)[0].dagster_event
        result = revision_queue_shards_after_states(dg.build_run_status_sensor_context(
            sensor_name=revision_queue_shards_after_states.name, dagster_instance=instance,
            dagster_run=instance.get_run_by_id(refresh.run_id), dagster_event=success))
    assert isinstance(result, dg.SkipReason) and f"for {yesterday}" in result.skip_message


def test_a_retried_nightly_refresh_runs_its_step_again():
    """From the failure there would be nothing left to retry once the step had finished: no shards that night."""
    job = defs().resolve_job_def(card_memory_states_job.name)
    assert job.tags["dagster/retry_strategy"] == "ALL_STEPS"
