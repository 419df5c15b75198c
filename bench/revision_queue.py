"""Revision-queue throughput: the domain step on 10,000,000 card states in memory, a straightforward per-learner
loop on a 20,000-card sample beside it; with --postgres, the `revision_queues` asset end to end (every learner
shard of the day: PostgreSQL in, queue tables out) beside the I/O floor of the same run.

    .venv/bin/python bench/revision_queue.py [--learners 100000] [--concepts 100] [--postgres [--cards 10000000]]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, peak_rss_mib, publish
from scratch import scratch_postgres

from learning_pipelines.domain import fsrs
from learning_pipelines.domain.revision import build_queues

# Tomorrow (UTC): a day that has not ended on any learner's calendar, whatever the hour (Tokyo's today ends at 19:00).
DAY = dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)
TIMEZONES = np.array(["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"])
CHUNK = 2000  # learners per domain call in the throughput run


def synthetic(n_learners: int, n_concepts: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    learners = pd.DataFrame({
        "user_id": np.arange(1, n_learners + 1), "timezone": rng.choice(TIMEZONES, n_learners),
        "day_start_hour": 4, "retention_target": rng.choice([0.85, 0.9, 0.95], n_learners),
        "spacing_multiplier": rng.choice([0.8, 1.0, 1.5], n_learners),
    })
    n = n_learners * n_concepts
    states = pd.DataFrame({
        "user_id": np.repeat(learners["user_id"].to_numpy(), n_concepts),
        "concept_id": np.tile(np.arange(1, n_concepts + 1), n_learners),
        "stability_days": rng.lognormal(2.0, 1.0, n),
        "last_review_at": pd.Timestamp(DAY, tz="UTC") - pd.to_timedelta(rng.random(n) * 60, unit="D"),
        "decay": fsrs.DEFAULT_WEIGHTS[20],
    })
    concept_ids = np.arange(1, n_concepts + 1)
    theme_key = np.where(concept_ids % 25 == 0, "UNMAPPED", (concept_ids % 10 + 1).astype(str))
    themes = pd.DataFrame({"concept_id": concept_ids, "theme_key": theme_key, "is_fallback": theme_key == "UNMAPPED"})
    return learners, states, themes


def domain_run(learners, states, themes, chunk=CHUNK):
    started = time.perf_counter()
    cards_per_learner = len(states) // len(learners)
    due = 0
    for offset in range(0, len(learners), chunk):
        part = learners.iloc[offset:offset + chunk]
        cards = states.iloc[offset * cards_per_learner:(offset + len(part)) * cards_per_learner]
        due += int(build_queues(cards, part, themes, DAY).summaries["due_today_total"].sum())
    return time.perf_counter() - started, due


def naive_run(learners, states, themes):
    """One learner at a time, one card at a time: what a first implementation would write."""
    started = time.perf_counter()
    theme_of = dict(zip(themes["concept_id"], themes["theme_key"]))
    due_total = 0
    for learner in learners.itertuples():
        day_start = pd.Timestamp(DAY).replace(hour=learner.day_start_hour).tz_localize(learner.timezone)
        day_end = day_start + pd.Timedelta(days=1)
        per_theme = {}
        for card in states.loc[states["user_id"] == learner.user_id].itertuples():
            factor = 0.9 ** (-1 / card.decay) - 1
            interval = card.stability_days / factor * (learner.retention_target ** (-1 / card.decay) - 1)
            due_at = card.last_review_at + pd.Timedelta(days=interval * learner.spacing_multiplier)
            if due_at <= day_end:
                theme = theme_of.get(card.concept_id, "UNMAPPED")
                per_theme[theme] = per_theme.get(theme, 0) + 1
                due_total += 1
        sorted(per_theme.items(), key=lambda item: -item[1])
    return time.perf_counter() - started, due_total


SEED_SQL = [
    "SELECT setseed(0.42)",
    "INSERT INTO users (user_id, timezone, day_start_hour) SELECT u, (ARRAY['UTC', 'Europe/Berlin', "
    "'America/New_York', 'Asia/Tokyo'])[1 + u % 4], 4 FROM generate_series(1, :learners) u",
    # a third of these learners have no daily target, the others 20 or 50 (their list of the day is written)
    "INSERT INTO user_learning_prefs (user_id, spacing_multiplier, retention_target_override, revision_daily_target) "
    "SELECT u, (ARRAY[0.8, 1.0, 1.5])[1 + u % 3], (ARRAY[0.85, 0.9, 0.95])[1 + u / 3 % 3], "
    "(ARRAY[NULL, 20, 50])[1 + u / 9 % 3] FROM generate_series(1, :learners) u WHERE u % 2 = 0",
    "INSERT INTO themes (theme_id, name) SELECT t, 'theme ' || t FROM generate_series(1, 10) t",
    "INSERT INTO concepts (concept_id, name) SELECT c, 'concept ' || c FROM generate_series(1, :concepts) c",
    # one concept in 25 has no theme: its due cards are logged as tag-quality debt
    "INSERT INTO concept_theme_map (concept_id, theme_id) SELECT c, c % 10 + 1 FROM generate_series(1, :concepts) c "
    "WHERE c % 25 <> 0",
    "INSERT INTO card_memory_states (user_id, concept_id, stability_days, difficulty, n_reviews, last_review_at, "
    "due_at, weights_source, decay) SELECT u, c, s, 5, 3, at, at + s * interval '1 day', 'global', 0.1542 "
    # learner by learner, as the memory-state replay writes them (learners in chunks, each learner's cards together)
    "FROM generate_series(1, :learners) u CROSS JOIN LATERAL generate_series(1, :concepts + 0 * u) c, "
    # drawn per card: the lateral subquery refers to u and c, else PostgreSQL draws once for all
    "LATERAL (SELECT exp(2 + (random() + random() + random() - 1.5) * 2 + 0 * u * c) AS s, "
    "date_trunc('day', now()) - random() * interval '60 days' AS at) drawn",
    "VACUUM ANALYZE",  # hint bits set and statistics taken, as a table the night reads has had them
]
STATES_COLUMNS = "user_id, concept_id, stability_days, last_review_at, decay"
OUTPUT_TABLES = ("revision_queue_theme", "revision_queue_user_summary", "tag_quality_debt_log",
                 "revision_queue_target_concept", "queue_stats_daily", "revision_queue_windows")


def seeded_warehouse(url: str, n_learners: int, n_concepts: int) -> None:
    """A migrated warehouse with n_learners x n_concepts card states, made by the database itself (the bench
    process never holds them). Its memory states include every review (there are none)."""
    import sqlalchemy as sa

    from learning_pipelines.db import migrate
    from learning_pipelines.db.memory_state_progress import Progress, write_progress

    migrate.upgrade(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in SEED_SQL[:-1]:
            conn.execute(sa.text(statement), {"learners": n_learners, "concepts": n_concepts})
        write_progress(conn, Progress(0, 0, [], dt.datetime.now(dt.timezone.utc), None, None, None))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(SEED_SQL[-1]))
    engine.dispose()


class ByteCounter(io.RawIOBase):
    """Where the floor's COPY out goes: bytes counted, nothing kept."""

    def __init__(self):
        self.n_bytes = 0

    def write(self, data) -> int:
        self.n_bytes += len(data)
        return len(data)


