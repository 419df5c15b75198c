"""The queue follows the learner's daily target, as written by `revision_queues` and read by the app: a learner with
300 due concepts and a target of 50 has exactly 50 in today's list, overdue first by recall lost; their themes count
them and the recommended themes hold them; the app lists them by user_id alone; a learner without a target gets the
queue they always got."""

import datetime as dt
import json

import dagster as dg
import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, learners, tables
from learning_pipelines.db.learner_queue import learner_queue_today, todays_target_concepts
from learning_pipelines.db.memory_state_progress import Progress, write_progress
from learning_pipelines.db.preferences import write_learning_prefs
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.revision_queues import revision_queues
from learning_pipelines.domain import fsrs
from learning_pipelines.domain.learner_shards import shard_of

SHARDS = learner_shards.get_partition_keys()
TARGETED, UNTARGETED = 1, 2
N_OVERDUE, N_DUE_LATER, N_NOT_DUE = 120, 180, 60
DECAY = 0.1542


def _cards(user_id: int, day_start: pd.Timestamp) -> pd.DataFrame:
    """120 cards overdue (stabilities unrelated to their due times), 180 due in the first hours of the day, 60 due
    days later. At retention 0.9 and spacing 1 a card falls due `stability` days after its last review."""
    concept_id = np.arange(1, N_OVERDUE + N_DUE_LATER + N_NOT_DUE + 1)
    stability = 2.0 + (concept_id * 7 % 50)
    due_at = pd.to_datetime(np.where(
        concept_id <= N_OVERDUE, day_start - pd.to_timedelta(concept_id * 2, unit="h"),
        np.where(concept_id <= N_OVERDUE + N_DUE_LATER, day_start + pd.to_timedelta(concept_id - N_OVERDUE, unit="min"),
                 day_start + pd.to_timedelta(2 + concept_id % 5, unit="D"))), utc=True)
    return pd.DataFrame({"user_id": user_id, "concept_id": concept_id, "stability_days": stability, "due_at": due_at,
                         "last_review_at": due_at - pd.to_timedelta(stability, unit="D"), "difficulty": 5.0,
                         "n_reviews": 3, "weights_source": "global", "decay": DECAY})


def _seed(engine, day_start: pd.Timestamp) -> pd.DataFrame:
    """Two learners whose day starts at midnight UTC (so their current day is the UTC date, whatever the hour) with
    the same 360 cards, 300 of them due today; the first has a daily target of 50. Their cards, as stored."""
    concepts = pd.DataFrame({"concept_id": range(1, 361), "name": [f"concept {c}" for c in range(1, 361)]})
    cards = pd.concat([_cards(TARGETED, day_start), _cards(UNTARGETED, day_start)], ignore_index=True)
    with engine.begin() as conn:
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": [TARGETED, UNTARGETED], "timezone": "UTC",
                                                           "day_start_hour": 0}))
        bulk.bulk_insert(conn, tables.themes, pd.DataFrame({"theme_id": range(1, 7),
                                                            "name": [f"theme {t}" for t in range(1, 7)]}))
        bulk.bulk_insert(conn, tables.concepts, concepts)
        bulk.bulk_insert(conn, tables.concept_theme_map, pd.DataFrame(
            {"concept_id": concepts["concept_id"], "theme_id": concepts["concept_id"] % 6 + 1}))
        write_learning_prefs(conn, pd.DataFrame({"user_id": [TARGETED], "spacing_multiplier": [1.0],
                                                 "retention_target_override": [None], "revision_daily_target": [50]}))
        bulk.bulk_insert(conn, tables.card_memory_states, cards)
        write_progress(conn, Progress(0, 0, [], dt.datetime.now(dt.timezone.utc), None, None, None))
    return cards


def _build(url: str, day: dt.date) -> None:
    """Both learners' shards of `day`."""
    for shard in {SHARDS[int(s)] for s in shard_of([TARGETED, UNTARGETED], len(SHARDS))}:
        assert dg.materialize([revision_queues], resources={"warehouse": Warehouse(database_url=url)},
                              partition_key=dg.MultiPartitionKey({"day": str(day), "shard": shard})).success


def _rows(engine, table: sa.Table, day: dt.date) -> pd.DataFrame:
    with engine.connect() as conn:
        return bulk.read_frame(conn, sa.select(table).where(table.c.queue_date == day)
                               .order_by(*table.primary_key.columns))


