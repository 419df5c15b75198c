"""The production stack's steps on real Celery workers over RabbitMQ: a backfill of every learner shard through the
run queue spreads its steps over both workers and writes exactly the in-process rows; a worker killed mid-step
hands the step back, and the shard ends exactly as an undisturbed run leaves it."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk, migrate, tables
from learning_pipelines.db.engine import get_engine
from learning_pipelines.defs.fsrs import fsrs_global_parameters
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.demo import load_platform
from learning_pipelines.deploy import stack as stacks
from learning_pipelines.domain.learner_shards import learners_in
from learning_pipelines.domain.simulate import simulate_platform
from tests.support.fsrs_optimization import optimize_fsrs
from tests.support.running_stack import BIN, celery_workers_of_steps, dagster, instance, running_stack, wait_for_runs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("postgres_available", "rabbitmq_available")]

SHARDED_JOB = "fsrs_optimization_job"
PARAMS = ["user_id", "n_reviews", "ab_group", "logloss_before", "logloss_after", "n_holdout_reviews", "weights"]
STATES = ["user_id", "concept_id", "stability_days", "difficulty", "n_reviews", "weights_source"]


def _platform(n_learners: int, mean_cards: int):
    return simulate_platform(n_learners=n_learners, n_concepts=120, n_resources=20, days=150,
                             mean_cards_per_learner=mean_cards, as_of=dt.datetime.now(dt.timezone.utc), seed=9)


def _in_process_reference(tmp_path, platform) -> str:
    url = f"sqlite:///{tmp_path / 'reference.db'}"
    migrate.upgrade(url)
    load_platform(get_engine(url), platform)
    optimize_fsrs(url)
    return url


def _rows(url: str, table: sa.Table, columns: list[str], user_ids=None) -> pd.DataFrame:
    with get_engine(url).connect() as conn:
        frame = bulk.read_frame(conn, sa.select(*(table.c[name] for name in columns)))
    if user_ids is not None:
        frame = frame[frame["user_id"].isin(user_ids)]
    return frame.sort_values(columns[:2]).reset_index(drop=True)


def _assert_same_rows(stack_url: str, reference_url: str, user_ids=None) -> None:
    for table, columns in ((tables.srs_user_params, PARAMS), (tables.card_memory_states, STATES)):
        stored = _rows(stack_url, table, columns, user_ids)
        key = ["user_id"] if table is tables.srs_user_params else ["user_id", "concept_id"]
        assert not stored.duplicated(key).any()
        pd.testing.assert_frame_equal(stored, _rows(reference_url, table, columns, user_ids), check_dtype=False,
                                      rtol=1e-9)


def test_a_backfill_of_every_shard_runs_steps_on_both_workers_and_writes_the_in_process_rows(tmp_path):
    platform = _platform(n_learners=40, mean_cards=50)
    reference_url = _in_process_reference(tmp_path, platform)
    with running_stack(tmp_path / "stack") as stack:
        running = stacks.running_pids(stack.run_dir)
        again = subprocess.run([str(BIN / "learning-pipelines"), "stack", "start", "--run-dir", str(stack.run_dir)],
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 2 and "already running" in again.stderr  # refused, the running stack left alone
        assert stacks.running_pids(stack.run_dir) == running
        assert not (stack.dagster_home / "dagster_celery").exists(), "no broker URL left on disk"
        load_platform(get_engine(stack.warehouse_url), platform)
        dagster(stack, "job", "launch", "-j", "fsrs_global_job")
        [global_fit] = wait_for_runs(stack, "fsrs_global_job", 1)
        assert global_fit.status == dg.DagsterRunStatus.SUCCESS

        shards = learner_shards.get_partition_keys()
        dagster(stack, "job", "backfill", "-j", SHARDED_JOB, "--partitions", ",".join(shards), "--noprompt")
        runs = wait_for_runs(stack, SHARDED_JOB, len(shards))
        assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS] * len(shards)
        assert sorted(run.tags["dagster/partition"] for run in runs) == shards

        workers = set()
        with instance(stack) as dagster_instance:
            for run in runs:
                kinds = [r.dagster_event.event_type for r in dagster_instance.all_logs(run.run_id) if r.dagster_event]
                assert kinds.index(dg.DagsterEventType.RUN_ENQUEUED) < kinds.index(dg.DagsterEventType.RUN_START)
                steps = celery_workers_of_steps(stack, run.run_id)
                assert set(steps) == {"fsrs_parameters"}  # its checks run inside it: one task per shard
                workers |= {worker for executions in steps.values() for worker in executions}
        assert {worker.split("@")[0] for worker in workers} == {stack.worker_name(1), stack.worker_name(2)}

        _assert_same_rows(stack.warehouse_url, reference_url)


def _step_start(stack, run_id: str, step_key: str, seconds: float = 240):
    with instance(stack) as dagster_instance:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for record in dagster_instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START):
                if record.step_key == step_key:
                    return record.dagster_event.pid
            time.sleep(0.1)
    raise AssertionError(f"{step_key} of run {run_id} did not start within {seconds} s")


def test_a_worker_process_killed_mid_step_hands_the_step_on_and_the_shard_ends_as_if_undisturbed(tmp_path):
    platform = _platform(n_learners=120, mean_cards=80)  # a shard step of several seconds, to be killed inside
    reference_url = _in_process_reference(tmp_path, platform)
    shard = learner_shards.get_partition_keys()[0]
    shard_learners = learners_in(platform.users["user_id"], shard)
    with running_stack(tmp_path / "stack") as stack:
        load_platform(get_engine(stack.warehouse_url), platform)
        # The global fit in-process: the fault concerns the shard's step alone.
        dg.materialize([fsrs_global_parameters], resources={"warehouse": Warehouse(database_url=stack.warehouse_url)})
        dagster(stack, "job", "launch", "-j", SHARDED_JOB, "--tags", json.dumps({"dagster/partition": shard}))
        with instance(stack) as dagster_instance:
            deadline = time.monotonic() + 120
            while not (runs := dagster_instance.get_runs(filters=dg.RunsFilter(job_name=SHARDED_JOB))):
                assert time.monotonic() < deadline
                time.sleep(0.2)
        run_id = runs[0].run_id
        step_process = _step_start(stack, run_id, "fsrs_parameters")
        os.kill(step_process, signal.SIGKILL)  # the Celery pool process executing the step, mid-step

        [run] = wait_for_runs(stack, SHARDED_JOB, 1)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        executions = celery_workers_of_steps(stack, run_id)["fsrs_parameters"]
        assert len(executions) == 2, executions  # delivered, lost with its process, delivered again

        _assert_same_rows(stack.warehouse_url, reference_url, shard_learners)