def io_floor(url: str) -> dict:
    """The I/O floor of the night: COPY out of every card state the queues read (binary, as the asset reads
    them) plus COPY in (CSV, as the asset writes them) of exactly the rows the asset wrote, into empty copies
    of the output tables with the same keys."""
    import psycopg2

    raw = psycopg2.connect(sa_url_to_dsn(url))
    try:
        with raw.cursor() as cursor:
            sink = ByteCounter()
            started = time.perf_counter()
            cursor.copy_expert(f"COPY (SELECT {STATES_COLUMNS} FROM card_memory_states) TO STDOUT (FORMAT binary)", sink)
            copy_out = time.perf_counter() - started
            written = {}
            for table in OUTPUT_TABLES:
                written[table] = io.StringIO()
                cursor.copy_expert(f"COPY {table} TO STDOUT (FORMAT csv)", written[table])
                cursor.execute(f"CREATE TABLE floor_{table} (LIKE {table} INCLUDING ALL)")
            raw.commit()
            started = time.perf_counter()
            for table, rows in written.items():
                rows.seek(0)
                cursor.copy_expert(f"COPY floor_{table} FROM STDIN (FORMAT csv)", rows)
            raw.commit()
            copy_in = time.perf_counter() - started
            rows_in = {table: rows.getvalue().count("\n") for table, rows in written.items()}
    finally:
        raw.close()
    return {"copy_out_seconds": copy_out, "copy_in_seconds": copy_in, "copy_out_mib": sink.n_bytes / 2**20,
            "rows_in": rows_in}


def sa_url_to_dsn(url: str) -> str:
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def run_the_night(url: str) -> dict:
    """Every learner shard of today's revision_queues, one `dg.materialize` after another, in a process of its
    own (so its peak RSS is the asset's): wall seconds and peak RSS."""
    env = {**os.environ, "LEARNING_PIPELINES_DATABASE_URL": url}  # a URL never goes in argv
    done = subprocess.run([sys.executable, __file__, "--materialize-shards"], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def materialize_shards() -> None:
    """The child process of run_the_night."""
    import dagster as dg

    from learning_pipelines.defs.learner_shards import learner_shards
    from learning_pipelines.defs.resources import Warehouse
    from learning_pipelines.defs.revision_queues import revision_queues

    instance = dg.DagsterInstance.ephemeral()  # one instance for the night, as a deployment has
    started = time.perf_counter()
    for shard in learner_shards.get_partition_keys():
        result = dg.materialize([revision_queues], resources={"warehouse": Warehouse()}, instance=instance,
                                partition_key=dg.MultiPartitionKey({"day": DAY.isoformat(), "shard": shard}))
        assert result.success
    print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mib(),
                      "shards": len(learner_shards.get_partition_keys())}))


