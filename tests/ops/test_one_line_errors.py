"""The command line fails in one line: a database error of any wrapper, an unreachable warehouse, a reader that
has gone, an id the warehouse cannot hold; and SQLite refuses the names PostgreSQL refuses."""

import contextlib
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command

from learning_pipelines import errors
from learning_pipelines.cli import main
from learning_pipelines.db import bulk, migrate, tables
from learning_pipelines.db.engine import get_engine

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "learning-pipelines")
PASSWORD = "s3cr@t/pw"
PASSWORD_FORMS = (PASSWORD, "s3cr%40t%2Fpw")
TOO_LARGE = str(2**63)  # one more than the largest BIGINT
NOW = pd.Timestamp("2024-05-02T10:00:00Z")


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _csv(path: Path, n_rows: int = 20) -> Path:
    path.write_text("user_id,card_id,review_rating,review_time,review_duration\n" + "".join(
        f"7,{10 + i},3,2024-05-01T10:{i:02d}:00Z,5000\n" for i in range(n_rows)))
    return path


@contextlib.contextmanager
def _backend_terminated_before_the_first_pandas_read(url: str):
    """Terminates, from another session, the backend of the first statement pandas runs on the warehouse's engine,
    just before it is sent: the statement then meets a connection the server has closed."""
    engine = get_engine(url)
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    terminated = []

    def terminate(conn, cursor, statement, parameters, context, executemany):
        from_pandas = any(frame.filename.endswith(os.path.join("pandas", "io", "sql.py"))
                          for frame in traceback.extract_stack())
        if from_pandas and not terminated:
            pid = conn.connection.dbapi_connection.get_backend_pid()
            with admin.connect() as other:
                terminated.append(other.execute(sa.text("SELECT pg_terminate_backend(:pid, 10000)"),
                                                {"pid": pid}).scalar_one())

    sa.event.listen(engine, "before_cursor_execute", terminate)
    try:
        yield terminated
    finally:
        sa.event.remove(engine, "before_cursor_execute", terminate)
        admin.dispose()


