"""What the platform's app feels: 8 concurrent readers fetch random learners' revision queues (view
app_revision_queue) and recommendations (view app_recommendations) through the read contract, over 100,000 learners,
10,000,000 card states and 10 recommendations a learner on PostgreSQL, idle and while the nightly revision_queues
shards rewrite the day, each beside a floor measured in the same run: a primary-key lookup of the same rows in the
table behind the view (revision_queue_theme, user_recommendations).

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
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from report import machine, publish  # noqa: E402
from revision_queue import DAY, synthetic  # noqa: E402
from scratch import scratch_postgres  # noqa: E402

from learning_pipelines.db import bulk, migrate, tables  # noqa: E402
from learning_pipelines.db.memory_state_progress import Progress, write_progress  # noqa: E402
from learning_pipelines.defs.learner_shards import learner_shards  # noqa: E402
from learning_pipelines.defs.resources import Warehouse  # noqa: E402
from learning_pipelines.defs.revision_queues import revision_queues  # noqa: E402
from learning_pipelines.domain import recommend  # noqa: E402
from learning_pipelines.domain.simulate import RESOURCE_KINDS  # noqa: E402
from learning_pipelines.flows.recommendations import RECOMMENDATIONS_PER_LEARNER  # noqa: E402

# Each read as the README tells the app to make it, and its floor: the same rows by primary key, no view.
QUEUE_READ = sa.text("SELECT * FROM app_revision_queue WHERE user_id = :user AND queue_date = :day ORDER BY rank")
QUEUE_FLOOR_READ = sa.text("SELECT * FROM revision_queue_theme WHERE queue_date = :day AND user_id = :user")
RECOMMENDATIONS_READ = sa.text("SELECT * FROM app_recommendations WHERE user_id = :user ORDER BY rank")
RECOMMENDATIONS_FLOOR_READ = sa.text("SELECT * FROM user_recommendations WHERE user_id = :user")
LOAD_CHUNK = 10_000  # learners per COPY while loading
N_RESOURCES = 5_000  # the catalogue recommendations are drawn from
WARM_SHARE = 0.8  # learners the serving NCF model knows (hybrid); the others get content + graph
MODEL_ID = 1  # the serving model stamped on hybrid rows


def resources(rng: np.random.Generator) -> pd.DataFrame:
    ids = np.arange(1, N_RESOURCES + 1)
    return pd.DataFrame({"resource_id": ids, "title": [f"Resource {i}" for i in ids],
                         "kind": rng.choice(RESOURCE_KINDS, N_RESOURCES),
                         "difficulty": np.round(rng.beta(2, 2, N_RESOURCES), 3)})


def recommendations_of(user_ids: np.ndarray, generated_at: pd.Timestamp, rng: np.random.Generator) -> pd.DataFrame:
    """RECOMMENDATIONS_PER_LEARNER distinct resources a learner, rows as the recommendations asset writes them:
    scores blended with recommend's weights, rank 1 the best; hybrid rows stamped with the serving model,
    content_graph rows (learners NCF does not know) without an NCF score or model."""
    n, k = len(user_ids), RECOMMENDATIONS_PER_LEARNER
    # Distinct within a learner: k - 1 steps of at most N_RESOURCES // k from a random start stay within one lap.
    steps = rng.integers(1, N_RESOURCES // k + 1, size=(n, k))
    steps[:, 0] = rng.integers(0, N_RESOURCES, size=n)
    warm = (rng.random(n) < WARM_SHARE)[:, None]  # the learner is one NCF knows
    ncf, content, graph = rng.beta(2, 5, (n, k)), rng.random((n, k)), rng.random((n, k))
    hybrid, fallback = recommend.HYBRID_WEIGHTS, recommend.FALLBACK_WEIGHTS
    score = np.where(warm, hybrid["ncf"] * ncf + hybrid["content"] * content + hybrid["graph"] * graph,
                     fallback["content"] * content + fallback["graph"] * graph)
    by_learner = {"resource_id": np.cumsum(steps, axis=1) % N_RESOURCES + 1, "score": score,
                  "ncf_score": np.where(warm, ncf, np.nan), "content_score": content, "graph_score": graph}
    best_first = np.argsort(-score, axis=1)
    warm_rows = np.repeat(warm, k)
    return pd.DataFrame({
        "user_id": np.repeat(user_ids, k), "rank": np.tile(np.arange(1, k + 1), n),
        **{name: np.take_along_axis(values, best_first, axis=1).ravel() for name, values in by_learner.items()},
        "strategy": np.where(warm_rows, recommend.HYBRID, recommend.FALLBACK),
        "model_id": np.where(warm_rows, MODEL_ID, np.nan), "generated_at": generated_at,
    })


def load(url: str, n_learners: int, n_concepts: int) -> None:
    engine = sa.create_engine(url)
    rng = np.random.default_rng(0)
    generated_at = pd.Timestamp.now(tz="UTC")
    with engine.begin() as conn:
        learners, _, themes = synthetic(1, n_concepts)
        bulk.bulk_insert(conn, tables.resources, resources(rng))
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
            bulk.bulk_insert(conn, tables.user_recommendations,
                             recommendations_of(learners["user_id"].to_numpy(), generated_at, rng))
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

    def quantile(q: float) -> float:
        return every[min(len(every) - 1, int(q * len(every)))] * 1000

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


def during_write(url: str, statement: sa.TextClause, n_learners: int, readers: int,
                 shards: list[str]) -> tuple[dict, float]:
    """Reads while the night's writer rebuilds every shard of the day; the reads and the writer's wall seconds.
    The writer runs in a process of its own, as a worker would (a thread here would hold the readers' interpreter
    lock while it computes)."""
    writer = multiprocessing.get_context("spawn").Process(target=build_shards, args=(url, shards))
    started = time.perf_counter()
    writer.start()
    during = read_phase(url, statement, n_learners, readers, lambda: not writer.is_alive())
    writer.join()
    assert writer.exitcode == 0, f"the writer failed (exit {writer.exitcode})"
    return during, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--learners", type=int, default=100_000)
    parser.add_argument("--concepts", type=int, default=100)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    shards = learner_shards.get_partition_keys()
    reads = {"queue": (QUEUE_READ, QUEUE_FLOOR_READ),
             "recommendations": (RECOMMENDATIONS_READ, RECOMMENDATIONS_FLOOR_READ)}
    phases: dict[str, dict] = {}
    with scratch_postgres() as url:
        migrate.upgrade(url)
        started = time.perf_counter()
        load(url, args.learners, args.concepts)
        print(f"{args.learners * args.concepts:,} card states and {args.learners:,} learners' recommendations "
              f"loaded in {time.perf_counter() - started:.0f} s", flush=True)
        night = build_shards(url, shards)
        print(f"the night's {len(shards)} shards built in {night:.0f} s", flush=True)
        for read, (view, floor) in reads.items():  # one read after the other: each has the readers to itself
            phases[read] = {"floor": read_phase(url, floor, args.learners, args.readers, for_seconds(args.seconds)),
                            "idle": read_phase(url, view, args.learners, args.readers, for_seconds(args.seconds))}
            phases[read]["during"], phases[read]["write_seconds"] = during_write(
                url, view, args.learners, args.readers, shards)
            print(f"{read}: " + ", ".join(f"{phase} p99 {phases[read][phase]['p99_ms']:.2f} ms"
                                          for phase in ("floor", "idle", "during")), flush=True)
        plans = {read: {kind: explain(url, statement, args.learners // 2) for kind, statement in
                        (("view", view), ("floor", floor))} for read, (view, floor) in reads.items()}
    report(args, phases, plans)


def figures_of(phases: dict) -> dict:
    """One read's figures: latency of its floor, idle and during the night's write; queries/s; the two ratios."""
    floor, idle, during = phases["floor"], phases["idle"], phases["during"]
    return {"p50_ms_floor": round(floor["p50_ms"], 3), "p99_ms_floor": round(floor["p99_ms"], 3),
            "p50_ms_idle": round(idle["p50_ms"], 3), "p99_ms_idle": round(idle["p99_ms"], 3),
            "p50_ms_during_write": round(during["p50_ms"], 3), "p99_ms_during_write": round(during["p99_ms"], 3),
            "queries_per_second": round(idle["qps"], 1), "queries_per_second_during_write": round(during["qps"], 1),
            "idle_p99_over_floor": round(idle["p99_ms"] / floor["p99_ms"], 3),
            "write_p99_over_idle": round(during["p99_ms"] / idle["p99_ms"], 3),
            "night_write_seconds": round(phases["write_seconds"], 1)}


def report(args, phases: dict, plans: dict) -> None:
    queue, recommendations = figures_of(phases["queue"]), figures_of(phases["recommendations"])
    figures = {"learners": args.learners, "card_states": args.learners * args.concepts, "readers": args.readers,
               **queue, "recommendations_per_learner": RECOMMENDATIONS_PER_LEARNER,
               **{f"recommendations_{key}": value for key, value in recommendations.items()}, "machine": machine()}
    labels = {"queue": ("floor: primary-key lookup of the theme rows", "view `app_revision_queue`, idle",
                        "view, while the night's shards rewrite the day"),
              "recommendations": ("floor: primary-key lookup of the learner's `user_recommendations` rows",
                                  "view `app_recommendations`, idle", "view, while the night's shards rewrite the day")}
    rows = [(label, phases[read][phase]) for read in labels
            for label, phase in zip(labels[read], ("floor", "idle", "during"))]
    publish("App reads during the nightly run", [
        f"`bench/app_reads.py`: {args.readers} concurrent readers (threads, one connection each) fetch random "
        f"learners' queues for today, then (a phase of their own) random learners' recommendations, over "
        f"{args.learners:,} learners, {args.learners * args.concepts:,} card states and "
        f"{RECOMMENDATIONS_PER_LEARNER} recommendations a learner ({WARM_SHARE:.0%} of learners served by the NCF "
        f"model, the others by content and graph; {N_RESOURCES:,} resources) on PostgreSQL; {args.seconds:.0f} s per "
        "idle phase; each write phase lasts while every learner shard's revision_queues is rebuilt one after another "
        f"(during the queue reads {queue['night_write_seconds']:.0f} s, during the recommendation reads "
        f"{recommendations['night_write_seconds']:.0f} s). Latency as the app sees it (client round trip, Python "
        "included).",
        "",
        "| reads | queries | queries/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
        *[f"| {label} | {r['queries']:,} | {r['qps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
          for label, r in rows],
        "",
        f"Queue: p99 idle / floor **{queue['idle_p99_over_floor']:.2f}x** (goal <= 1.5x); p99 during the write / "
        f"idle **{queue['write_p99_over_idle']:.2f}x** (goal <= 2x). Recommendations: p99 idle / floor "
        f"**{recommendations['idle_p99_over_floor']:.2f}x**, during the write / idle "
        f"**{recommendations['write_p99_over_idle']:.2f}x** (same goals). Reads that found nothing: "
        f"{sum(r['empty'] for _, r in rows)}.",
        "",
        "Plans of one read (`EXPLAIN (ANALYZE, BUFFERS)`): the queue through its view, then its floor; the "
        "recommendations through their view, then their floor:",
        *[line for read in plans for kind in ("view", "floor") for line in ("", "```", plans[read][kind], "```")],
    ], figures)


if __name__ == "__main__":
    main()
