"""The smoke ingest: 10,000 synthetic reviews imported into a throw-away schema of the warehouse database at
>= 1,000 rows/s, card_memory_states and revision_queues materialized from them in-process, and one learner's queue
read in <= 100 ms (median). The schema is always dropped. On SQLite it runs in a temporary SQLite file. It runs only
when the warehouse check passed, and it shares the database's advisory locks (partition DDL, card_memory_states)
with production: it waits for a card_memory_states update in progress."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import statistics
import tempfile
import time
import warnings
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from learning_pipelines import settings
from learning_pipelines.db import migrate, scratch_schema
from learning_pipelines.db.engine import get_engine
from learning_pipelines.db.learner_queue import learner_queue, learner_with_most_themes
from learning_pipelines.demo import load_platform
from learning_pipelines.deploy.checks.session import Outcome, Session
from learning_pipelines.domain.simulate import simulate_platform
from learning_pipelines.errors import one_line
from learning_pipelines.ingest import importer


@contextlib.contextmanager
def _dagster_previews_quiet() -> Iterator[None]:
    """Dagster warns of features in preview or beta as the assets are defined and as they run: nothing an operator
    acts on, so `deploy verify` does not print them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        yield


with _dagster_previews_quiet():
    from learning_pipelines.defs.card_memory_states import card_memory_states
    from learning_pipelines.defs.learner_shards import learner_shards
    from learning_pipelines.defs.resources import Warehouse
    from learning_pipelines.defs.revision_queues import revision_queues

# A day's imports of a small platform must keep pace, and the app reads one learner's queue per screen, so 100 ms is
# the most a screen can spend on it.
SMOKE_REVIEWS = 10_000
MIN_IMPORT_ROWS_PER_S = 1_000
MAX_QUEUE_READ_MS = 100.0
QUEUE_READS = 15


def check_smoke_ingest(session: Session) -> Outcome:
    if session.warehouse_problem:
        return Outcome(False, f"not run: {session.warehouse_problem}", "fix the warehouse check first")
    if session.warehouse.dialect.name != "postgresql":
        with tempfile.TemporaryDirectory(prefix="deploy_verify_") as folder:
            return _smoke_in(session, f"sqlite:///{Path(folder) / 'warehouse.db'}", "a temporary SQLite file")
    try:
        left_behind = scratch_schema.scratch_schemas(session.warehouse)
        schema = scratch_schema.create_schema(session.warehouse)
    except sa.exc.SQLAlchemyError as error:
        return Outcome(False, "cannot create a throw-away schema in the warehouse database: "
                              + session.reason(error),
                       "grant the user of the warehouse URL CREATE on its database, or run verify as one who has it")
    outcome = Outcome(False, "interrupted")
    try:
        outcome = _smoke_in(session, scratch_schema.schema_url(session.target.warehouse_url, schema),
                            f"schema {schema}")
    finally:
        try:
            scratch_schema.drop_schema(session.warehouse, schema)
        except sa.exc.SQLAlchemyError as error:
            outcome = Outcome(False, f"{outcome.detail}; the scratch schema {schema} could not be dropped "
                              f"({session.reason(error)})", f'drop it: DROP SCHEMA "{schema}" CASCADE')
    if left_behind:
        # A verify killed mid-smoke cannot drop its schema (or another verify is running now).
        names = ", ".join(left_behind[:3]) + (", ..." if len(left_behind) > 3 else "")
        outcome = dataclasses.replace(outcome, detail=f"{outcome.detail}; note: {len(left_behind)} schema(s) of "
                                      f"earlier runs remain ({names}): drop each with DROP SCHEMA <name> CASCADE "
                                      "once no verify is running")
    return outcome


def _smoke_in(session: Session, url: str, where: str) -> Outcome:
    """The smoke ingest into the empty database `url` names; every failure is an Outcome, nothing raises."""
    try:
        with _dagster_previews_quiet():
            return _smoke(url, where)
    except Exception as error:  # noqa: BLE001 - whatever stops the smoke ingest is its result
        return Outcome(False, f"the smoke ingest failed in {where}: {type(error).__name__}: {session.reason(error)}")
    finally:
        get_engine(url).dispose()  # the resource's pooled connections: the schema is dropped next


