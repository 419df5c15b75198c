"""The app's read contract: the views of migration 0011 have exactly the documented columns on both databases,
a learner's queue reads through them, and no read ever sees a learner's day half-written."""

import datetime as dt
import re
import threading
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, migrate, tables
from learning_pipelines.db.engine import get_engine
from learning_pipelines.db.learner_queue import APP_VIEWS, learner_queue, revision_queue_view, todays_queue_view
from learning_pipelines.db.memory_state_progress import Progress, write_progress
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.revision_queues import revision_queues
from learning_pipelines.domain.learner_shards import shard_of

README = Path(__file__).resolve().parents[2] / "README.md"
TODAY = dt.datetime.now(dt.timezone.utc).date()


def _documented_columns() -> dict[str, list[str]]:
    """Per view, the first column of the table that follows its paragraph in the README's "Reading from the app"."""
    section = README.read_text().split("## Reading from the app", 1)[1].split("\n## ", 1)[0]
    documented, current = {}, None
    for line in section.splitlines():
        named = re.match(r"`(app_\w+)`:", line)
        if named:
            current = documented.setdefault(named.group(1), [])
        elif current is not None and (cell := re.match(r"\| `(\w+)` \|", line)):
            current.append(cell.group(1))
    return documented


def test_the_views_have_exactly_the_documented_columns(warehouse_url, warehouse_engine):
    documented = _documented_columns()
    assert set(documented) == set(APP_VIEWS)
    inspector = sa.inspect(warehouse_engine)
    assert set(APP_VIEWS) <= set(inspector.get_view_names())
    for view, columns in APP_VIEWS.items():
        assert [c["name"] for c in inspector.get_columns(view)] == list(columns) == documented[view], view


def test_a_learners_queue_reads_through_the_view_with_theme_names(warehouse_url, warehouse_engine):
    with warehouse_engine.begin() as conn:
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": [7, 8]}))
        bulk.bulk_insert(conn, tables.themes, pd.DataFrame({"theme_id": [1, 2], "name": ["algebra", "geometry"]}))
        now = dt.datetime.now(dt.timezone.utc)
        bulk.bulk_insert(conn, tables.revision_queue_user_summary, pd.DataFrame({
            "queue_date": [TODAY, TODAY], "user_id": [7, 8], "due_today_total": [5, 0], "overdue_total": [1, 0],
            "recommended_theme_ids": ['["1", "THEME::2"]', "[]"], "generated_at": [now, now], "cutoff_at": [now, now]}))
        bulk.bulk_insert(conn, tables.revision_queue_theme, pd.DataFrame({
            "queue_date": [TODAY] * 3, "user_id": [7] * 3, "theme_key": ["UNMAPPED", "1", "THEME::2"],
            "due_today": [1, 3, 1], "overdue": [0, 1, 0], "mastery": [0.5, 0.7, 0.8], "rank": [3, 1, 2]}))
        queue = learner_queue(conn, 7, TODAY)
        nothing_due = learner_queue(conn, 8, TODAY)
        absent = learner_queue(conn, 9, TODAY)
    assert [(t["rank"], t["theme_key"], t["theme_name"]) for t in queue.themes] == [
        (1, "1", "algebra"), (2, "THEME::2", "geometry"), (3, "UNMAPPED", None)]
    assert (queue.summary["due_today_total"], queue.summary["overdue_total"]) == (5, 1)
    assert nothing_due.summary["due_today_total"] == 0 and nothing_due.themes == []
    assert absent.summary is None and absent.themes == []


def test_no_reader_sees_a_learners_day_half_written(empty_postgres_url):
    """A reader polls one learner's queue while their shard's day is rebuilt again and again: every read shows
    the whole queue (summary present, theme rows summing to its totals), never a day in between."""
    url = empty_postgres_url
    migrate.upgrade(url)
    engine = get_engine(url)
    # Days start at midnight UTC, so the learner's current day is TODAY whatever the hour: the view of their
    # current day reads it too.
    users = pd.DataFrame({"user_id": range(1, 41), "timezone": "UTC", "day_start_hour": 0})
    concepts = pd.DataFrame({"concept_id": range(1, 31), "name": [f"c{i}" for i in range(1, 31)]})
    yesterday = pd.Timestamp(TODAY, tz="UTC") - pd.Timedelta(days=1)
    states = users[["user_id"]].merge(concepts[["concept_id"]], how="cross").assign(
        stability_days=2.0, difficulty=5.0, n_reviews=3, weights_source="global", decay=0.1542)
    states["last_review_at"] = yesterday - pd.to_timedelta(states["concept_id"] % 7, unit="D")
    states["due_at"] = states["last_review_at"] + pd.Timedelta(days=2)
    with engine.begin() as conn:
        bulk.bulk_insert(conn, tables.users, users)
        bulk.bulk_insert(conn, tables.themes, pd.DataFrame({"theme_id": [1, 2, 3], "name": ["a", "b", "c"]}))
        bulk.bulk_insert(conn, tables.concepts, concepts)
        bulk.bulk_insert(conn, tables.concept_theme_map, pd.DataFrame(
            {"concept_id": concepts["concept_id"], "theme_id": concepts["concept_id"] % 3 + 1}))
        bulk.bulk_insert(conn, tables.card_memory_states, states)
        write_progress(conn, Progress(0, 0, [], dt.datetime.now(dt.timezone.utc), None, None, None))
    learner = 1
    shard = learner_shards.get_partition_keys()[int(shard_of([learner], len(learner_shards.get_partition_keys()))[0])]
    key = dg.MultiPartitionKey({"day": TODAY.isoformat(), "shard": shard})
    warehouse = {"warehouse": Warehouse(database_url=url)}
    assert dg.materialize([revision_queues], resources=warehouse, partition_key=key).success

    done, reads, torn = threading.Event(), [], []

    def poll(view, *where):
        with engine.connect() as conn:
            while not done.is_set():
                rows = conn.execute(sa.select(view.c.due_today_total, view.c.due_today).where(
                    view.c.user_id == learner, *where)).all()
                conn.rollback()
                reads.append(len(rows))
                if not rows or sum(r.due_today or 0 for r in rows) != rows[0].due_today_total:
                    torn.append(rows)

    readers = [threading.Thread(target=poll, args=(revision_queue_view, revision_queue_view.c.queue_date == TODAY)),
               threading.Thread(target=poll, args=(todays_queue_view,))]  # by user_id alone: their current day
    for reader in readers:
        reader.start()
    try:
        for _ in range(4):
            assert dg.materialize([revision_queues], resources=warehouse, partition_key=key).success
    finally:
        done.set()
        for reader in readers:
            reader.join()
    engine.dispose()
    assert len(reads) > 50 and torn == [], (len(reads), torn[:3])
