"""Fitting every learner's own FSRS weights (and replaying their memory states) in 16 learner shards: on the
production stack's 2 Celery workers (16 runs launched as one backfill through the run queue) against the same 16
shards one after another in one process, on copies of the same warehouse, in the same run. On 2 cores nothing is
gained by workers: the figure is the topology's overhead.

    .venv/bin/python bench/shard_fit.py [--learners 20000] [--shards 16]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--learners", type=int, default=20_000)
parser.add_argument("--shards", type=int, default=16)
parser.add_argument("--workers", type=int, default=2)
# About 480 reviews per learner: a third of the learners (the tuned A/B half, with the 300 reviews a fit needs) get
# their own weights, as on a platform where a fit is worth its cost.
parser.add_argument("--cards-per-learner", type=int, default=60)
parser.add_argument("--days", type=int, default=200)
ARGS = parser.parse_args()
os.environ["LEARNING_PIPELINES_LEARNER_SHARDS"] = str(ARGS.shards)  # before the code location is imported

import dagster as dg  # noqa: E402
import pandas as pd  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from report import machine, publish  # noqa: E402
from scratch import ADMIN_URL  # noqa: E402

from learning_pipelines.db import bulk, migrate, tables  # noqa: E402
from learning_pipelines.db.engine import get_engine  # noqa: E402
from learning_pipelines.defs.fsrs import fsrs_global_parameters, fsrs_parameters  # noqa: E402
from learning_pipelines.defs.learner_shards import learner_shards  # noqa: E402
from learning_pipelines.defs.resources import Warehouse  # noqa: E402
from learning_pipelines.demo import load_platform  # noqa: E402
from learning_pipelines.domain.simulate import simulate_platform  # noqa: E402
from tests.support.running_stack import dagster, instance, running_stack, wait_for_runs  # noqa: E402

JOB = "fsrs_optimization_job"


def admin() -> sa.Engine:
    return sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def url_of(database: str) -> str:
    return sa.engine.make_url(ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def in_process(url: str) -> float:
    """Wall seconds of every shard one after another in this process."""
    resources = {"warehouse": Warehouse(database_url=url)}
    started = time.perf_counter()
    for shard in learner_shards.get_partition_keys():
        dg.materialize([fsrs_parameters], resources=resources, partition_key=shard)
    return time.perf_counter() - started


def on_workers(stack) -> dict:
    """Backfill every shard through the stack's run queue; wall seconds from submission to the last run's end,
    and where the time went, from the event log."""
    shards = learner_shards.get_partition_keys()
    submitted = time.time()
    dagster(stack, "job", "backfill", "-j", JOB, "--partitions", ",".join(shards), "--noprompt")
    runs = wait_for_runs(stack, JOB, len(shards), seconds=3600)
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs), [run.status for run in runs]
    queue_wait, tasks, enqueued = [], [], []
    with instance(stack) as dagster_instance:
        ended = max(record.end_time for record in dagster_instance.get_run_records(
            filters=dg.RunsFilter(run_ids=[run.run_id for run in runs])))
        for run in runs:
            records = [r for r in dagster_instance.all_logs(run.run_id) if r.dagster_event]
            at = {}
            for record in records:
                event = record.dagster_event
                key = (event.event_type, record.step_key)
                if event.event_type == dg.DagsterEventType.ENGINE_EVENT and "Celery worker" in (
                        event.engine_event_data.metadata or {}):
                    key = ("task", record.step_key, event.engine_event_data.metadata["Celery worker"].value)
                at.setdefault(key, record.timestamp)
            queue_wait.append(at[(dg.DagsterEventType.RUN_START, None)] - at[(dg.DagsterEventType.RUN_ENQUEUED, None)])
            enqueued.append(at[(dg.DagsterEventType.RUN_ENQUEUED, None)])
            for (kind, step_key, *worker), began in at.items():
                if kind == "task":
                    tasks.append({"worker": worker[0], "step": step_key, "began": began,
                                  "started": at[(dg.DagsterEventType.STEP_START, step_key)],
                                  "ended": at[(dg.DagsterEventType.STEP_SUCCESS, step_key)]})
    return {"wall": ended - submitted, "queue_wait": queue_wait, "cli": min(enqueued) - submitted,
            **step_overheads(tasks)}


def step_overheads(tasks: list[dict]) -> dict:
    """Per Celery task: the worker's time on it outside the step's own work: from taking the task to the step
    starting (job, plan, instance, resources), plus the idle gap from the previous task's step end to taking
    this one (the worker had it waiting: the backfill queued every step at once)."""
    inside, gaps = [], []
    for worker in {task["worker"] for task in tasks}:
        mine = sorted((t for t in tasks if t["worker"] == worker), key=lambda t: t["began"])
        inside += [t["started"] - t["began"] for t in mine]
        gaps += [later["began"] - earlier["ended"] for earlier, later in zip(mine, mine[1:])]
    shard_steps = [t["ended"] - t["started"] for t in tasks if t["step"] == "fsrs_parameters"]
    return {"tasks": len(tasks), "task_setup": statistics.mean(inside), "task_gap": statistics.mean(gaps),
            "step": statistics.mean(shard_steps), "workers": sorted({t["worker"] for t in tasks})}


def fitted_learners(url: str) -> int:
    with get_engine(url).connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(tables.srs_user_params)
                            .where(tables.srs_user_params.c.weights.is_not(None))).scalar_one()


def stored_params(url: str) -> pd.DataFrame:
    with get_engine(url).connect() as conn:
        frame = bulk.read_frame(conn, sa.select(tables.srs_user_params.c.user_id, tables.srs_user_params.c.weights))
    return frame.sort_values("user_id").reset_index(drop=True)


def main() -> None:
    platform = simulate_platform(n_learners=ARGS.learners, n_concepts=300, n_resources=20, days=ARGS.days,
                                 mean_cards_per_learner=ARGS.cards_per_learner, as_of=dt.datetime.now(dt.timezone.utc),
                                 seed=11)
    n_reviews = len(platform.review_logs)
    name = f"lp_bench_{uuid.uuid4().hex[:8]}"
    reference, copy = f"{name}_in_process", f"{name}_workers"
    with admin().connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{reference}"'))
    try:
        url = url_of(reference)
        migrate.upgrade(url)
        load_platform(get_engine(url), platform)
        dg.materialize([fsrs_global_parameters], resources={"warehouse": Warehouse(database_url=url)})
        get_engine(url).dispose()
        with admin().connect() as conn:  # the same reviews and global weights for both sides
            conn.execute(sa.text(f'CREATE DATABASE "{copy}" TEMPLATE "{reference}"'))
        print(f"{ARGS.learners:,} learners, {n_reviews:,} reviews loaded; global fit done", flush=True)

        process_wall = in_process(url)
        fitted = fitted_learners(url)
        print(f"in one process: {process_wall:.1f} s", flush=True)
        with tempfile.TemporaryDirectory() as run_dir, \
                running_stack(Path(run_dir), workers=ARGS.workers, warehouse_db=copy,
                              learner_shards=ARGS.shards) as stack:
            measured = on_workers(stack)
            same = stored_params(url).equals(stored_params(stack.warehouse_url))
            get_engine(stack.warehouse_url).dispose()
        print(f"on {ARGS.workers} Celery workers: {measured['wall']:.1f} s", flush=True)
    finally:
        get_engine(url_of(reference)).dispose()
        with admin().connect() as conn:
            for database in (reference, copy):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    report(process_wall, measured, same, n_reviews, fitted)


def report(process_wall: float, measured: dict, same: bool, n_reviews: int, fitted: int) -> None:
    ratio = measured["wall"] / process_wall
    mean = statistics.mean
    per_learner = process_wall / ARGS.learners
    per_step = measured["task_setup"] + measured["task_gap"]
    queue_wait = mean(measured["queue_wait"])
    figures = {"learners": ARGS.learners, "fitted_learners": fitted, "shards": ARGS.shards, "workers": ARGS.workers,
               "reviews": n_reviews,
               "in_process_seconds": round(process_wall, 2), "celery_seconds": round(measured["wall"], 2),
               "ratio": round(ratio, 3), "per_step_overhead_seconds": round(per_step, 3),
               "run_start_seconds": round(queue_wait, 2), "backfill_cli_seconds": round(measured["cli"], 2),
               "rows_equal": same, "machine": machine()}
    publish("Learner shards: 2 Celery workers against one process", [
        f"`bench/shard_fit.py`: {ARGS.learners:,} simulated learners ({n_reviews:,} reviews), the global fit done "
        f"once beforehand, then `fsrs_parameters` for each of {ARGS.shards} learner shards (own weights of the "
        f"{fitted:,} eligible learners: tuned A/B group, at least 300 reviews; replay of their memory states; one "
        "transaction per shard): one process running the "
        f"shards one after another, against the production stack (`learning_pipelines/deploy/stack.py`: "
        f"PostgreSQL instance, queued run coordinator with up to 16 runs at once, {ARGS.workers} dagster-celery "
        f"workers on RabbitMQ) "
        "given the same shards as one backfill, on a copy of the same warehouse, in the same run.",
        "",
        "| | wall seconds | ratio |",
        "|---|---:|---:|",
        f"| one process, {ARGS.shards} shards in turn | {process_wall:.1f} | 1.00 |",
        f"| {ARGS.workers} Celery workers, {ARGS.shards} shard runs from the queue | {measured['wall']:.1f} | "
        f"{ratio:.2f} |",
        "",
        f"Stored weights identical on both sides: {same}. Steps ran on: {', '.join(measured['workers'])}.",
        f"Where the extra time goes (event log): the `dagster job backfill` command takes {measured['cli']:.1f} s "
        f"to queue the first run (counted: the clock starts before it); each shard run waits {queue_wait:.1f} s on "
        f"average from being enqueued to starting (the daemon dequeues up to 4 at a time, the code server starts a "
        f"run worker process for each that imports the code location; on the same 2 cores as the workers). Per Celery task "
        f"({measured['tasks']} in all: one per shard run, its checks inside the step) a worker spends "
        f"{measured['task_setup']:.2f} s from taking the task to the step starting (job, plan, instance, "
        f"resources) and {measured['task_gap']:.2f} s idle between one step's end and taking the next: "
        f"**{per_step:.2f} s per step**. A shard step itself took {measured['step']:.1f} s on a worker "
        f"({process_wall / ARGS.shards:.1f} s in one process, where nothing else competes for the cores).",
        "",
        "History: 1.25-1.33x earlier the same day, while every run worker and step process imported numba with "
        "the code location (0.6 s each; now only a fit does) and the run queue launched one run at a time every "
        "5 s (now 4 at a time, every second: `dequeue_use_threads` in deploy/dagster.yaml).",
        "",
        "Projection for 10,000,000 learners on 100 workers (arithmetic from the figures above):",
        f"- CPU per learner in one process: {process_wall:.1f} s / {ARGS.learners:,} = {per_learner * 1000:.2f} ms; "
        f"10,000,000 learners: {per_learner * 1e7 / 3600:.1f} CPU-hours.",
        f"- Shards sized to about 10,000 learners (1,024 shards): a step of about {per_learner * 1e4:.0f} s, far "
        "under RabbitMQ's 30-minute consumer_timeout.",
        f"- 100 workers: {per_learner * 1e7 / 100 / 60:.1f} minutes of fitting, times the measured ratio "
        f"{ratio:.2f} for the topology: {per_learner * 1e7 / 100 / 60 * ratio:.1f} minutes, if the warehouse keeps "
        "up (below).",
        f"- The warehouse then serves 100 concurrent shard transactions: each reads its learners' reviews "
        f"({n_reviews / ARGS.learners:.0f} per learner here: about {n_reviews / ARGS.learners * 1e4:,.0f} rows per "
        "10,000-learner shard) and rewrites their parameter rows and memory states. 100 workers plus their run "
        "workers and the code servers hold well over PostgreSQL's default max_connections (100): put a pooler "
        "(PgBouncer, transaction pooling) in front of it; the shard lock is a transaction-level advisory lock, "
        "which transaction pooling keeps.",
    ], figures)


if __name__ == "__main__":
    main()
