"""`db backup` / `db restore` as an operator runs them: restores over a live, an empty and a changed
warehouse leave exactly the backup's rows; a failed restore changes nothing; no password leaks."""

import hashlib
import os
import socket
import struct
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk, maintenance
from learning_pipelines.db.engine import get_engine
from learning_pipelines.demo import load_platform
from learning_pipelines.domain.simulate import simulate_platform

CLI = str(Path(sys.executable).parent / "learning-pipelines")
PASSWORD = "s3cr:t@p\\w"  # a ':' and a '\' to escape in the passfile, an '@' to quote in the URL
PASSWORD_FORMS = (PASSWORD, quote(PASSWORD, safe=""))  # as typed, as written in a URL


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env_extra or {})})


def _snapshot(engine: sa.Engine) -> dict[str, tuple[int, str]]:
    """Per table (on PostgreSQL each partition too): row count and a checksum of its rows."""
    engine.dispose()
    snapshot = {}
    with engine.connect() as conn:
        for name in sa.inspect(conn).get_table_names():
            rows = sorted(repr(tuple(row)) for row in conn.execute(sa.text(f'SELECT * FROM "{name}"')))
            snapshot[name] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
    return snapshot


def _load(engine: sa.Engine) -> None:
    load_platform(engine, simulate_platform(n_learners=20, n_concepts=30, n_resources=10, days=90, seed=4))


def _change(engine: sa.Engine) -> None:
    """What happens after a backup: a new learner with reviews in a new month (a new partition on
    PostgreSQL), rows deleted and updated, and a table, view and function a newer release might add."""
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO users (user_id) VALUES (999001)"))
        concept_id = conn.execute(sa.text("SELECT min(concept_id) FROM concepts")).scalar_one()
        bulk.insert_review_logs(conn, pd.DataFrame([
            {"id": 990_000_001 + i, "user_id": 999001, "concept_id": concept_id, "rating": 3, "state": 1,
             "reviewed_at": pd.Timestamp(f"2031-01-{i + 1:02d}T10:00Z"), "review_duration_ms": 1000}
            for i in range(3)]))
        conn.execute(sa.text("DELETE FROM user_interactions WHERE user_id = (SELECT min(user_id) FROM users)"))
        conn.execute(sa.text("UPDATE concepts SET name = 'renamed' WHERE concept_id = :id"), {"id": concept_id})
        conn.execute(sa.text("CREATE TABLE newer_release_table (id integer PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO newer_release_table VALUES (1)"))
        conn.execute(sa.text("CREATE VIEW newer_release_view AS SELECT user_id FROM users"))
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("CREATE FUNCTION newer_release_function() RETURNS integer LANGUAGE sql AS 'SELECT 1'"))
            conn.execute(sa.text("CREATE TYPE newer_release_mood AS ENUM ('calm', 'busy')"))


def _backup(url: str, path: Path) -> None:
    result = _cli("db", "backup", str(path), "--database-url", url)
    assert result.returncode == 0 and path.stat().st_size > 0, result.stderr
    assert not path.with_name(path.name + ".partial").exists()
    assert path.stat().st_mode & 0o077 == 0, "a backup holds learner data: readable by its owner only"


@pytest.fixture
def fresh_url(warehouse_url, tmp_path):
    """A second, never migrated database of the warehouse's kind (PostgreSQL: on the same server)."""
    if warehouse_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh' / 'warehouse.db'}"
        return
    name = f"lp_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(warehouse_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(warehouse_url).set(database=name)
    yield url.render_as_string(hide_password=False)
    get_engine(url.render_as_string(hide_password=False)).dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_restore_over_the_live_warehouse_it_came_from_keeps_exactly_its_rows(warehouse_url, warehouse_engine, tmp_path):
    _load(warehouse_engine)
    at_backup = _snapshot(warehouse_engine)
    backup = tmp_path / "warehouse.backup"
    _backup(warehouse_url, backup)

    restored = _cli("db", "restore", str(backup), "--yes", "--database-url", warehouse_url)
    assert restored.returncode == 0, restored.stderr
    assert _snapshot(warehouse_engine) == at_backup
    verified = _cli("db", "verify", "--database-url", warehouse_url)
    assert verified.returncode == 0 and verified.stdout.strip() == "ok", verified.stdout