def _smoke(url: str, where: str) -> Outcome:
    migrate.upgrade(url)
    engine = get_engine(url)
    platform, reviews = _synthetic_platform()
    load_platform(engine, dataclasses.replace(platform, review_logs=platform.review_logs.iloc[:0]))
    with tempfile.TemporaryDirectory(prefix="deploy_verify_") as folder:
        path = _write_review_csv(reviews, Path(folder) / "reviews.csv")
        started = time.perf_counter()
        summary = importer.import_review_file(engine, path)
        import_seconds = time.perf_counter() - started
    if summary.n_loaded != len(reviews):
        return Outcome(False, f"imported {summary.n_loaded} of {len(reviews)} synthetic reviews in {where}: "
                              + "; ".join(f"{n} x {reason}" for reason, n in summary.reject_reasons.items()),
                       "the importer rejects reviews it should take: run the test suite (`make test`) on this build")
    rate = summary.n_loaded / import_seconds

    day = dt.datetime.now(zoneinfo.ZoneInfo(settings.SCHEDULE_TIMEZONE)).date()
    shard = learner_shards.get_partition_keys()[0]
    # In an ephemeral instance: the smoke's run stays out of the deployment's run history and its sensors.
    result = dg.materialize(
        [card_memory_states, revision_queues],
        resources={"warehouse": Warehouse(database_url=url)}, raise_on_error=False,
        partition_key=dg.MultiPartitionKey({"day": day.isoformat(), "shard": shard}),
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
    failed_checks = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    if not result.success or failed_checks:
        failures = [one_line(str(event.step_failure_data.error.message if event.step_failure_data.error else
                                 event.step_failure_data.user_failure_data.description))[:300]
                    for event in result.get_step_failure_events()]
        return Outcome(False, f"materializing card_memory_states and revision_queues for {day}, shard {shard} in "
                              f"{where} failed: " + "; ".join(failures + [f"check {name} failed" for name in failed_checks]),
                       "the pipeline fails on fresh data: run `make test` on this build and read the run's error")

    with engine.connect() as conn:
        learner = learner_with_most_themes(conn, day)
        if learner is None:
            return Outcome(False, f"revision_queues wrote no queue for {day}, shard {shard} in {where}",
                           "the pipeline built no queue from fresh data: run `make test` on this build")
        learner_queue(conn, learner, day)  # the first read plans the statements; an app's reads are warm
        seconds = []
        for _ in range(QUEUE_READS):
            started = time.perf_counter()
            queue = learner_queue(conn, learner, day)
            seconds.append(time.perf_counter() - started)
    read_ms = statistics.median(seconds) * 1000
    detail = (f"in {where}: {summary.n_loaded:,} reviews imported at {rate:,.0f} rows/s (need >= "
              f"{MIN_IMPORT_ROWS_PER_S:,}); learner {learner}'s queue ({len(queue.themes)} theme rows) read in "
              f"{read_ms:.1f} ms, median of {QUEUE_READS} (need <= {MAX_QUEUE_READ_MS:.0f} ms)")
    if rate < MIN_IMPORT_ROWS_PER_S or read_ms > MAX_QUEUE_READ_MS:
        return Outcome(False, detail, "the warehouse is too slow for production: look for load on it "
                                      "(pg_stat_activity), a saturated disk, or a lost index (`learning-pipelines db "
                                      "verify`), then run `deploy verify` again")
    return Outcome(True, detail)


def _synthetic_platform():
    """A small simulated platform, and the first SMOKE_REVIEWS of its reviews (whole histories but the last one's)."""
    platform = simulate_platform(n_learners=100, n_concepts=200, n_themes=12, n_resources=20, days=120,
                                 mean_cards_per_learner=20, seed=20)
    reviews = platform.review_logs.sort_values(["user_id", "reviewed_at", "id"]).head(SMOKE_REVIEWS)
    if len(reviews) < SMOKE_REVIEWS:
        raise RuntimeError(f"the simulated platform has {len(reviews)} reviews, fewer than {SMOKE_REVIEWS}")
    return platform, reviews


def _write_review_csv(reviews, path: Path) -> Path:
    """The reviews as a review file the importer reads (its canonical column names)."""
    rows = reviews.rename(columns={"id": "review_id", "concept_id": "card_id", "rating": "review_rating",
                                   "reviewed_at": "review_time", "review_duration_ms": "review_duration"})
    rows["review_time"] = rows["review_time"].map(lambda moment: moment.isoformat())
    columns = ["review_id", "user_id", "card_id", "review_rating", "review_time", "review_duration", "state"]
    rows[columns].to_csv(path, index=False)
    return path
