"""Fault injection for the writers of learners' rows: stop a writer at one of its pause points
(learning_pipelines/pause_points.py), act there, let it go on, and check what must hold afterwards.

Actions at a point:
- `forget`: `learning-pipelines learners forget U` for a learner U the writer writes. It runs to its end while the
  writer waits, unless it has to wait for the writer's locks (seen in pg_stat_activity on PostgreSQL; on SQLite,
  when the writer holds the database's write lock): then the writer goes on and forget finishes after it. Holds
  afterwards: the writer succeeded, and nothing anywhere names U (every table with learners' rows, the rejects,
  the app's views).
- `terminate`: the writer's database sessions are terminated (PostgreSQL), then it goes on and fails.
- `kill`: the writer runs in a process of its own (`python -m tests.faults`), killed with SIGKILL at the point.
  After a termination or a kill: every table the writer writes is exactly as before it started (no half-written
  day, shard or model), and running it again gives exactly what an uninterrupted run gives on a copy of the same
  warehouse.

A scenario starts from a prepared warehouse (`prepared_warehouse`): a small simulated platform with memory
states and global FSRS weights, copied per scenario (a template database on PostgreSQL, a file copy on SQLite).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines import pause_points
from learning_pipelines.cli import main as cli
from learning_pipelines.db import bulk, learner_locks, migrate, tables
from learning_pipelines.db.engine import get_engine
from learning_pipelines.db.reads import shard_learners
from learning_pipelines.defs.card_memory_states import card_memory_states
from learning_pipelines.defs.complexity import concept_complexity
from learning_pipelines.defs.fsrs import fsrs_global_parameters, fsrs_parameters
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.ncf import ncf_model
from learning_pipelines.defs.recommendations import recommendations
from learning_pipelines.defs.resources import LocalModelStore, Warehouse
from learning_pipelines.defs.revision_queues import revision_queues
from learning_pipelines.demo import load_platform
from learning_pipelines.domain.simulate import simulate_platform

ROOT = Path(__file__).resolve().parents[2]
FORGET_SESSION, WRITER_SESSION = "faults_forget", "faults_writer"  # application_name on PostgreSQL
APP_VIEWS = ("app_revision_queue", "app_due_concepts", "app_recommendations")
# Columns a run stamps with its own time or id: two runs on the same data differ only there.
RUN_STAMPS = {"generated_at", "trained_at", "training_cooldown_until", "model_id", "checkpoint_uri", "train_seconds",
              "cutoff_at", "updated_at", "as_of", "pending_xids", "ready_at", "late"}
SHARD = learner_shards.get_partition_keys()[0]
# Enough epochs on the prepared platform for the model to beat popularity, so that it writes embeddings.
QUICK_NCF = {"ops": {"ncf_model": {"config": {"choose_by_validation": False, "epochs": 20}}}}


@dataclasses.dataclass(frozen=True)
class Writer:
    name: str
    assets: tuple
    points: tuple[str, ...]  # in the order the writer reaches them
    writes: tuple[sa.Table, ...]  # every table it writes
    partition_key: Callable[[dt.date], str | dg.MultiPartitionKey | None] = lambda today: None
    run_config: dict = dataclasses.field(default_factory=dict)
    # Readies a copy of the prepared warehouse for the run (e.g. new reviews for the memory states to take in, or
    # a first run whose rows the next one replaces): called with the copy's URL, the day and the model folder.
    prepare: Callable[..., None] = lambda url, today, model_dir: None


def _new_reviews(url: str, today: dt.date, model_dir: str) -> None:
    """A review a second after the latest of each of the shard's first learners' first cards (the same on every copy
    of the template): work for the states update."""
    with get_engine(url).begin() as conn:
        learners = shard_learners(conn, SHARD)[:5].tolist()
        logs = tables.review_logs
        latest = bulk.read_frame(conn, sa.select(logs.c.user_id, logs.c.concept_id, sa.func.max(logs.c.reviewed_at)
                                                 .label("reviewed_at")).where(logs.c.user_id.in_(learners))
                                 .group_by(logs.c.user_id, logs.c.concept_id))
        first_cards = latest.sort_values(["user_id", "concept_id"]).groupby("user_id").head(1)
        top_id = conn.execute(sa.select(sa.func.max(logs.c.id))).scalar_one()
        bulk.insert_review_logs(conn, first_cards.assign(
            id=np.arange(top_id + 1, top_id + 1 + len(first_cards)), rating=3, review_duration_ms=4000,
            reviewed_at=first_cards["reviewed_at"] + pd.Timedelta(seconds=1)))


def _built_once(name: str) -> Callable[..., None]:
    """The writer's output already there, as after last night's run: the next run deletes it before writing."""
    def prepare(url: str, today: dt.date, model_dir: str) -> None:
        assert run_writer(WRITERS[name], url, today, model_dir).success
    return prepare


WRITERS = {writer.name: writer for writer in (
    Writer("revision_queues", (revision_queues,),
           ("revision_queues.states_reading", "revision_queues.learners_locked",
            "revision_queues.cleared_revision_queue_theme",
            "revision_queues.day_cleared", "revision_queues.chunk_written", "revision_queues.before_commit"),
           (tables.revision_queue_theme, tables.revision_queue_user_summary, tables.tag_quality_debt_log,
            tables.queue_stats_daily, tables.revision_queue_windows),
           # Tomorrow (UTC) has not ended on any learner's calendar, whatever the hour: every learner is built.
           partition_key=lambda today: dg.MultiPartitionKey({"day": str(today + dt.timedelta(days=1)),
                                                             "shard": SHARD}),
           prepare=_built_once("revision_queues")),
    Writer("recommendations", (recommendations,),
           ("recommendations.ranked", "recommendations.before_commit"),
           (tables.user_recommendations,), partition_key=lambda today: SHARD, prepare=_built_once("recommendations")),
    Writer("fsrs_parameters", (fsrs_parameters,),
           ("fsrs_parameters.fitted", "fsrs_parameters.weights_written", "fsrs_parameters.before_commit"),
           (tables.srs_user_params, tables.card_memory_states), partition_key=lambda today: SHARD),
    Writer("card_memory_states", (card_memory_states,),
           ("card_memory_states.work_read", "card_memory_states.states_written", "card_memory_states.before_commit"),
           (tables.card_memory_states, tables.card_memory_state_progress), prepare=_new_reviews),
    Writer("ncf_model", (ncf_model,), ("ncf_model.trained", "ncf_model.before_commit"),
           (tables.ncf_models, tables.ncf_user_embeddings, tables.ncf_item_embeddings), run_config=QUICK_NCF),
)}


# --- the prepared warehouse and its copies --------------------------------------------------------------------

def prepare_template(url: str) -> None:
    """A small platform with up-to-date memory states, concept complexity and global FSRS weights (every writer can
    run on it)."""
    migrate.upgrade(url)
    load_platform(get_engine(url), simulate_platform(n_learners=120, n_concepts=40, n_resources=60, days=45, seed=11))
    resources = {"warehouse": Warehouse(database_url=url)}
    assert dg.materialize([card_memory_states], resources=resources).success
    assert dg.materialize([concept_complexity], resources=resources).success  # what recommendations rank by
    assert dg.materialize([fsrs_global_parameters], resources=resources, run_config={
        "ops": {"fsrs_global_parameters": {"config": {"global_fit_iterations": 5}}}}).success
    get_engine(url).dispose()


@contextlib.contextmanager
def copy_of(template_url: str, admin: sa.Engine | None) -> Iterator[str]:
    """A copy of the template warehouse, dropped afterwards."""
    get_engine(template_url).dispose()
    if admin is None:
        source = Path(sa.engine.make_url(template_url).database)
        target = source.with_name(f"copy_{uuid.uuid4().hex[:8]}.db")
        shutil.copyfile(source, target)
        url = f"sqlite:///{target}"
        try:
            yield url
        finally:
            get_engine(url).dispose()
            target.unlink(missing_ok=True)
        return
    template = sa.engine.make_url(template_url)
    name = f"lp_fault_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template.database}"'))
    url = template.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        for engine_url in (url, session_url(url, WRITER_SESSION), session_url(url, FORGET_SESSION)):
            get_engine(engine_url).dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def session_url(url: str, application_name: str) -> str:
    """On PostgreSQL, `url` whose sessions carry `application_name` (so the harness finds them); else `url`."""
    if not url.startswith("postgresql"):
        return url
    return sa.engine.make_url(url).update_query_dict({"application_name": application_name}) \
        .render_as_string(hide_password=False)


# --- running a writer ----------------------------------------------------------------------------------------

def run_writer(writer: Writer, url: str, today: dt.date, model_dir: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(list(writer.assets), partition_key=writer.partition_key(today),
                          resources={"warehouse": Warehouse(database_url=url),
                                     "model_store": LocalModelStore(base_dir=model_dir)},
                          run_config=writer.run_config or None, raise_on_error=False)


class Paused:
    """A writer run on a thread of its own, stopped at `point` until `go_on()`."""

    def __init__(self, writer: Writer, url: str, point: str, today: dt.date, model_dir: str):
        self.reached, self._resume = threading.Event(), threading.Event()
        self.result: dg.ExecuteInProcessResult | None = None
        pause_points.stop_at(point, self._wait_here)
        self._thread = threading.Thread(target=self._run, args=(writer, url, today, model_dir), daemon=True)
        self._thread.start()
        if not self.reached.wait(300):
            raise AssertionError(f"{writer.name} never reached {point}")

    def _wait_here(self, point: str) -> None:
        self.reached.set()
        self._resume.wait()

    def _run(self, *args) -> None:
        try:
            self.result = run_writer(*args)
        finally:
            self.reached.set()  # a writer that failed before the point does not leave the harness waiting

    def go_on(self) -> dg.ExecuteInProcessResult:
        self._resume.set()
        self._thread.join(300)
        pause_points.clear()
        assert self.result is not None, "the writer did not finish"
        return self.result


def sqlite_write_lock_held(url: str) -> bool:
    """Whether some connection holds the SQLite database's write lock now (asked without waiting)."""
    import sqlite3

    probe = sqlite3.connect(sa.engine.make_url(url).database, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        probe.close()


def forget_while_paused(paused: Paused, url: str, user_id: int) -> int:
    """`learners forget user_id` while the writer is stopped: to its end, or until it waits for the writer's locks
    (then the writer goes on first). Forget's exit status."""
    status: list[int] = []
    forget = threading.Thread(target=lambda: status.append(
        cli(["learners", "forget", str(user_id), "--database-url", session_url(url, FORGET_SESSION)])), daemon=True)
    if url.startswith("sqlite") and sqlite_write_lock_held(url):
        forget.start()  # it waits for the writer's commit (SQLite's busy timeout is far longer than the rest)
        paused.go_on()
    else:
        forget.start()
        _until_done_or_waiting_for_a_lock(forget, url)
        paused.go_on()
    forget.join(120)
    assert status, "learners forget did not finish"
    return status[0]


def _until_done_or_waiting_for_a_lock(forget: threading.Thread, url: str) -> None:
    if not url.startswith("postgresql"):
        forget.join(120)
        return
    with get_engine(url).connect() as conn:
        while forget.is_alive():
            waiting = conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name AND wait_event_type = 'Lock' "
                "AND datname = current_database()"),
                {"name": FORGET_SESSION}).scalar_one()
            conn.rollback()  # pg_stat_activity is read once per transaction
            if waiting:
                return
            forget.join(0.01)


