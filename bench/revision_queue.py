"""Revision-queue throughput: the domain step on 10,000,000 card states, a straightforward per-learner
loop on a 20,000-card sample beside it, and end to end (PostgreSQL in, queue tables out) on 1,000,000.

    .venv/bin/python bench/revision_queue.py [--learners 100000] [--concepts 100] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import peak_rss_mib, publish  # noqa: E402
from scratch import scratch_postgres  # noqa: E402

from learning_pipelines.domain import fsrs  # noqa: E402
from learning_pipelines.domain.revision import build_queues  # noqa: E402

DAY = dt.datetime.now(dt.timezone.utc).date()  # queues are built for the current day only
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


def end_to_end(n_learners: int, n_concepts: int) -> dict:
    import dagster as dg
    import sqlalchemy as sa

    from learning_pipelines.db import bulk, migrate, tables
    from learning_pipelines.db.memory_states import Progress, write_progress
    from learning_pipelines.defs.learner_shards import learner_shards
    from learning_pipelines.defs.resources import Warehouse
    from learning_pipelines.defs.revision_queues import revision_queues

    with scratch_postgres() as url:
        migrate.upgrade(url)
        engine = sa.create_engine(url)
        learners, states, themes = synthetic(n_learners, n_concepts, seed=1)
        with engine.begin() as conn:
            bulk.bulk_insert(conn, tables.users, learners[["user_id", "timezone", "day_start_hour"]])
            bulk.bulk_insert(conn, tables.themes, pd.DataFrame({"theme_id": range(1, 11), "name": "t"}))
            bulk.bulk_insert(conn, tables.concepts, pd.DataFrame({"concept_id": themes["concept_id"], "name": "c"}))
            mapped = themes.loc[~themes["is_fallback"]]
            bulk.bulk_insert(conn, tables.concept_theme_map, pd.DataFrame(
                {"concept_id": mapped["concept_id"], "theme_id": mapped["theme_key"].astype(int)}))
            bulk.bulk_insert(conn, tables.card_memory_states, states.assign(
                difficulty=5.0, n_reviews=3, weights_source="global",
                due_at=states["last_review_at"] + pd.to_timedelta(states["stability_days"], unit="D")))
            # As card_memory_states records it: the states include every review (there are none).
            write_progress(conn, Progress(0, 0, [], dt.datetime.now(dt.timezone.utc), None, None, None))
        started = time.perf_counter()
        for shard in learner_shards.get_partition_keys():  # the night's shard runs, one after another
            result = dg.materialize([revision_queues], resources={"warehouse": Warehouse(database_url=url)},
                                    partition_key=dg.MultiPartitionKey({"day": DAY.isoformat(), "shard": shard}))
            assert result.success
        seconds = time.perf_counter() - started
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT count(*) FROM revision_queue_theme")).scalar_one()
        engine.dispose()
        return {"cards": len(states), "seconds": seconds, "theme_rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--learners", type=int, default=100_000)
    parser.add_argument("--concepts", type=int, default=100)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()

    learners, states, themes = synthetic(args.learners, args.concepts)
    rss_before = peak_rss_mib()
    seconds, due = domain_run(learners, states, themes)
    rate = len(states) / seconds
    sample_learners = learners.iloc[:200]
    sample = states.iloc[:200 * args.concepts]
    fast_seconds, fast_due = domain_run(sample_learners, sample, themes, chunk=200)
    slow_seconds, slow_due = naive_run(sample_learners, sample, themes)
    assert fast_due == slow_due, (fast_due, slow_due)
    lines = [
        f"`bench/revision_queue.py`: {len(states):,} card states ({args.learners:,} learners x {args.concepts} "
        f"concepts, {len(TIMEZONES)} time zones), learners in chunks of {CHUNK}.",
        "",
        "| run | card states | seconds | card states/s |",
        "|---|---:|---:|---:|",
        f"| domain step (`build_queues`) | {len(states):,} | {seconds:.2f} | {rate:,.0f} |",
        f"| same, 200 learners in one chunk | {len(sample):,} | {fast_seconds:.3f} | {len(sample) / fast_seconds:,.0f} |",
        f"| straightforward per-learner loop | {len(sample):,} | {slow_seconds:.2f} | {len(sample) / slow_seconds:,.0f} |",
        "",
        f"Goal >= 1,000,000 card states/s: **{rate:,.0f}**. Speed ratio against the loop on the same 20,000 "
        f"cards (same due count, {fast_due:,}): **{slow_seconds / fast_seconds:,.0f}x**. Peak RSS "
        f"{peak_rss_mib():,.0f} MiB (the 10M-state input alone: {rss_before:,.0f} MiB peak before the run).",
    ]
    if not args.skip_postgres:
        e2e = end_to_end(10_000, 100)
        lines += ["", f"End to end on PostgreSQL (the `revision_queues` asset, `dg.materialize` of every learner shard of the day in turn, learners in chunks of 200): "
                  f"{e2e['cards']:,} card states read, {e2e['theme_rows']:,} theme rows written in {e2e['seconds']:.1f} s "
                  f"({e2e['cards'] / e2e['seconds']:,.0f} card states/s)."]
    publish("Revision queues", lines)


if __name__ == "__main__":
    main()
