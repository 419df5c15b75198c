"""Fresh by construction: reviews that arrive after a queue was built reach the next queue.

The whole path a deployment runs: reviews arrive outside Dagster (a bulk load the arrivals sensor
notices, then a `learning-pipelines import`, which reports its months), the automation conditions
bring card_memory_states up to date, and the nightly schedule's run builds the day's queues.
"""

import datetime as dt
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.definitions import defs as load_defs
from learning_pipelines.defs.automation import review_logs_arrivals_sensor
from learning_pipelines.defs.card_memory_states import card_memory_states
from learning_pipelines.defs.learner_shards import PARTITION_RANGE_START_TAG
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.revision_queue_automation import (
    revision_queue_rollover_windows,
    revision_queue_shards_after_states,
)
from learning_pipelines.defs.revision_queues import revision_queues_job
from learning_pipelines.demo import load_platform
from learning_pipelines.domain import fsrs
from learning_pipelines.domain.simulate import simulate_platform

CLI = str(Path(sys.executable).parent / "learning-pipelines")


def _frame(engine, statement) -> pd.DataFrame:
    with engine.connect() as conn:
        return bulk.read_frame(conn, statement)


class Deployment:
    """The code location against one instance and warehouse, ticked by hand as the daemon would."""

    def __init__(self, instance: dg.DagsterInstance, url: str):
        self.instance, self.url = instance, url
        self.defs = load_defs()
        self.cursor = None

    def automation_tick(self) -> set[dg.AssetKey]:
        """Evaluate every automation condition once and run what it requests; returns the keys run."""
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        by_partition: dict[str | None, list[dg.AssetKey]] = {}
        for key in self.defs.resolve_asset_graph().get_all_asset_keys():
            for partition in result.get_requested_partitions(key):
                by_partition.setdefault(partition, []).append(key)
        for partition, keys in by_partition.items():
            job = dg.Definitions.merge(self.defs, dg.Definitions(jobs=[dg.define_asset_job(
                "automation_run", selection=keys)])).resolve_job_def("automation_run")
            assert job.execute_in_process(instance=self.instance, partition_key=partition).success
        return {key for keys in by_partition.values() for key in keys}

    def sensor_tick(self, sensor) -> None:
        context = dg.build_sensor_context(instance=self.instance, resources={"warehouse": Warehouse(database_url=self.url)})
        result = sensor.evaluate_tick(context)
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)

    def rollover_windows(self, since: dt.datetime) -> set[str]:
        """What the rollover windows sensor launches for the windows due since `since` (one refresh of the states),
        then the shard runs the run status sensor launches after it, each through its job; returns the days built."""
        warehouse = {"warehouse": Warehouse(database_url=self.url)}
        [request] = revision_queue_rollover_windows(dg.build_sensor_context(
            instance=self.instance, resources=warehouse, cursor=since.isoformat())).run_requests
        refresh = self.defs.resolve_job_def(revision_queue_rollover_windows.job_name).execute_in_process(
            instance=self.instance, tags=request.tags)
        assert refresh.success
        success = self.instance.all_logs(refresh.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)[0].dagster_event
        shard_requests = revision_queue_shards_after_states(dg.build_run_status_sensor_context(
            sensor_name=revision_queue_shards_after_states.name, dagster_instance=self.instance,
            dagster_run=self.instance.get_run_by_id(refresh.run_id), dagster_event=success, resources=warehouse))
        shard_job = self.defs.resolve_job_def(revision_queues_job.name)
        for shard_request in shard_requests:
            assert shard_job.execute_in_process(instance=self.instance, partition_key=shard_request.partition_key,
                                                tags=shard_request.tags, run_config=shard_request.run_config).success
        return {str(request.partition_key or request.tags[PARTITION_RANGE_START_TAG]).partition("|")[0]
                for request in shard_requests}


def _theme_due(engine, day: str) -> pd.DataFrame:
    theme = tables.revision_queue_theme
    return _frame(engine, sa.select(theme).where(theme.c.queue_date == dt.date.fromisoformat(day))) \
        .set_index(["user_id", "theme_key"])["due_today"]