def terminate_writer_sessions(url: str) -> int:
    with get_engine(url).connect() as conn:
        return conn.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                    "WHERE application_name = :name AND datname = current_database()"),
                            {"name": WRITER_SESSION}).scalar_one()


def kill_at(writer: Writer, url: str, point: str, today: dt.date, model_dir: str, scratch: Path) -> None:
    """The writer in a process of its own, killed (SIGKILL) when it reaches `point`."""
    os.mkfifo(scratch / "reached")
    os.mkfifo(scratch / "resume")
    env = {**os.environ, pause_points.PAUSE_AT_ENV: point, pause_points.PAUSE_DIR_ENV: str(scratch)}
    process = subprocess.Popen([sys.executable, "-m", "tests.support.faults", writer.name, url, str(today), model_dir],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with open(scratch / "reached") as announced:  # returns at the point, or empty when the process ends first
            assert announced.read() == point, process.communicate(timeout=60)[1].decode()[-2000:]
        process.send_signal(signal.SIGKILL)
        assert process.wait(60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(60)


# --- what must hold --------------------------------------------------------------------------------------------

def written_rows(url: str, writer: Writer) -> dict[str, pd.DataFrame]:
    """Every row of the tables the writer writes, sorted, without the columns a run stamps with its own time."""
    with get_engine(url).connect() as conn:
        frames = {}
        for table in writer.writes:
            frame = bulk.read_frame(conn, sa.select(table))
            frame = frame.drop(columns=[c for c in frame.columns if c in RUN_STAMPS])
            frames[table.name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return frames


def assert_same_rows(found: dict[str, pd.DataFrame], expected: dict[str, pd.DataFrame]) -> None:
    """Equal rows; floats to 1e-4 relative (recommendations score retrievability at the run's own instant)."""
    assert found.keys() == expected.keys()
    for name in found:
        pd.testing.assert_frame_equal(found[name], expected[name], check_dtype=False, check_exact=False, rtol=1e-4,
                                      obj=name)


def rows_naming(url: str, user_id: int) -> dict[str, int]:
    """Rows that name `user_id`, per table or app view (only those with any)."""
    named = {}
    with get_engine(url).connect() as conn:
        for table in learner_locks.LEARNER_TABLE_ORDER:
            named[table.name] = conn.execute(sa.select(sa.func.count()).select_from(table)
                                             .where(table.c.user_id == user_id)).scalar_one()
        for view in APP_VIEWS:
            named[view] = conn.execute(sa.text(f"SELECT count(*) FROM {view} WHERE user_id = :u"),  # nosec B608
                                       {"u": user_id}).scalar_one()
        rejects = conn.execute(sa.select(tables.review_log_rejects.c.raw_row)).scalars()
        named["review_log_rejects"] = sum(f'"user_id": {user_id}' in raw for raw in rejects)
    return {name: n for name, n in named.items() if n}


def a_learner_it_writes(url: str, writer: Writer) -> int:
    """A learner of the shard the writer writes (with reviews, so every writer has rows of theirs)."""
    with get_engine(url).connect() as conn:
        with_reviews = set(conn.execute(sa.select(tables.review_logs.c.user_id).distinct()).scalars())
        interacted = set(conn.execute(sa.select(tables.user_interactions.c.user_id).distinct()).scalars())
        return int(next(u for u in shard_learners(conn, SHARD) if u in with_reviews and u in interacted))


# --- scenarios -------------------------------------------------------------------------------------------------

def forget_scenario(writer: Writer, template_url: str, admin, point: str, today: dt.date, model_dir: str) -> None:
    with copy_of(template_url, admin) as url:
        writer.prepare(url, today, model_dir)
        victim = a_learner_it_writes(url, writer)
        paused = Paused(writer, session_url(url, WRITER_SESSION), point, today, model_dir)
        status = forget_while_paused(paused, url, victim)
        result = paused.result
        assert status == 0, "learners forget failed"
        assert result.success, f"{writer.name} failed when a learner was forgotten at {point}"
        assert rows_naming(url, victim) == {}, f"learner {victim} is back after {writer.name} at {point}"
        others = written_rows(url, writer)
        assert any(len(frame) for frame in others.values()), "the other learners' rows were written"


def interrupted_scenario(writer: Writer, template_url: str, admin, point: str, action: str, today: dt.date,
                         model_dir: str, scratch: Path) -> None:
    with copy_of(template_url, admin) as url, copy_of(template_url, admin) as reference_url:
        for prepared in (url, reference_url):
            writer.prepare(prepared, today, model_dir)
        assert run_writer(writer, reference_url, today, model_dir).success
        expected = written_rows(reference_url, writer)
        before = written_rows(url, writer)
        if action == "kill":
            kill_at(writer, url, point, today, model_dir, scratch)
            interrupted = True
        else:
            paused = Paused(writer, session_url(url, WRITER_SESSION), point, today, model_dir)
            terminate_writer_sessions(url)
            # Between two transactions the writer holds no session of its own: the pool connects again (pre-ping)
            # and the run goes on as if nothing happened.
            interrupted = not paused.go_on().success
        if interrupted:
            assert_same_rows(written_rows(url, writer), before)  # nothing half-written
            assert run_writer(writer, url, today, model_dir).success
        assert_same_rows(written_rows(url, writer), expected)  # the re-run is the uninterrupted run


if __name__ == "__main__":  # a writer run in a process of its own, for `kill_at`
    name, url, day, model_dir = sys.argv[1:5]
    sys.exit(0 if run_writer(WRITERS[name], url, dt.date.fromisoformat(day), model_dir).success else 1)
