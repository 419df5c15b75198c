"""What the platform's app feels: 8 concurrent readers fetch random learners' revision queues through the read
contract (view app_revision_queue) over 100,000 learners and 10,000,000 card states on PostgreSQL, idle and while
the nightly revision_queues shards rewrite the day, beside a floor measured in the same run: a primary-key
lookup of the same theme rows in revision_queue_theme.

    .venv/bin/python bench/app_reads.py [--learners 100000] [--concepts 100] [--readers 8] [--seconds 20]

Prints one JSON object as its last line; writes its section of BENCHMARKS.md with the EXPLAIN output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import random
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import dagster as dg  # noqa: E402
import pandas as pd  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from report import machine, publish  # noqa: E402
from revision_queue import DAY, synthetic  # noqa: E402
from scratch import scratch_postgres  # noqa: E402

from learning_pipelines.db import bulk, migrate, tables  # noqa: E402
from learning_pipelines.db.memory_states import Progress, write_progress  # noqa: E402
from learning_pipelines.defs.learner_shards import learner_shards  # noqa: E402
from learning_pipelines.defs.resources import Warehouse  # noqa: E402
from learning_pipelines.defs.revision_queues import revision_queues  # noqa: E402

VIEW_READ = sa.text("SELECT * FROM app_revision_queue WHERE user_id = :user AND queue_date = :day ORDER BY rank")
FLOOR_READ = sa.text("SELECT * FROM revision_queue_theme WHERE queue_date = :day AND user_id = :user")
LOAD_CHUNK = 10_000  # learners per COPY while loading


def load(url: str, n_learners: int, n_concepts: int) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        learners, _, themes = synthetic(1, n_concepts)
        bulk.bulk_insert(conn, tables.themes, pd.DataFrame({"theme_id": range(1, 11), "name": [f"theme {i}" for i in
                                                                                             range(1, 11)]}))
        bulk.bulk_insert(conn, tables.concepts, pd.DataFrame({"concept_id": themes["concept_id"], "name": "c"}))
        mapped = themes.loc[~themes["is_fallback"]]
        bulk.bulk_insert(conn, tables.concept_theme_map, pd.DataFrame(
            {"concept_id": mapped["concept_id"], "theme_id": mapped["theme_key"].astype(int)}))
    for offset in range(0, n_learners, LOAD_CHUNK):
        learners, states, _ = synthetic(min(LOAD_CHUNK, n_learners - offset), n_concepts, seed=offset)
        learners["user_id"] += offset
        states["user_id"] += offset
        with engine.begin() as conn:
            bulk.bulk_insert(conn, tables.users, learners[["user_id", "timezone", "day_start_hour"]])
            bulk.bulk_insert(conn, tables.card_memory_states, states.assign(
                difficulty=5.0, n_reviews=3, weights_source="global",
                due_at=states["last_review_at"] + pd.to_timedelta(states["stability_days"], unit="D")))
    with engine.begin() as conn:  # as card_memory_states records it: the states include every review (none)
        write_progress(conn, Progress(0, 0, [], dt.datetime.now(dt.timezone.utc), None, None, None))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    engine.dispose()


def build_shards(url: str, shards: list[str]) -> float:
    """Materializes revision_queues for `shards` of today, one after another; wall seconds."""
    started = time.perf_counter()
    for shard in shards:
        result = dg.materialize([revision_queues], resources={"warehouse": Warehouse(database_url=url)},
                                partition_key=dg.MultiPartitionKey({"day": DAY.isoformat(), "shard": shard}))
        assert result.success
    return time.perf_counter() - started


def read_phase(url: str, statement: sa.TextClause, n_learners: int, readers: int, until) -> dict:
    """`readers` threads, each on its own connection, read random learners until `until()` is true."""
    engine = sa.create_engine(url, pool_size=readers)
    latencies: list[list[float]] = [[] for _ in range(readers)]
    empty = [0] * readers

    def reader(number: int) -> None:
        chooser = random.Random(number)
        with engine.connect() as conn:
            conn.execute(statement, {"user": 1, "day": DAY}).all()  # planned once, as an app's pooled connection
            while not until():
                params = {"user": chooser.randint(1, n_learners), "day": DAY}
                started = time.perf_counter()
                rows = conn.execute(statement, params).all()
                conn.rollback()
                latencies[number].append(time.perf_counter() - started)
                empty[number] += not rows

    started = time.perf_counter()
    threads = [threading.Thread(target=reader, args=(n,)) for n in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    engine.dispose()
    every = sorted(s for mine in latencies for s in mine)
    quantile = lambda q: every[min(len(every) - 1, int(q * len(every)))] * 1000  # noqa: E731
    return {"queries": len(every), "qps": len(every) / wall, "p50_ms": quantile(0.50), "p99_ms": quantile(0.99),
            "mean_ms": statistics.mean(every) * 1000, "empty": sum(empty)}


def for_seconds(seconds: float):
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline


def explain(url: str, statement: sa.TextClause, user: int) -> str:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        plan = conn.execute(sa.text(f"EXPLAIN (ANALYZE, BUFFERS) {statement.text}"), {"user": user, "day": DAY})
        text = "\n".join(row[0] for row in plan)
    engine.dispose()
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--learners", type=int, default=100_000)
    parser.add_argument("--concepts", type=int, default=100)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    shards = learner_shards.get_partition_keys()
    with scratch_postgres() as url:
        migrate.upgrade(url)
        started = time.perf_counter()
        load(url, args.learners, args.concepts)
        print(f"{args.learners * args.concepts:,} card states loaded in {time.perf_counter() - started:.0f} s",
              flush=True)
        night = build_shards(url, shards)
        print(f"the night's {len(shards)} shards built in {night:.0f} s", flush=True)
        floor = read_phase(url, FLOOR_READ, args.learners, args.readers, for_seconds(args.seconds))
        idle = read_phase(url, VIEW_READ, args.learners, args.readers, for_seconds(args.seconds))
        # The night's writer in a process of its own, as a worker would be (a thread here would hold the readers'
        # interpreter lock while it computes).
        writer = multiprocessing.get_context("spawn").Process(target=build_shards, args=(url, shards))
        started = time.perf_counter()
        writer.start()
        during = read_phase(url, VIEW_READ, args.learners, args.readers, lambda: not writer.is_alive())
        writer.join()
        assert writer.exitcode == 0, f"the writer failed (exit {writer.exitcode})"
        write_seconds = time.perf_counter() - started
        plans = {name: explain(url, statement, args.learners // 2) for name, statement in
                 (("view", VIEW_READ), ("floor", FLOOR_READ))}
    report(args, floor, idle, during, write_seconds, plans)


def report(args, floor: dict, idle: dict, during: dict, write_seconds: float, plans: dict) -> None:
    figures = {"learners": args.learners, "card_states": args.learners * args.concepts, "readers": args.readers,
               "p50_ms_floor": round(floor["p50_ms"], 3), "p99_ms_floor": round(floor["p99_ms"], 3),
               "p50_ms_idle": round(idle["p50_ms"], 3), "p99_ms_idle": round(idle["p99_ms"], 3),
               "p50_ms_during_write": round(during["p50_ms"], 3), "p99_ms_during_write": round(during["p99_ms"], 3),
               "queries_per_second": round(idle["qps"], 1), "queries_per_second_during_write": round(during["qps"], 1),
               "idle_p99_over_floor": round(idle["p99_ms"] / floor["p99_ms"], 3),
               "write_p99_over_idle": round(during["p99_ms"] / idle["p99_ms"], 3),
               "night_write_seconds": round(write_seconds, 1), "machine": machine()}
    rows = [("floor: primary-key lookup of the theme rows", floor), ("view `app_revision_queue`, idle", idle),
            ("view, while the night's shards rewrite the day", during)]
    publish("App reads during the nightly run", [
        f"`bench/app_reads.py`: {args.readers} concurrent readers (threads, one connection each) fetch random "
        f"learners' queues for today over {args.learners:,} learners and {args.learners * args.concepts:,} card "
        f"states on PostgreSQL; {args.seconds:.0f} s per idle phase; the write phase lasts while every learner "
        f"shard's revision_queues is rebuilt one after another ({write_seconds:.0f} s). Latency as the app sees it "
        "(client round trip, Python included).",
        "",
        "| reads | queries | queries/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
        *[f"| {label} | {r['queries']:,} | {r['qps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
          for label, r in rows],
        "",
        f"p99 idle / floor: **{figures['idle_p99_over_floor']:.2f}x** (goal <= 1.5x); p99 during the write / idle: "
        f"**{figures['write_p99_over_idle']:.2f}x** (goal <= 2x). Reads that found no queue: "
        f"{sum(r['empty'] for _, r in rows)}.",
        "",
        "Plans of one read (`EXPLAIN (ANALYZE, BUFFERS)`), the view and the floor:",
        "",
        "```",
        plans["view"],
        "```",
        "",
        "```",
        plans["floor"],
        "```",
    ], figures)


if __name__ == "__main__":
    main()