def _most_recall_lost_overdue(cards: pd.DataFrame, day_start: pd.Timestamp, n: int) -> list[int]:
    """Concept ids of the `n` overdue cards that lost most recall by the start of the day (retention target 0.9)."""
    overdue = cards.loc[cards["due_at"] < day_start]
    elapsed = (day_start - overdue["last_review_at"]).dt.total_seconds() / 86_400
    recall = fsrs.retrievability(elapsed.to_numpy(), overdue["stability_days"].to_numpy(),
                                 fsrs.decay_only_weights(overdue["decay"]))
    return overdue.assign(recall_lost=0.9 - recall).sort_values(["recall_lost", "concept_id"], ascending=[False, True])[
        "concept_id"].head(n).tolist()


def test_a_target_of_50_among_300_due_is_written_and_read_by_user_id_alone(warehouse_url, warehouse_engine, today):
    day_start = pd.Timestamp(today, tz="UTC")
    cards = _seed(warehouse_engine, day_start)
    _build(warehouse_url, today)

    themes = _rows(warehouse_engine, tables.revision_queue_theme, today)
    per_learner = themes.groupby("user_id")[["due_today", "overdue", "due_in_target"]].sum()
    assert per_learner.loc[TARGETED].tolist() == [300, N_OVERDUE, 50], "the themes' counts add up to the target"
    assert per_learner.loc[UNTARGETED].tolist() == [300, N_OVERDUE, 300], "without a target: every due concept"
    untargeted = themes.loc[themes["user_id"] == UNTARGETED]
    assert (untargeted["due_in_target"] == untargeted["due_today"]).all()

    listed = _rows(warehouse_engine, tables.revision_queue_target_concept, today)
    assert set(listed["user_id"]) == {TARGETED}, "no list is written for a learner without a target"
    assert listed["position"].tolist() == list(range(1, 51))
    assert listed["overdue"].astype(bool).all(), "120 overdue: the 50 are all overdue"
    assert listed["concept_id"].tolist() == _most_recall_lost_overdue(cards.loc[cards["user_id"] == TARGETED],
                                                                      day_start, 50)
    assert listed["recall_lost"].is_monotonic_decreasing

    summaries = _rows(warehouse_engine, tables.revision_queue_user_summary, today).set_index("user_id")
    recommended = json.loads(summaries.loc[TARGETED, "recommended_theme_ids"])
    targeted = themes.loc[themes["user_id"] == TARGETED].sort_values("rank")
    assert recommended == targeted.loc[targeted["due_in_target"] > 0, "theme_key"].tolist()
    assert set(recommended) == set(listed["theme_key"]), "the recommended themes cover the target"
    assert json.loads(summaries.loc[UNTARGETED, "recommended_theme_ids"]) == untargeted.sort_values("rank")[
        "theme_key"].tolist()

    with warehouse_engine.connect() as conn:
        app_list = todays_target_concepts(conn, TARGETED)
        queue = learner_queue_today(conn, TARGETED)
        assert todays_target_concepts(conn, UNTARGETED) == []
    assert [row["concept_id"] for row in app_list] == listed["concept_id"].tolist()
    assert [row["position"] for row in app_list] == list(range(1, 51))
    assert app_list[0]["concept_name"] == f"concept {app_list[0]['concept_id']}"
    assert {row["queue_date"] for row in app_list} == {today}
    assert sum(theme["due_in_target"] for theme in queue.themes) == 50
    assert queue.summary["revision_daily_target"] == 50


def test_a_rebuild_replaces_the_list_and_forget_removes_it(warehouse_url, warehouse_engine, today):
    _seed(warehouse_engine, pd.Timestamp(today, tz="UTC"))
    _build(warehouse_url, today)
    with warehouse_engine.begin() as conn:
        write_learning_prefs(conn, pd.DataFrame({"user_id": [TARGETED], "spacing_multiplier": [1.0],
                                                 "retention_target_override": [None], "revision_daily_target": [10]}))
    _build(warehouse_url, today)
    listed = _rows(warehouse_engine, tables.revision_queue_target_concept, today)
    assert listed["position"].tolist() == list(range(1, 11))
    themes = _rows(warehouse_engine, tables.revision_queue_theme, today)
    assert themes.loc[themes["user_id"] == TARGETED, "due_in_target"].sum() == 10
    with warehouse_engine.begin() as conn:
        learners.forget(conn, [TARGETED])
    assert _rows(warehouse_engine, tables.revision_queue_target_concept, today).empty
