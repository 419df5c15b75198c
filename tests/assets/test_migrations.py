import ast
import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command

from learning_pipelines.db import bulk, migrate, partitions, tables
from learning_pipelines.db.engine import get_engine
from learning_pipelines.db.tables import metadata

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def _tables(url: str) -> set[str]:
    return set(sa.inspect(get_engine(url)).get_table_names())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_downgrade_upgrade_round_trip(request, backend):
    url = request.getfixturevalue("empty_sqlite_url" if backend == "sqlite" else "empty_postgres_url")
    migrate.upgrade(url)
    assert set(metadata.tables) <= _tables(url)
    assert migrate.current_revision(get_engine(url)) == migrate.head_revision()

    migrate.downgrade(url, "base")
    get_engine(url).dispose()
    assert _tables(url) <= {"alembic_version"}

    migrate.upgrade(url)
    assert set(metadata.tables) <= _tables(url)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_match_the_table_definitions(request, backend):
    url = request.getfixturevalue("empty_sqlite_url" if backend == "sqlite" else "empty_postgres_url")
    migrate.upgrade(url)
    command.check(migrate.alembic_config(url))  # raises when autogenerate would find a difference


def _review(review_id: int, when: str) -> dict:
    return {"id": review_id, "user_id": 1, "concept_id": 1, "rating": 3,
            "reviewed_at": pd.Timestamp(when), "review_duration_ms": 1000, "state": 1}


def _seed_learner_and_concept(conn) -> None:
    conn.execute(sa.text("INSERT INTO users (user_id) VALUES (1)"))
    conn.execute(sa.text("INSERT INTO concepts (concept_id, name) VALUES (1, 'c')"))


def test_review_logs_is_range_partitioned_by_month_on_postgres(empty_postgres_url):
    migrate.upgrade(empty_postgres_url)
    engine = get_engine(empty_postgres_url)
    with engine.begin() as conn:
        strategy, key = conn.execute(sa.text(
            "SELECT pt.partstrat, a.attname FROM pg_partitioned_table pt "
            "JOIN pg_class c ON c.oid = pt.partrelid "
            "JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0] "
            "WHERE c.relname = 'review_logs'")).one()
        assert (strategy, key) == ("r", "reviewed_at")
        _seed_learner_and_concept(conn)
        bulk.insert_review_logs(conn, pd.DataFrame([_review(1, "2024-03-05T10:00Z"), _review(2, "2024-04-30T23:59Z")]))
    with engine.connect() as conn:
        children = set(conn.execute(sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'review_logs'")).scalars())
        assert children == {"review_logs_default", "review_logs_y2024m03", "review_logs_y2024m04"}
        placed = dict(conn.execute(sa.text("SELECT id, tableoid::regclass::text FROM review_logs")).all())
        assert placed == {1: "review_logs_y2024m03", 2: "review_logs_y2024m04"}
        primary_key = conn.execute(sa.text(
            "SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = 'review_logs'::regclass AND i.indisprimary")).scalar_one()
        assert primary_key == ["id", "reviewed_at"]


def test_month_partition_created_while_default_holds_its_rows(empty_postgres_url):
    migrate.upgrade(empty_postgres_url)
    engine = get_engine(empty_postgres_url)
    with engine.begin() as conn:
        _seed_learner_and_concept(conn)
        # Rows written straight into the parent land in the default partition.
        bulk.bulk_insert(conn, metadata.tables["review_logs"],
                         pd.DataFrame([_review(1, "2024-05-02T00:00Z"), _review(2, "2024-05-31T12:00Z"),
                                       _review(3, "2024-06-01T00:00Z")]))
    with engine.begin() as conn:
        created = partitions.ensure_month_partitions(conn, [dt.date(2024, 5, 1)])
    assert created == [dt.date(2024, 5, 1)]
    with engine.connect() as conn:
        placed = dict(conn.execute(sa.text("SELECT id, tableoid::regclass::text FROM review_logs")).all())
    assert placed == {1: "review_logs_y2024m05", 2: "review_logs_y2024m05", 3: "review_logs_default"}


def test_partition_management_is_a_no_op_on_sqlite(empty_sqlite_url):
    migrate.upgrade(empty_sqlite_url)
    with get_engine(empty_sqlite_url).begin() as conn:
        assert partitions.ensure_month_partitions(conn, [dt.date(2024, 5, 1)]) == []


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import statement, and of importlib.import_module/__import__ of a literal."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            found.append((node.lineno, node.args[0].value))
    return found


def test_migrations_import_nothing_from_learning_pipelines():
    """A migration is history: what it runs must not change when the application's code does."""
    versions = sorted((MIGRATIONS / "versions").glob("*.py"))
    assert versions
    offenders = [
        f"{path.relative_to(MIGRATIONS)}:{line} imports {module}"
        for path in versions + sorted((MIGRATIONS / "frozen").rglob("*.py"))
        for line, module in _imported_modules(ast.parse(path.read_text(), filename=str(path)))
        if module.split(".")[0] == "learning_pipelines"
    ]
    assert offenders == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_queue_stats_per_shard_downgrade_sums_the_shards(request, backend):
    """0010 -> 0009 with rows: a day's per-shard statistics become the day's totals, and come back as one shard
    (and, from 0013 on, as one window starting at the day's midnight UTC)."""
    url = request.getfixturevalue("empty_sqlite_url" if backend == "sqlite" else "empty_postgres_url")
    command.upgrade(migrate.alembic_config(url), "0012")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO queue_stats_daily (queue_date, learner_shard, theme_key, n_learners, due_today, overdue) "
            "VALUES ('2026-12-01', '00-of-02', '*', 1, 2, 3), ('2026-12-01', '01-of-02', '*', 4, 5, 6)"))
    command.downgrade(migrate.alembic_config(url), "0009")
    command.upgrade(migrate.alembic_config(url), "head")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(tables.queue_stats_daily.c.learner_shard, tables.queue_stats_daily.c.theme_key,
                                      tables.queue_stats_daily.c.n_learners, tables.queue_stats_daily.c.due_today,
                                      tables.queue_stats_daily.c.overdue, tables.queue_stats_daily.c.window_start)).all()
    engine.dispose()
    midnight = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    assert [tuple(row) for row in rows] == [("00-of-01", "*", 5, 7, 9, midnight)]