def end_to_end(n_cards: int, n_concepts: int) -> tuple[list[str], dict]:
    import sqlalchemy as sa

    n_learners = n_cards // n_concepts
    with scratch_postgres() as url:
        started = time.perf_counter()
        seeded_warehouse(url, n_learners, n_concepts)
        seeding = time.perf_counter() - started
        ours = run_the_night(url)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            written = {table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() for table in OUTPUT_TABLES}
        engine.dispose()
        floor = io_floor(url)
        load = os.getloadavg()  # over the night and the floor: other work slows the night (both cores) the more
        assert floor["rows_in"] == written, (floor["rows_in"], written)
    floor_seconds = floor["copy_out_seconds"] + floor["copy_in_seconds"]
    ratio = ours["seconds"] / floor_seconds
    lines = [
        f"End to end on PostgreSQL (`--postgres --cards {n_cards}`): {n_cards:,} card states ({n_learners:,} learners x "
        f"{n_concepts} concepts, made by the database in {seeding:.0f} s), the night's {ours['shards']} learner shards of "
        f"`revision_queues` one `dg.materialize` after another in a process of their own; the I/O floor in the same run: "
        f"COPY out of the same states (binary, {floor['copy_out_mib']:,.0f} MiB) plus COPY in of exactly the rows written "
        f"({', '.join(f'{n:,} {t}' for t, n in written.items())}) into empty tables with the same keys.",
        "",
        "| run | seconds | card states/s | peak RSS (MiB) |",
        "|---|---:|---:|---:|",
        f"| I/O floor: COPY out {floor['copy_out_seconds']:.1f} s + COPY in {floor['copy_in_seconds']:.1f} s | "
        f"{floor_seconds:.1f} | {n_cards / floor_seconds:,.0f} | — |",
        f"| `revision_queues`, every shard | {ours['seconds']:.1f} | {n_cards / ours['seconds']:,.0f} "
        f"| {ours['peak_rss_mb']:,.0f} |",
    ]
    lines += ["", f"Ours / floor: **{ratio:.2f}x** (goal <= 2x); peak RSS **{ours['peak_rss_mb']:,.0f} MiB** (goal < 1,500)."
              + f" Load average after the floor (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in load)}."]
    figures = {"card_states": n_cards, "end_to_end_seconds": round(ours["seconds"], 2),
               "io_floor_seconds": round(floor_seconds, 2), "ratio": round(ratio, 3),
               "peak_rss_mb": round(ours["peak_rss_mb"]),
               "load_average_5m": round(load[1], 2)}
    return lines, figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--learners", type=int, default=100_000, help="learners of the in-memory domain run")
    parser.add_argument("--concepts", type=int, default=100, help="cards per learner")
    parser.add_argument("--postgres", action="store_true", help="also run the asset end to end on PostgreSQL")
    parser.add_argument("--cards", type=int, default=10_000_000, help="card states of the PostgreSQL run")
    parser.add_argument("--materialize-shards", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.materialize_shards:
        return materialize_shards()

    learners, states, themes = synthetic(args.learners, args.concepts)
    rss_before = peak_rss_mib()
    seconds, due = domain_run(learners, states, themes)
    rate = len(states) / seconds
    sample_learners = learners.iloc[:200]
    sample = states.iloc[:200 * args.concepts]
    fast_seconds, fast_due = domain_run(sample_learners, sample, themes, chunk=200)
    slow_seconds, slow_due = naive_run(sample_learners, sample, themes)
    assert fast_due == slow_due, (fast_due, slow_due)
    del learners, states
    lines = [
        f"`bench/revision_queue.py`: {args.learners * args.concepts:,} card states ({args.learners:,} learners x "
        f"{args.concepts} concepts, {len(TIMEZONES)} time zones) in memory, learners in chunks of {CHUNK}.",
        "",
        "| run | card states | seconds | card states/s |",
        "|---|---:|---:|---:|",
        f"| domain step (`build_queues`) | {args.learners * args.concepts:,} | {seconds:.2f} | {rate:,.0f} |",
        f"| same, 200 learners in one chunk | {len(sample):,} | {fast_seconds:.3f} | {len(sample) / fast_seconds:,.0f} |",
        f"| straightforward per-learner loop | {len(sample):,} | {slow_seconds:.2f} | {len(sample) / slow_seconds:,.0f} |",
        "",
        f"Domain step: **{rate:,.0f}** card states/s (goal >= 1,000,000); against the loop on the same 20,000 "
        f"cards (same due count, {fast_due:,}): **{slow_seconds / fast_seconds:,.0f}x**. Peak RSS of the bench "
        f"{peak_rss_mib():,.0f} MiB (the in-memory input alone: {rss_before:,.0f} MiB).",
    ]
    figures = {"domain_card_states_per_second": round(rate)}
    if args.postgres:
        e2e_lines, e2e_figures = end_to_end(args.cards, args.concepts)
        lines += ["", *e2e_lines]
        figures.update(e2e_figures)
    publish("Revision queues", lines, {**figures, "machine": machine()})


if __name__ == "__main__":
    main()