def test_restore_repairs_a_warehouse_missing_a_table(warehouse_url, warehouse_engine, tmp_path):
    _load(warehouse_engine)
    at_backup = _snapshot(warehouse_engine)
    backup = tmp_path / "warehouse.backup"
    _backup(warehouse_url, backup)
    with warehouse_engine.begin() as conn:
        cascade = " CASCADE" if warehouse_engine.dialect.name == "postgresql" else ""
        conn.execute(sa.text(f"DROP TABLE review_logs{cascade}"))
    broken = _cli("db", "verify", "--database-url", warehouse_url)
    assert broken.returncode == 1 and "missing table(s): review_logs" in broken.stdout

    restored = _cli("db", "restore", str(backup), "--yes", "--database-url", warehouse_url)
    assert restored.returncode == 0, restored.stderr
    assert _cli("db", "verify", "--database-url", warehouse_url).stdout.strip() == "ok"
    assert _snapshot(warehouse_engine) == at_backup


def test_restore_over_newer_rows_and_tables_brings_back_exactly_the_backup(warehouse_url, warehouse_engine, tmp_path):
    _load(warehouse_engine)
    at_backup = _snapshot(warehouse_engine)
    backup = tmp_path / "warehouse.backup"
    _backup(warehouse_url, backup)
    _change(warehouse_engine)
    changed = _snapshot(warehouse_engine)
    assert changed != at_backup and "newer_release_table" in changed

    restored = _cli("db", "restore", str(backup), "--yes", "--database-url", warehouse_url)
    assert restored.returncode == 0, restored.stderr
    assert _snapshot(warehouse_engine) == at_backup
    assert "newer_release_view" not in sa.inspect(warehouse_engine).get_view_names()


def test_restore_into_a_freshly_created_database(warehouse_url, warehouse_engine, fresh_url, tmp_path):
    _load(warehouse_engine)
    at_backup = _snapshot(warehouse_engine)
    backup = tmp_path / "warehouse.backup"
    _backup(warehouse_url, backup)

    restored = _cli("db", "restore", str(backup), "--database-url", fresh_url)  # nothing to lose: no --yes
    assert restored.returncode == 0, restored.stderr
    assert _snapshot(get_engine(fresh_url)) == at_backup
    assert _cli("db", "verify", "--database-url", fresh_url).stdout.strip() == "ok"


def test_restore_over_rows_without_yes_is_refused_and_changes_nothing(warehouse_url, warehouse_engine, tmp_path):
    _load(warehouse_engine)
    backup = tmp_path / "warehouse.backup"
    _backup(warehouse_url, backup)
    _change(warehouse_engine)
    before = _snapshot(warehouse_engine)

    refused = _cli("db", "restore", str(backup), "--database-url", warehouse_url)
    assert refused.returncode == 2
    assert "holds rows" in refused.stderr and "--yes" in refused.stderr
    assert _snapshot(warehouse_engine) == before


def _truncated(backup: Path) -> Path:
    damaged = backup.with_name("truncated.backup")
    damaged.write_bytes(backup.read_bytes()[: backup.stat().st_size * 2 // 3])
    return damaged


def test_a_restore_that_fails_half_way_leaves_the_warehouse_as_it_was(warehouse_url, warehouse_engine, tmp_path):
    _load(warehouse_engine)
    backup = tmp_path / "warehouse.backup"
    _backup(warehouse_url, backup)
    _change(warehouse_engine)
    before = _snapshot(warehouse_engine)
    damaged = _truncated(backup)
    if warehouse_engine.dialect.name == "postgresql":
        # The damage is past the tables' definitions: the restore has replaced tables when it stops.
        script = subprocess.run(["pg_restore", "--file=-", str(damaged)], capture_output=True, text=True)
        assert script.returncode != 0 and "CREATE TABLE public.users" in script.stdout

    failed = _cli("db", "restore", str(damaged), "--yes", "--database-url", warehouse_url)
    assert failed.returncode == 1
    assert failed.stderr.startswith(f"error: restore from {damaged} failed, the warehouse is unchanged: ")
    assert len(failed.stderr.strip().splitlines()) == 1 and "Traceback" not in failed.stderr
    assert _snapshot(warehouse_engine) == before


def test_a_restore_stopped_by_a_failing_statement_leaves_the_warehouse_as_it_was(empty_postgres_url, tmp_path):
    """The backup grants a role that no longer exists: the GRANT near the end of the restore fails after
    every table was dropped and reloaded, and all of it is rolled back."""
    from learning_pipelines.db import migrate

    migrate.upgrade(empty_postgres_url)
    engine = get_engine(empty_postgres_url)
    _load(engine)
    role = f"lp_test_reader_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role}"))
        conn.execute(sa.text(f"GRANT SELECT ON users TO {role}"))
    backup = tmp_path / "warehouse.backup"
    try:
        _backup(empty_postgres_url, backup)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"REVOKE ALL ON users FROM {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
    _change(engine)
    before = _snapshot(engine)

    failed = _cli("db", "restore", str(backup), "--yes", "--database-url", empty_postgres_url)
    assert failed.returncode == 1
    assert f'role "{role}" does not exist' in failed.stderr and "the warehouse is unchanged" in failed.stderr
    assert _snapshot(engine) == before


