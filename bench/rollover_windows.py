"""A day of revision queues built per rollover window against the single nightly build of the same states, side by
side on PostgreSQL; each window's time from trigger to ready; Dagster's per-run cost; the per-window refresh of the
memory states against a full replay.

    .venv/bin/python bench/rollover_windows.py [--learners 100000] [--concepts 100] [--refresh-learners 50000]

Queues: 10,000,000 card states (100,000 learners x 100 concepts) whose learners live in 24 time zones (day start
04:00), one rollover window each. The single night is every learner shard's day built at once (the recipe with no
window, shard by shard, as the 02:00 build did); the windows are the same day built window by window, every shard
of each in one recipe call, as revision_queue_shards_after_states launches them. Both are the recipe
(flows/revision_queues.py) without Dagster.
Refresh: card_memory_states (the recipe) on 1,000,000 cards first replayed in full, then brought up to date after a
window's worth of new reviews (one card in 96 reviewed), as each window's refresh does.

Prints one JSON object as its last line; writes its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dagster as dg
import sqlalchemy as sa
from memory_state_update import load, new_reviews
from report import machine, publish
from revision_queue import SEED_SQL
from scratch import scratch_postgres

from learning_pipelines import settings
from learning_pipelines.db import bulk, migrate, reads
from learning_pipelines.db import revision_queues as revision_queue_store
from learning_pipelines.db.engine import get_engine
from learning_pipelines.db.memory_state_progress import Progress, write_progress
from learning_pipelines.defs.learner_shards import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG, learner_shards
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.revision_queues import revision_queues
from learning_pipelines.domain import rollovers
from learning_pipelines.flows.card_memory_states import bring_up_to_date
from learning_pipelines.flows.revision_queues import build_shards_day

# One zone per whole or fractional offset, so 24 rollover windows at a 04:00 day start.
ZONES = ("UTC", "Europe/Berlin", "Europe/Athens", "Europe/Moscow", "Asia/Dubai", "Asia/Karachi", "Asia/Kolkata",
         "Asia/Kathmandu", "Asia/Dhaka", "Asia/Bangkok", "Asia/Shanghai", "Asia/Tokyo", "Australia/Adelaide",
         "Australia/Sydney", "Pacific/Auckland", "Pacific/Honolulu", "America/Anchorage", "America/Los_Angeles",
         "America/Denver", "America/Chicago", "America/New_York", "America/Halifax", "America/St_Johns",
         "America/Sao_Paulo")
RATIO_GOAL = 1.3  # windows' recipe time against the single night's
P99_GOAL_SECONDS = 600  # a window's trigger to ready
OUTPUT_TABLES = [table.name for table in revision_queue_store.LEARNER_TABLES] + ["queue_stats_daily",
                                                                               "revision_queue_windows"]


def seeded(url: str, n_learners: int, n_concepts: int) -> None:
    """SEED_SQL of bench/revision_queue.py with its learners spread over ZONES."""
    migrate.upgrade(url)
    engine = sa.create_engine(url)
    zones = ", ".join(f"'{zone}'" for zone in ZONES)
    with engine.begin() as conn:
        for statement in SEED_SQL[:-1]:
            if statement.startswith("INSERT INTO users"):
                statement = ("INSERT INTO users (user_id, timezone, day_start_hour) SELECT u, "
                             f"(ARRAY[{zones}])[1 + u % {len(ZONES)}], 4 FROM generate_series(1, :learners) u")
            conn.execute(sa.text(statement), {"learners": n_learners, "concepts": n_concepts})
        write_progress(conn, Progress(0, 0, [], dt.datetime.now(dt.timezone.utc), None, None, None))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(SEED_SQL[-1]))
    engine.dispose()


def empty_outputs(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(OUTPUT_TABLES)}"))


def queues(url: str, day: dt.date, now: dt.datetime) -> dict:
    engine = get_engine(url)
    shards = learner_shards.get_partition_keys()
    started = time.perf_counter()
    for shard in shards:
        build_shards_day(engine, day, [shard], cutoff=now, now=now)
    single_night = time.perf_counter() - started
    empty_outputs(engine)
    with engine.connect() as conn:
        calendars = reads.calendars_in_use(conn)
    windows = sorted(rollovers.rollovers(calendars, [day])["window_start"].unique())
    per_window = []
    for window in windows:
        started = time.perf_counter()
        for begin in range(0, len(shards), settings.WINDOW_RUN_SHARDS):  # as revision_queue_shards_after_states
            build_shards_day(engine, day, shards[begin:begin + settings.WINDOW_RUN_SHARDS], cutoff=now, now=now,
                             window_start=window.to_pydatetime())
        per_window.append(time.perf_counter() - started)
    with engine.connect() as conn:
        built = conn.execute(sa.text("SELECT count(*) FROM revision_queue_user_summary")).scalar()
    return {"single_night_seconds": single_night, "window_seconds": per_window, "n_windows": len(windows),
            "n_shards": len(shards), "runs_per_window": -(-len(shards) // settings.WINDOW_RUN_SHARDS),
            "learners_built": built}


def run_overhead(url: str, day: dt.date) -> dict:
    """Dagster's cost of one window run, without its recipe's work: an in-process run of a window no learner rolls
    over in (its shards' range, as revision_queue_shards_after_states launches it), and the start of a run worker (a
    new process importing the code location)."""
    quiet = dt.datetime.combine(day, dt.time(0, 45), dt.timezone.utc)  # no zone of ZONES starts its day then
    config = {"ops": {"revision_queues": {"config": {"window_start": quiet.isoformat()}}}}
    shards = learner_shards.get_partition_keys()[:settings.WINDOW_RUN_SHARDS]
    tags = {PARTITION_RANGE_START_TAG: str(dg.MultiPartitionKey({"day": str(day), "shard": shards[0]})),
            PARTITION_RANGE_END_TAG: str(dg.MultiPartitionKey({"day": str(day), "shard": shards[-1]}))}
    instance = dg.DagsterInstance.ephemeral()
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        assert dg.materialize([revision_queues], resources={"warehouse": Warehouse(database_url=url)},
                              instance=instance, tags=tags, run_config=config).success
        runs.append(time.perf_counter() - started)
    starts = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import learning_pipelines.definitions"], check=True,
                       env={**os.environ, "LEARNING_PIPELINES_DATABASE_URL": url})
        starts.append(time.perf_counter() - started)
    return {"in_process_run_seconds": float(np.median(runs)), "worker_start_seconds": float(np.median(starts))}


def refresh(n_learners: int, seed: int) -> dict:
    """The per-window refresh against a full replay, on 20 cards a learner with 5 reviews each."""
    with scratch_postgres() as url:
        migrate.upgrade(url)
        engine = get_engine(url)
        last_id = load(engine, n_learners, 20, 5, seed)
        started = time.perf_counter()
        with engine.begin() as conn:
            bring_up_to_date(conn, learner_chunk=2000)
        full_replay = time.perf_counter() - started
        fresh = new_reviews(engine, 1 / 96, last_id + 1, seed)
        with engine.begin() as conn:
            bulk.insert_review_logs(conn, fresh)
        started = time.perf_counter()
        with engine.begin() as conn:
            bring_up_to_date(conn, learner_chunk=2000)
        window_refresh = time.perf_counter() - started
        engine.dispose()
    return {"full_replay_seconds": full_replay, "refresh_seconds": window_refresh, "cards": n_learners * 20,
            "new_reviews": len(fresh)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--learners", type=int, default=100_000)
    parser.add_argument("--concepts", type=int, default=100)
    parser.add_argument("--refresh-learners", type=int, default=50_000, help="learners of the 20-card refresh part")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    now = dt.datetime.now(dt.timezone.utc)
    day = now.date() + dt.timedelta(days=1)  # not over on any calendar, whatever the hour
    with scratch_postgres() as url:
        started = time.perf_counter()
        seeded(url, args.learners, args.concepts)
        print(f"seeded in {time.perf_counter() - started:.0f} s", flush=True)
        built = queues(url, day, now)
        print(json.dumps(built), flush=True)
        overhead = run_overhead(url, day)
        get_engine(url).dispose()
    refreshed = refresh(args.refresh_learners, args.seed)
    load_average = os.getloadavg()
    windows_total = sum(built["window_seconds"])
    ratio = windows_total / built["single_night_seconds"]
    trigger_to_ready = [refreshed["refresh_seconds"] + seconds for seconds in built["window_seconds"]]
    p99 = float(np.percentile(trigger_to_ready, 99))
    runs_per_day = built["n_windows"] * (1 + built["runs_per_window"])
    per_run = overhead["in_process_run_seconds"] + overhead["worker_start_seconds"]
    figures = {"windows_total_seconds": round(windows_total, 2),
               "single_night_seconds": round(built["single_night_seconds"], 2), "ratio": round(ratio, 3),
               "window_p99_seconds": round(p99, 2), "runs_per_day": runs_per_day,
               "run_overhead_seconds": round(per_run, 2), "refresh_seconds": round(refreshed["refresh_seconds"], 3),
               "full_replay_seconds": round(refreshed["full_replay_seconds"], 2),
               "cards": args.learners * args.concepts, "windows": built["n_windows"],
               "load_average_5m": round(load_average[1], 2), "machine": machine()}
    publish("Revision queues: a day of rollover windows", [
        f"`bench/rollover_windows.py`: {args.learners * args.concepts:,} card states ({args.learners:,} learners x "
        f"{args.concepts} concepts) on PostgreSQL, learners in {len(ZONES)} time zones with days starting at 04:00: "
        f"{built['n_windows']} rollover windows for the day {day}. The recipe of `revision_queues` without Dagster, "
        f"every one of the {built['n_shards']} learner shards: once for the whole day (one call per shard, as the "
        "single 02:00 build did), then window by window into emptied tables (a window's shards together, as the "
        "rollover windows build it).",
        "",
        "| build | seconds |",
        "|---|---:|",
        f"| single night, every shard | {built['single_night_seconds']:.1f} |",
        f"| {built['n_windows']} windows, every shard of each | {windows_total:.1f} |",
        f"| a window, median / slowest | {np.median(built['window_seconds']):.1f} / "
        f"{max(built['window_seconds']):.1f} |",
        "",
        f"Windows / single night: **{ratio:.2f}x** (goal <= {RATIO_GOAL}x): a window's {built['n_shards']} shards are "
        f"built together, {built['runs_per_window']} recipe call(s) a window (LEARNING_PIPELINES_WINDOW_RUN_SHARDS="
        f"{settings.WINDOW_RUN_SHARDS}), so the recipe's fixed work (the learners' calendars and preferences, the "
        "concept graph and its fallback themes, the statistics and records, the check of the stored rows) is paid "
        f"{built['n_windows'] * built['runs_per_window']} times a day, not once per window and shard "
        f"({built['n_windows'] * built['n_shards']}). A window from trigger to ready (its refresh of the states, "
        f"then its build): p99 **{p99:.0f} s** (goal under {P99_GOAL_SECONDS // 60} minutes on 2 cores).",
        f"Dagster's cost per run, beside the recipe: {overhead['in_process_run_seconds']:.2f} s in-process (a window "
        f"run without learners) + {overhead['worker_start_seconds']:.2f} s to start a run worker (a process "
        f"importing the code location); {runs_per_day} runs a day ({built['n_windows']} windows x (1 refresh + "
        f"{built['runs_per_window']} queue run(s))): about {runs_per_day * per_run / 60:.0f} minutes of run overhead "
        "a day.",
        f"Refresh of the memory states (the recipe of `card_memory_states`) on {refreshed['cards']:,} cards with 5 "
        f"reviews each: a window's worth of new reviews ({refreshed['new_reviews']:,}, one card in 96) "
        f"**{refreshed['refresh_seconds']:.2f} s** against a full replay of {refreshed['full_replay_seconds']:.1f} s. "
        f"Load average (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in load_average)}.",
    ], figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
