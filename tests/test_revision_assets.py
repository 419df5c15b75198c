import datetime as dt
import json

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.db.preferences import write_learning_prefs
from learning_pipelines.db.memory_states import Progress, write_progress
from learning_pipelines.definitions import defs
from learning_pipelines.defs.complexity import concept_complexity, scores_in_unit_interval
from learning_pipelines.defs.memory_states import card_memory_states
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.revision_queues import (every_due_concept_accounted_for, revision_queues,
                                                     revision_queues_nightly, summary_totals_match_theme_rows)
from learning_pipelines.demo import load_platform
from learning_pipelines.domain.revision import InvalidPreference
from learning_pipelines.domain.simulate import simulate_platform
from tests.fsrs_optimization import optimize_fsrs

# Queues are built for the current day only (a past day's memory states are gone).
TODAY = dt.datetime.now(dt.timezone.utc).date()
DAY = TODAY.isoformat()


def t(time_of_day, days=0):
    """A UTC instant on today's date (plus `days`)."""
    return pd.Timestamp(f"{TODAY + dt.timedelta(days=days)}T{time_of_day}", tz="UTC")


def _frame(engine, statement):
    with engine.connect() as conn:
        return bulk.read_frame(conn, statement)


@pytest.fixture
def queue_warehouse(warehouse_url, warehouse_engine):
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
            "due_at": [t("03:59"), t("12:00"), t("00:00", days=2), t("05:00"), t("18:59")],
        })
        states["last_review_at"] = states["due_at"] - pd.Timedelta(days=10)
        bulk.bulk_insert(conn, tables.card_memory_states, states.assign(difficulty=5.0, n_reviews=3,
                                                                        weights_source="global", decay=0.1542))
        # As card_memory_states records it: these states include every review (there are none).
        write_progress(conn, Progress(0, 0, [], dt.datetime.now(dt.timezone.utc), None, None, None))
    return warehouse_url


QUEUE_ASSETS = [revision_queues, every_due_concept_accounted_for, summary_totals_match_theme_rows]


def _queue(url, day=DAY, **kwargs):
    return dg.materialize(QUEUE_ASSETS, resources={"warehouse": Warehouse(database_url=url)}, partition_key=day,
                          **kwargs)


def test_queues_for_a_day_are_written_checked_and_idempotent(queue_warehouse, warehouse_engine):
    first = _queue(queue_warehouse)
    checks = first.get_asset_check_evaluations()
    assert len(checks) == 2 and all(e.passed for e in checks)
    snapshot = lambda table: _frame(warehouse_engine, sa.select(table).order_by(*table.primary_key.columns))  # noqa: E731
    before = {table.name: snapshot(table) for table in (tables.revision_queue_theme, tables.revision_queue_user_summary,
                                                        tables.queue_stats_daily, tables.tag_quality_debt_log)}
    _queue(queue_warehouse)
    for name, frame in before.items():
        after = snapshot(tables.metadata.tables[name])
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
    stats = before["queue_stats_daily"].set_index("theme_key")
    assert stats.loc["*", "due_today"] == 4 and stats.loc["*", "n_learners"] == 2
    assert stats.loc["1", "due_today"] == 3
    cutoff = first.asset_materializations_for_node("revision_queues")[0].metadata["cutoff"].value
    assert ((summary["cutoff_at"] - pd.Timestamp(cutoff, unit="s", tz="UTC")).abs() < pd.Timedelta(milliseconds=1)).all()


def test_a_past_day_is_refused_rather_than_built_from_todays_states(queue_warehouse, warehouse_engine):
    yesterday = (TODAY - dt.timedelta(days=1)).isoformat()
    result = _queue(queue_warehouse, yesterday, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert f"revision_queues for {yesterday} would be built from today's memory states" in failure.description
    assert _frame(warehouse_engine, sa.select(tables.revision_queue_user_summary)).empty


def test_queues_refuse_memory_states_that_miss_reviews_stored_before_the_cutoff(queue_warehouse, warehouse_engine):
    """Reviews stored after the states were brought up to date: the queue is not built from them."""
    with warehouse_engine.begin() as conn:
        write_progress(conn, Progress(0, 0, [], dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1),
                                      None, None, None))
        bulk.insert_review_logs(conn, pd.DataFrame({"id": [1], "reviewed_at": [t("01:00")], "user_id": [1],
                                                    "concept_id": [10], "rating": [3], "review_duration_ms": [900]}))
    result = _queue(queue_warehouse, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "Run revision_queues_job" in failure.description
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


def test_schedule_runs_at_two_and_requests_that_day():
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 3, 10, 2, 0, tzinfo=dt.timezone.utc))
    request = revision_queues_nightly(context)
    assert revision_queues_nightly.cron_schedule == "0 2 * * *"
    assert revision_queues_nightly.execution_timezone == "UTC"
    assert (request.partition_key, request.run_key) == ("2026-03-10", "revision_queues:2026-03-10")
    job = defs().resolve_job_def(revision_queues_nightly.job_name)
    assert job.asset_layer.executable_asset_keys == {card_memory_states.key, revision_queues.key}


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