def _pick_cards(engine, platform, day_end: pd.Timestamp, reviewed_at: pd.Timestamp) -> tuple[int, int, int]:
    """A UTC learner's card due today that a Good review makes not due, and one not due today that
    an Again makes due, in different themes (so each theme's count moves)."""
    states = _frame(engine, sa.select(tables.card_memory_states))
    themes = platform.concept_theme_map.sort_values("theme_id").drop_duplicates("concept_id").set_index("concept_id")
    users = platform.users.set_index("user_id")
    states = states.loc[states["user_id"].map(users["timezone"]).eq("UTC") & states["concept_id"].isin(themes.index)]
    def learner_day(t):  # UTC learners whose day starts at 04:00
        return ((t - pd.Timedelta(hours=4)) - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(days=1)

    elapsed = (learner_day(reviewed_at) - learner_day(states["last_review_at"])).to_numpy(float)

    def due_after(rating):
        s, _ = fsrs.next_state(states["stability_days"], states["difficulty"], elapsed, np.full(len(states), rating),
                               fsrs.decay_only_weights(states["decay"]))
        return reviewed_at + pd.to_timedelta(fsrs.next_interval_days(s, 0.9, fsrs.decay_only_weights(states["decay"])),
                                             unit="D").to_numpy()

    due_now = states["due_at"] <= day_end
    good = states.loc[due_now & (due_after(fsrs.GOOD) > day_end + pd.Timedelta(hours=6))]
    again = states.loc[~due_now & (due_after(fsrs.AGAIN) < day_end - pd.Timedelta(hours=6))]
    for user_id, mine in good.groupby("user_id"):
        for concept in mine["concept_id"]:
            other = again.loc[(again["user_id"] == user_id)
                              & (again["concept_id"].map(themes["theme_id"]) != themes.loc[concept, "theme_id"])]
            if len(other):
                return int(user_id), int(concept), int(other["concept_id"].iloc[0])
    pytest.fail(f"the simulated platform has no learner with both kinds of card ({len(states)} states, {len(good)} "
                f"good, {len(again)} again, {states.dtypes.to_dict()})")


@pytest.mark.slow
def test_reviews_imported_after_a_queue_reach_the_next_one(warehouse_url, warehouse_engine, tmp_path, monkeypatch, now):
    monkeypatch.setenv("LEARNING_PIPELINES_DATABASE_URL", warehouse_url)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    platform = simulate_platform(n_learners=60, n_concepts=60, n_resources=5, days=60, mean_cards_per_learner=30,
                                 as_of=now - dt.timedelta(days=5), seed=3)
    load_platform(warehouse_engine, platform)  # written around the importer, as the app would
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        deployment = Deployment(instance, warehouse_url)
        assert deployment.automation_tick() == set(), "a first tick only starts the automation's cursor"
        deployment.sensor_tick(review_logs_arrivals_sensor)
        assert card_memory_states.key in deployment.automation_tick(), "the arrivals sensor's report starts the states"
        assert deployment.automation_tick() == set(), "and only once"
        # Every window of the last day, as a first deployment builds them (late): every learner's current day.
        today_start = pd.Timestamp(now.date(), tz="UTC") + pd.Timedelta(hours=4)  # UTC learners, day starts 04:00
        today_start -= pd.Timedelta(days=1) if now.hour < 4 else pd.Timedelta(0)
        utc_day = str(today_start.date())
        assert utc_day in deployment.rollover_windows(now - dt.timedelta(days=1))
        before = _theme_due(warehouse_engine, utc_day)
        reviewed_at = pd.Timestamp(now) - pd.Timedelta(days=3)
        learner, good_card, failed_card = _pick_cards(warehouse_engine, platform, today_start + pd.Timedelta(days=1),
                                                      reviewed_at)
        revlog = tmp_path / "synced.csv"
        pd.DataFrame({"user_id": [learner, learner], "card_id": [good_card, failed_card],
                      "review_time": [reviewed_at.isoformat()] * 2, "review_rating": [3, 1],
                      "review_duration": [4000, 9000]}).to_csv(revlog, index=False)
        imported = subprocess.run([CLI, "import", str(revlog)], capture_output=True, text=True, timeout=300)
        assert imported.returncode == 0, imported.stderr
        assert "2 loaded" in imported.stdout and "reported to Dagster: review_logs" in imported.stdout

        assert card_memory_states.key in deployment.automation_tick(), "the import's report makes the states stale"
        assert utc_day in deployment.rollover_windows(now - dt.timedelta(days=1))
        after = _theme_due(warehouse_engine, utc_day)

    states = _frame(warehouse_engine, sa.select(tables.card_memory_states)
                    .where(tables.card_memory_states.c.user_id == learner)).set_index("concept_id")
    day_end = today_start + pd.Timedelta(days=1)
    assert states.loc[good_card, "due_at"] > day_end, "reviewed Good: no longer due today"
    assert states.loc[failed_card, "due_at"] <= day_end, "failed: due today"
    themes = platform.concept_theme_map.sort_values("theme_id").drop_duplicates("concept_id").set_index("concept_id")
    good_theme, failed_theme = (str(themes.loc[c, "theme_id"]) for c in (good_card, failed_card))
    assert after[(learner, good_theme)] == before[(learner, good_theme)] - 1
    assert after.get((learner, failed_theme), 0) == before.get((learner, failed_theme), 0) + 1
    summary = _frame(warehouse_engine, sa.select(tables.revision_queue_user_summary)
                     .where(tables.revision_queue_user_summary.c.user_id == learner)).iloc[0]
    assert summary["cutoff_at"] > reviewed_at


def test_a_window_without_reviews_still_builds_its_queues(warehouse_url, warehouse_engine, tmp_path, monkeypatch, now):
    """`on_cron` would wait for an upstream update that never comes; a window's refresh does not."""
    monkeypatch.setenv("LEARNING_PIPELINES_DATABASE_URL", warehouse_url)
    platform = simulate_platform(n_learners=10, n_concepts=20, n_resources=5, days=30, mean_cards_per_learner=10,
                                 as_of=now - dt.timedelta(days=2), seed=8)
    load_platform(warehouse_engine, platform)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        deployment = Deployment(instance, warehouse_url)
        first = deployment.rollover_windows(now - dt.timedelta(days=1))
        second = deployment.rollover_windows(now - dt.timedelta(days=1))
    assert first == second
    summary = _frame(warehouse_engine, sa.select(tables.revision_queue_user_summary))
    assert summary["user_id"].nunique() == 10 and summary["cutoff_at"].notna().all(), "every learner has a queue"


def test_the_arrivals_sensor_reports_reviews_beyond_the_states_once(warehouse_url, warehouse_engine, tmp_path, now):
    platform = simulate_platform(n_learners=5, n_concepts=10, n_resources=5, days=40, mean_cards_per_learner=5,
                                 as_of=now, seed=2)
    load_platform(warehouse_engine, platform)
    months = sorted(platform.review_logs["reviewed_at"].dt.strftime("%Y-%m-01").unique())
    warehouse = Warehouse(database_url=warehouse_url)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        first = review_logs_arrivals_sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse}))
        assert sorted(e.partition for e in first.asset_events) == months
        assert all(e.tags["dagster/data_version"] for e in first.asset_events)
        again = review_logs_arrivals_sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=first.cursor, resources={"warehouse": warehouse}))
        assert not again.asset_events and "already reported" in again.skip_message, "the same reviews: no report"

        late = platform.review_logs.iloc[[0]].assign(id=-1, reviewed_at=pd.Timestamp(now) - pd.Timedelta(hours=1))
        with warehouse_engine.begin() as conn:  # the app's own write, bypassing the importer
            conn.execute(tables.review_logs.insert().values(late.drop(columns=["ingest_seq"], errors="ignore")
                                                           .to_dict("records")))
        third = review_logs_arrivals_sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=first.cursor, resources={"warehouse": warehouse}))
        this_month = [e for e in third.asset_events if e.partition == now.strftime("%Y-%m-01")]
        assert this_month and this_month[0].metadata["highest_review_number"].value == \
            max(int(e.tags["dagster/data_version"]) for e in third.asset_events)

        dg.materialize([card_memory_states], instance=instance, resources={"warehouse": warehouse})
        quiet = review_logs_arrivals_sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse}))
        assert not quiet.asset_events and "includes every stored review" in quiet.skip_message