def test_a_damaged_or_foreign_file_is_refused(warehouse_url, warehouse_engine, tmp_path):
    _load(warehouse_engine)
    before = _snapshot(warehouse_engine)
    not_a_backup = tmp_path / "notes.txt"
    not_a_backup.write_text("not a backup\n" * 1000)

    failed = _cli("db", "restore", str(not_a_backup), "--yes", "--database-url", warehouse_url)
    assert failed.returncode == 1 and "the warehouse is unchanged" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert _snapshot(warehouse_engine) == before
    missing = _cli("db", "restore", str(tmp_path / "missing.backup"), "--yes", "--database-url", warehouse_url)
    assert missing.returncode == 2 and "no backup at" in missing.stderr


def test_verify_finds_months_stuck_in_the_default_partition(empty_postgres_url):
    from learning_pipelines.db import migrate

    migrate.upgrade(empty_postgres_url)
    engine = get_engine(empty_postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO users (user_id) VALUES (1)"))
        conn.execute(sa.text("INSERT INTO concepts (concept_id, name) VALUES (1, 'c')"))
        conn.execute(sa.text("INSERT INTO review_logs (id, reviewed_at, user_id, concept_id, rating, review_duration_ms) "
                             "VALUES (1, '2024-05-02T00:00:00Z', 1, 1, 3, 1000)"))  # lands in DEFAULT
    assert maintenance.verify(engine) == ["reviews of 2024-05 have no partition (they sit in review_logs_default)"]


class _PasswordAsker:
    """Just enough of a PostgreSQL server to ask a client for its password in clear text, then refuse it
    with a message quoting it back. While the client waits for that answer, records what it sent and whether
    any process's command line holds the password, and lists the client's TMPDIR (where a passfile would be)."""

    def __init__(self, tmpdir: Path):
        self.tmpdir = tmpdir
        self.seen: list[dict] = []
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._socket.accept()
            except OSError:
                return
            with client:
                try:
                    self._answer(client)
                except (EOFError, OSError):
                    pass

    @staticmethod
    def _read(client: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = client.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _answer(self, client: socket.socket) -> None:
        while True:
            length, code = struct.unpack("!ii", self._read(client, 8))
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: not offered
                client.sendall(b"N")
                continue
            self._read(client, length - 8)  # the startup message
            break
        client.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        self._read(client, 1)
        (length,) = struct.unpack("!i", self._read(client, 4))
        password = self._read(client, length - 4).rstrip(b"\0").decode()
        self.seen.append({
            "password": password,
            "on_a_command_line": any(form.encode() in cmdline
                                     for cmdline in _command_lines() for form in PASSWORD_FORMS),
            "tmpdir": {path.name: path.stat().st_mode & 0o777 for path in self.tmpdir.iterdir()},
        })
        message = f'password authentication failed (got "{password}")'.encode()
        body = b"SFATAL\0VFATAL\0C28P01\0M" + message + b"\0\0"
        client.sendall(b"E" + struct.pack("!i", len(body) + 4) + body)

    def close(self) -> None:
        self._socket.close()


def _command_lines() -> list[bytes]:
    lines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(path.read_bytes())
        except OSError:
            pass
    return lines


@pytest.mark.parametrize("command", [["backup"], ["restore", "--yes"], ["upgrade"]])
def test_a_password_in_the_url_is_never_on_a_command_line_or_in_any_output(command, empty_postgres_url, tmp_path):
    backup = tmp_path / "warehouse.backup"
    _backup(empty_postgres_url, backup)  # restore needs a real archive; the server below refuses it
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    server = _PasswordAsker(tmpdir)
    url = sa.URL.create("postgresql+psycopg2", username="alice", password=PASSWORD, host="127.0.0.1",
                        port=server.port, database="warehouse").render_as_string(hide_password=False)
    try:
        # The URL comes through the environment: a --database-url holding it would be on our own command line.
        result = _cli("db", *command, *([str(backup)] if command[0] != "upgrade" else []),
                      env_extra={"LEARNING_PIPELINES_DATABASE_URL": url, "TMPDIR": str(tmpdir)})
    finally:
        server.close()

    assert server.seen and server.seen[0]["password"] == PASSWORD  # libpq was given the password
    assert not server.seen[0]["on_a_command_line"]
    if command[0] != "upgrade":  # pg_dump / psql read it from a passfile only this user can read
        assert list(server.seen[0]["tmpdir"].values()) == [0o600]
    assert list(tmpdir.iterdir()) == []  # and it is gone
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert not any(form in output for form in PASSWORD_FORMS)
    assert "Traceback" not in output and len(result.stderr.strip().splitlines()) == 1
    assert 'password authentication failed (got "***")' in result.stderr
