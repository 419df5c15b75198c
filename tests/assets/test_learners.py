"""`learning-pipelines learners forget`: a learner leaves every table, other learners stay whole."""

import json

import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.cli import main
from learning_pipelines.db import bulk, learners, ncf_store, tables

FORGOTTEN, KEPT = 1, (2, 11)  # 11: its id contains the forgotten one's digits
EVERYONE = (FORGOTTEN, *KEPT)
NOW = pd.Timestamp("2024-05-02T10:00:00Z")
DAY = NOW.date()

# The raw rows review_log_rejects keeps, as importers (text) and quarantine (numbers) write them.
REJECTS_NAMING_THE_FORGOTTEN = [{"card_id": "10", "user_id": "1"}, {"user_id": " 1 ", "review_rating": "9"},
                                {"user_id": "1.0"}, {"id": 99, "user_id": 1, "rating": 3, "state": float("nan")}]
OTHER_REJECTS = [{"card_id": "10", "user_id": "11"}, {"user_id": 2, "rating": 3}, {"card_id": "1", "review_rating": "1"},
                 {"file": "broken.csv"}, {"user_id": "1x"}]


def _per_learner(user_ids, **columns) -> pd.DataFrame:
    return pd.DataFrame({"user_id": list(user_ids), **{name: [value] * len(user_ids) for name, value in columns.items()}})


def _fill_every_learner_table(conn: sa.Connection) -> None:
    """Rows for every learner in every table that has a user_id column."""
    bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": list(EVERYONE)}))
    bulk.bulk_insert(conn, tables.concepts, pd.DataFrame({"concept_id": [10], "name": ["fractions"]}))
    bulk.bulk_insert(conn, tables.resources, pd.DataFrame({"resource_id": [5], "title": ["video"], "kind": ["video"]}))
    reviews = pd.DataFrame({"id": [100 + u for u in EVERYONE] + [200 + u for u in EVERYONE], "user_id": list(EVERYONE) * 2,
                            "concept_id": 10, "rating": 3, "review_duration_ms": 4000,
                            "reviewed_at": [NOW] * 3 + [NOW - pd.Timedelta(days=40)] * 3})
    bulk.insert_review_logs(conn, reviews)
    bulk.bulk_insert(conn, tables.review_log_intervals, reviews.rename(columns={"id": "review_id"})[
        ["review_id", "reviewed_at", "user_id", "concept_id"]].assign(review_number=1))
    bulk.bulk_insert(conn, tables.user_learning_prefs, _per_learner(EVERYONE, spacing_multiplier=1.0))
    bulk.bulk_insert(conn, tables.user_interactions, _per_learner(EVERYONE * 2, resource_id=5, interaction_type="view",
                                                                  occurred_at=NOW))
    bulk.bulk_insert(conn, tables.srs_user_params, _per_learner(EVERYONE, ab_group="BASELINE_GLOBAL", n_reviews=2))
    bulk.bulk_insert(conn, tables.card_memory_states, _per_learner(
        EVERYONE, concept_id=10, stability_days=3.0, difficulty=5.0, n_reviews=2, last_review_at=NOW, due_at=NOW,
        weights_source="global"))
    bulk.bulk_insert(conn, tables.card_memory_state_replays, _per_learner(EVERYONE, concept_id=10, requested_at=NOW))
    bulk.bulk_insert(conn, tables.revision_queue_theme, _per_learner(
        EVERYONE, queue_date=DAY, theme_key="UNMAPPED", due_today=1, overdue=0, mastery=0.5, rank=1))
    bulk.bulk_insert(conn, tables.revision_queue_user_summary, _per_learner(
        EVERYONE, queue_date=DAY, due_today_total=1, overdue_total=0, recommended_theme_ids="[]", generated_at=NOW))
    bulk.bulk_insert(conn, tables.tag_quality_debt_log, _per_learner(
        EVERYONE, queue_date=DAY, concept_id=10, fallback_key="UNMAPPED", reason="no theme"))
    bulk.bulk_insert(conn, tables.revision_queue_target_concept, _per_learner(
        EVERYONE, queue_date=DAY, position=1, concept_id=10, theme_key="UNMAPPED", overdue=True, recall_lost=0.1))
    bulk.bulk_insert(conn, tables.ncf_user_embeddings, _per_learner(EVERYONE, model_id=1, embedding="[0.1]"))
    bulk.bulk_insert(conn, tables.learner_calendar_fallbacks, _per_learner(
        EVERYONE, timezone="Mars/Olympus", first_noticed_at=NOW, last_noticed_at=NOW))
    bulk.bulk_insert(conn, tables.user_recommendations, _per_learner(
        EVERYONE, rank=1, resource_id=5, score=0.5, strategy="content_graph", content_score=0.5, graph_score=0.5,
        generated_at=NOW))
    raw_rows = REJECTS_NAMING_THE_FORGOTTEN + OTHER_REJECTS
    bulk.bulk_insert(conn, tables.review_log_rejects, pd.DataFrame({
        "source": "reviews.csv", "raw_row": [json.dumps(row) for row in raw_rows], "reason": "bad", "rejected_at": NOW}))


def _learner_tables() -> list[sa.Table]:
    return [table for table in tables.metadata.tables.values() if "user_id" in table.c]