def test_an_import_whose_connection_is_terminated_during_a_pandas_read_is_one_line(empty_postgres_url, tmp_path,
                                                                                   capsys):
    migrate.upgrade(empty_postgres_url)
    path = _csv(tmp_path / "reviews.csv")

    with _backend_terminated_before_the_first_pandas_read(empty_postgres_url) as terminated:
        status = main(["import", str(path), "--register-unknown", "--database-url", empty_postgres_url])

    assert terminated == [True]
    assert status == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {path}: not imported, nothing was stored (database error OperationalError: ")
    assert "SELECT" not in line and "Execution failed" not in line
    with get_engine(empty_postgres_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM users")).scalar_one() == 0


def test_a_command_whose_connection_is_terminated_during_a_pandas_read_is_one_line(empty_postgres_url, capsys):
    migrate.upgrade(empty_postgres_url)
    with get_engine(empty_postgres_url).begin() as conn:
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": [3]}))

    with _backend_terminated_before_the_first_pandas_read(empty_postgres_url) as terminated:
        status = main(["recommend", "3", "--database-url", empty_postgres_url])

    assert terminated == [True]
    assert status == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: the warehouse at {empty_postgres_url} failed: OperationalError: ")
    assert line.endswith("(the command's open transaction was rolled back: run it again)")
    assert "SELECT" not in line


@pytest.mark.parametrize("command", [["learners", "forget", "3"], ["learners", "forget", "3", "--dry-run"],
                                     ["recommend", "3"], ["db", "current"], ["import", "reviews.csv"]])
def test_an_unreachable_warehouse_is_one_line_without_its_password(command, tmp_path):
    _csv(tmp_path / "reviews.csv")
    port = _closed_port()
    url = f"postgresql+psycopg2://alice:{PASSWORD_FORMS[1]}@127.0.0.1:{port}/warehouse"

    done = subprocess.run([CLI, *command], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LEARNING_PIPELINES_DATABASE_URL": url})

    assert done.returncode == 1, done.stderr
    line = _one_line(done.stderr)
    assert line == (f"error: cannot connect to the warehouse at postgresql+psycopg2://alice:***@127.0.0.1:{port}/"
                    f"warehouse: OperationalError: connection to server at \"127.0.0.1\", port {port} failed: "
                    "Connection refused (is it running, and is that its URL? --database-url, else "
                    "$LEARNING_PIPELINES_DATABASE_URL)")
    assert not any(form in done.stdout + done.stderr for form in PASSWORD_FORMS)


def test_a_database_error_shows_neither_the_statement_nor_the_rows(empty_postgres_url, capsys):
    migrate.upgrade(empty_postgres_url)
    with get_engine(empty_postgres_url).begin() as conn:
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": [42], "external_ref": ["ada@example.org"]}))
        conn.execute(sa.text("CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION "
                             "'learners are kept' USING DETAIL = 'row ' || OLD.external_ref; END $$"))
        conn.execute(sa.text("CREATE TRIGGER keep BEFORE DELETE ON users FOR EACH ROW EXECUTE FUNCTION keep()"))

    assert main(["learners", "forget", "42", "--database-url", empty_postgres_url]) == 1

    line = _one_line(capsys.readouterr().err)
    assert line == (f"error: the warehouse at {empty_postgres_url} failed: RaiseException: learners are kept "
                    "(the command's open transaction was rolled back)")


def test_an_unmigrated_warehouse_says_to_upgrade(empty_sqlite_url, capsys):
    assert main(["recommend", "3", "--database-url", empty_sqlite_url]) == 1

    assert _one_line(capsys.readouterr().err) == (
        f"error: the warehouse at {empty_sqlite_url} failed: OperationalError: no such table: users "
        "(is its schema at head? `learning-pipelines db upgrade`)")


@pytest.mark.parametrize("url", ["postgres://alice:s3cret@127.0.0.1/warehouse", "postgresql://alice:s3cret@host:port/x"])
def test_a_warehouse_url_that_cannot_be_used_is_a_users_mistake(url, capsys):
    assert main(["recommend", "3", "--database-url", url]) == 2

    line = _one_line(capsys.readouterr().err)
    assert line.startswith("error: the warehouse URL (--database-url, else $LEARNING_PIPELINES_DATABASE_URL) is not "
                           "one SQLAlchemy can use")
    assert "s3cret" not in line


@pytest.mark.parametrize("command, argument", [
    (["recommend", TOO_LARGE], "user_id"),
    (["learners", "forget", "--dry-run", TOO_LARGE], "ID"),
    (["learners", "forget", "1", str(-(2**63) - 1)], "ID"),
    (["import", "reviews.csv", "--user-id", TOO_LARGE], "--user-id"),
])
def test_an_id_the_warehouse_cannot_hold_is_refused_in_one_line_naming_the_argument(command, argument,
                                                                                    empty_sqlite_url, capsys):
    migrate.upgrade(empty_sqlite_url)

    with pytest.raises(SystemExit) as exited:
        main([*command, "--database-url", empty_sqlite_url])

    assert exited.value.code == 2
    prog = " ".join(["learning-pipelines", *(word for word in command[:2] if word.isalpha())])
    assert _one_line(capsys.readouterr().err) == (
        f"{prog}: error: argument {argument}: {command[-1]} is outside the ids the warehouse can hold (signed 64-bit, "
        f"{-(2**63)} to {2**63 - 1}) (see {prog} --help)")


def test_the_largest_id_is_asked_for_like_any_other(empty_sqlite_url, capsys):
    migrate.upgrade(empty_sqlite_url)

    assert main(["recommend", str(2**63 - 1), "--database-url", empty_sqlite_url]) == 2
    assert main(["learners", "forget", "--dry-run", str(2**63 - 1), "--database-url", empty_sqlite_url]) == 2

    assert "no learner 9223372036854775807 in the warehouse" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["ncf", "evaluate", "missing.tsv"],
                                     ["fsrs", "evaluate", "reviews.csv", "--weights", "missing.json"]])
def test_a_file_that_cannot_be_read_is_one_line_naming_it(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reviews.csv").write_text("card_id,review_rating,review_time,review_duration\n"
                                          "1,3,2024-05-01T10:00:00Z,5000\n")

    assert main(command) == 2

    assert _one_line(capsys.readouterr().err) == f"error: {command[-1]}: No such file or directory"


@pytest.fixture
def many_recommendations(empty_sqlite_url) -> str:
    """Learner 42 with 10,000 recommendations: about 1 MB of output, far more than a pipe holds."""
    migrate.upgrade(empty_sqlite_url)
    n = 10_000
    with get_engine(empty_sqlite_url).begin() as conn:
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": [42]}))
        bulk.bulk_insert(conn, tables.resources, pd.DataFrame({"resource_id": range(1, n + 1), "title": "a resource",
                                                               "kind": "video"}))
        bulk.bulk_insert(conn, tables.user_recommendations, pd.DataFrame({
            "user_id": 42, "rank": range(1, n + 1), "resource_id": range(1, n + 1), "score": 0.5,
            "strategy": "content_graph", "content_score": 0.5, "graph_score": 0.5, "generated_at": NOW}))
    return empty_sqlite_url


def test_a_reader_that_stops_after_two_lines_ends_the_command_quietly(many_recommendations):
    """`learning-pipelines recommend 42 | head -2`."""
    command = subprocess.Popen([CLI, "recommend", "42", "--database-url", many_recommendations], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_two = [command.stdout.readline(), command.stdout.readline()]
    command.stdout.close()
    stderr = command.stderr.read()
    command.wait(timeout=120)

    assert first_two[0].startswith("recommendations for user 42") and first_two[1].startswith("  1. a resource")
    assert stderr == ""
    assert command.returncode == 1


def test_a_reader_gone_before_the_first_line_ends_the_command_quietly(many_recommendations, tmp_path):
    """The output fits the pipe's buffer, so it fails only when flushed at the end."""
    with get_engine(many_recommendations).begin() as conn:
        conn.execute(tables.user_recommendations.delete().where(tables.user_recommendations.c.rank > 2))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([CLI, "recommend", "42", "--database-url", many_recommendations], cwd=ROOT,
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)

    assert done.stderr == ""
    assert done.returncode == 1


# --- the database failure behind an exception, and one line of text ---

def test_the_driver_error_is_found_behind_pandas_and_sqlalchemy(empty_sqlite_url):
    with get_engine(empty_sqlite_url).connect() as conn:
        with pytest.raises(pd.errors.DatabaseError) as raised:
            pd.read_sql(sa.select(sa.column("name")).select_from(sa.table("missing")), conn)

    failure = errors.database_failure(raised.value)
    assert failure.text() == "OperationalError: no such table: missing"
    assert failure.operational and not failure.connecting
    assert errors.database_failure(ValueError("not the database")) is None


def test_one_line_joins_the_lines_and_spaces():
    assert errors.one_line("first\n\tsecond  third\n") == "first second third"
    assert errors.one_line(ValueError("a\nb")) == "a b"


# --- SQLite refuses what PostgreSQL refuses ---

NAME_TABLES = {"users": {"user_id": 1}, "themes": {"theme_id": 1, "name": "t"},
               "concepts": {"concept_id": 1, "name": "c"}, "resources": {"resource_id": 1, "title": "r", "kind": "video"}}
# users.timezone is a key of time_zones whatever its length (tests/assets/test_time_zones.py): no text of its own.
NAME_COLUMNS = [(table, column.name, column.type.length) for table in NAME_TABLES
                for column in tables.metadata.tables[table].columns
                if isinstance(column.type, sa.String) and column.type.length and not column.foreign_keys]


def test_the_name_columns_are_the_text_columns_of_the_tables_written_from_outside():
    assert {(table, column) for table, column, _ in NAME_COLUMNS} == {
        ("users", "external_ref"), ("themes", "name"), ("concepts", "name"),
        ("concepts", "external_ref"), ("resources", "title"), ("resources", "kind")}


@pytest.mark.parametrize("table, column, length", NAME_COLUMNS)
def test_text_longer_than_its_column_is_refused_on_both_databases(table, column, length, warehouse_engine):
    target = tables.metadata.tables[table]
    fitting = "é" * length  # characters, not bytes, on both

    with warehouse_engine.begin() as conn:
        conn.execute(target.insert().values({**NAME_TABLES[table], column: fitting}))
    with pytest.raises((sa.exc.IntegrityError, sa.exc.DataError)):
        with warehouse_engine.begin() as conn:
            conn.execute(target.insert().values({**NAME_TABLES[table], next(iter(NAME_TABLES[table])): 2,
                                                 column: fitting + "x"}))
    with pytest.raises((sa.exc.IntegrityError, sa.exc.DataError)):
        with warehouse_engine.begin() as conn:
            conn.execute(target.update().values({column: "x" * 10_240}))

    with warehouse_engine.connect() as conn:
        assert conn.execute(sa.select(target.c[column])).scalars().all() == [fitting]


def test_a_10_kb_theme_name_is_refused_on_both_databases_also_by_bulk_writes(warehouse_engine):
    with pytest.raises((sa.exc.IntegrityError, sa.exc.DataError)):
        with warehouse_engine.begin() as conn:
            bulk.bulk_insert(conn, tables.themes, pd.DataFrame({"theme_id": [1], "name": ["x" * 10_240]}))


def test_the_migrated_sqlite_schema_has_the_length_checks_of_the_tables(empty_sqlite_url):
    migrate.upgrade(empty_sqlite_url)
    inspector = sa.inspect(get_engine(empty_sqlite_url))

    for table in NAME_TABLES:
        migrated = {check["name"] for check in inspector.get_check_constraints(table)}
        declared = {c.name for c in tables.metadata.tables[table].constraints if isinstance(c, sa.CheckConstraint)}
        assert migrated == declared, table


def test_upgrading_a_sqlite_warehouse_that_holds_longer_names_is_refused_naming_them(empty_sqlite_url):
    command.upgrade(migrate.alembic_config(empty_sqlite_url), "0011")
    engine = sa.create_engine(empty_sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO themes (theme_id, name) VALUES (1, :name)"), {"name": "x" * 10_240})
        conn.execute(sa.text("INSERT INTO concepts (concept_id, name) VALUES (1, 'c')"))
        conn.execute(sa.text("INSERT INTO concept_theme_map (concept_id, theme_id) VALUES (1, 1)"))

    with pytest.raises(RuntimeError, match=r"themes\.name \(1 row\(s\) over 200 characters\)"):
        command.upgrade(migrate.alembic_config(empty_sqlite_url), "head")

    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE themes SET name = substr(name, 1, 200)"))
    command.upgrade(migrate.alembic_config(empty_sqlite_url), "head")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT concept_id, theme_id FROM concept_theme_map")).all() == [(1, 1)]
        assert conn.execute(sa.text("SELECT count(*) FROM app_due_concepts")).scalar_one() == 0  # the views still work
    engine.dispose()