def _rows_per_learner(conn: sa.Connection) -> dict[tuple[str, int], int]:
    counts = {}
    for table in _learner_tables():
        query = sa.select(table.c.user_id, sa.func.count()).group_by(table.c.user_id)
        counts |= {(table.name, int(user_id)): n for user_id, n in conn.execute(query)}
    return counts


def _raw_user_ids(conn: sa.Connection) -> list:
    rejects = tables.review_log_rejects
    rows = conn.execute(sa.select(rejects.c.raw_row).order_by(rejects.c.reject_id)).scalars()
    return [json.loads(row).get("user_id") for row in rows]


@pytest.fixture
def three_learners(warehouse_url, warehouse_engine) -> str:
    with warehouse_engine.begin() as conn:
        _fill_every_learner_table(conn)
        filled = {name for name, _ in _rows_per_learner(conn)}
    assert filled == {table.name for table in _learner_tables()}, "every table with a user_id holds a row to forget"
    return warehouse_url


def test_forgetting_a_learner_leaves_no_row_naming_them_and_other_learners_untouched(three_learners, warehouse_engine,
                                                                                     capsys):
    with warehouse_engine.connect() as conn:
        before = _rows_per_learner(conn)

    assert main(["learners", "forget", str(FORGOTTEN), "--database-url", three_learners]) == 0

    out = capsys.readouterr().out
    assert "forgot learner(s) 1 in one transaction" in out
    for table in _learner_tables():
        assert f"  {table.name:<30} {before[(table.name, FORGOTTEN)]:>12,}" in out
    assert f"  {'review_log_rejects':<30} {len(REJECTS_NAMING_THE_FORGOTTEN):>12,}" in out
    with warehouse_engine.connect() as conn:
        after = _rows_per_learner(conn)
        assert not [key for key in after if key[1] == FORGOTTEN]
        assert after == {key: n for key, n in before.items() if key[1] != FORGOTTEN}
        remaining = _raw_user_ids(conn)
        assert not [value for value in remaining if value is not None and str(value).strip() in ("1", "1.0")]
        assert remaining == [row.get("user_id") for row in OTHER_REJECTS]
        assert set(ncf_store.interactions(conn)["user"]) == set(KEPT), "the next NCF training does not see them"


def test_forgetting_several_learners_counts_each_table_once_and_ignores_the_unknown(three_learners, warehouse_engine,
                                                                                   capsys):
    assert main(["learners", "forget", "1", "11", "404", "--database-url", three_learners]) == 0

    captured = capsys.readouterr()
    assert "forgot learner(s) 1, 11 in one transaction" in captured.out
    assert f"  {'review_logs':<30} {4:>12,}" in captured.out and f"  {'users':<30} {2:>12,}" in captured.out
    assert "no learner 404 in the warehouse" in captured.err
    with warehouse_engine.connect() as conn:
        assert {user_id for _, user_id in _rows_per_learner(conn)} == {2}


def test_forgetting_only_unknown_learners_exits_2_and_removes_nothing(three_learners, warehouse_engine, capsys):
    with warehouse_engine.connect() as conn:
        before = _rows_per_learner(conn)

    assert main(["learners", "forget", "404", "405", "--database-url", three_learners]) == 2

    assert "no learner 404, 405 in the warehouse" in capsys.readouterr().err
    with warehouse_engine.connect() as conn:
        assert _rows_per_learner(conn) == before


def test_a_dry_run_counts_what_forgetting_would_remove_and_removes_nothing(three_learners, warehouse_engine, capsys):
    with warehouse_engine.connect() as conn:
        before = _rows_per_learner(conn), _raw_user_ids(conn)

    assert main(["learners", "forget", "1", "--dry-run", "--database-url", three_learners]) == 0

    out = capsys.readouterr().out
    assert "would forget learner(s) 1" in out and f"  {'review_logs':<30} {2:>12,}" in out
    with warehouse_engine.connect() as conn:
        assert (_rows_per_learner(conn), _raw_user_ids(conn)) == before


def test_a_learner_known_only_from_rejected_rows_can_be_forgotten(warehouse_engine, capsys, warehouse_url):
    with warehouse_engine.begin() as conn:
        bulk.bulk_insert(conn, tables.review_log_rejects, pd.DataFrame({
            "source": "reviews.csv", "raw_row": [json.dumps({"user_id": "77"}), json.dumps({"user_id": "78"})],
            "reason": "unknown user_id", "rejected_at": NOW}))

    assert main(["learners", "forget", "77", "--database-url", warehouse_url]) == 0

    with warehouse_engine.connect() as conn:
        assert _raw_user_ids(conn) == ["78"]


@pytest.mark.parametrize("raw_row, learner", [
    ('{"user_id": "42"}', 42), ('{"user_id": " +42.00 "}', 42), ('{"user_id": 42}', 42), ('{"user_id": 42.0}', 42),
    ('{"user_id": NaN, "card_id": "1"}', None), ('{"user_id": "4 2"}', None), ('{"user_id": true}', None),
    ('{"card_id": "42"}', None), ('["user_id"]', None), ("not json", None),
])
def test_a_rejected_row_names_the_learner_its_user_id_reads_as(raw_row, learner):
    assert learners.learner_named(raw_row) == learner
