"""Backup, restore and verification of the warehouse (SQLite online backup API; pg_dump, pg_restore, psql).

A password in the database URL reaches the PostgreSQL client tools through a passfile only we can read,
deleted when the tool ends, never through their command line; errors show URLs and tool output with the
password hidden. A restore replaces the whole warehouse in one transaction: if it fails at any point the
warehouse is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import sqlalchemy as sa

from learning_pipelines.db import migrate, partition_migration, partitions, tables
from learning_pipelines.errors import one_line

# A restore waits this long for the locks of the tables it replaces (a long read, a running job), then
# fails with nothing changed, rather than queueing every other query behind it indefinitely.
RESTORE_LOCK_TIMEOUT = "30s"

# Tables whose rows the migrations write themselves (the schema's revision; SQLite's ingest_seq counter; the
# time zone keys of tzdata): a warehouse holding only these has no data to lose.
BOOKKEEPING_TABLES = frozenset({"alembic_version", "review_logs_ingest_counter", "time_zones"})


class MaintenanceError(RuntimeError):
    """A backup or restore that could not be done, said in one line with the password hidden."""


def _password(url: sa.URL) -> str | None:
    """The password, whether in its place or given as a `?password=` query parameter."""
    password = url.password or url.query.get("password")
    return str(password) if password else None


def shown_url(url: str | sa.URL) -> str:
    """The URL as it may be printed: password replaced by ***."""
    return hide_password(sa.engine.make_url(url).render_as_string(hide_password=True), url)


def hide_password(text: str, url: str | sa.URL) -> str:
    """`text` with the URL's password (as typed, or URL-encoded) replaced by ***."""
    password = _password(sa.engine.make_url(url))
    if not password:
        return text
    for form in sorted({password, quote(password, safe=""), quote_plus(password)}, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def _pg_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MaintenanceError(f"{name} not found: install the PostgreSQL client (Debian: postgresql-client)")
    return path


def _passfile_line(password: str) -> str:
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n"


@contextlib.contextmanager
def _libpq(url: sa.URL) -> Iterator[tuple[str, dict[str, str]]]:
    """(connection URI without the password, environment) for a PostgreSQL client tool. A password in the
    URL goes into a passfile readable by this user only (mkstemp creates it 0600), removed afterwards."""
    password = _password(url)
    # URL.set ignores None; _replace is SQLAlchemy's documented way to clear a field.
    uri = (url._replace(drivername="postgresql", password=None).difference_update_query(["password"])
           .render_as_string(hide_password=False))
    env = dict(os.environ)
    if not password:
        yield uri, env
        return
    env.pop("PGPASSWORD", None)  # it would win over the passfile
    descriptor, passfile = tempfile.mkstemp(prefix="learning-pipelines-", suffix=".pgpass")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(_passfile_line(password))
        env["PGPASSFILE"] = passfile
        yield uri, env
    finally:
        os.unlink(passfile)


def _tool_failed(name: str, stderr: str, url: sa.URL) -> MaintenanceError:
    return MaintenanceError(f"{name} failed: {one_line(hide_password(stderr, url)) or 'no message'}")


def backup(engine: sa.Engine, path: Path) -> Path:
    """A consistent copy while the warehouse stays online: pg_dump custom format, or SQLite's backup API
    (a single file, not in WAL mode). Written beside `path` and renamed into place when complete, so a
    failed backup leaves no file and does not overwrite an earlier one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.touch(mode=0o600)  # it holds learner data: only its owner reads it
    try:
        if engine.dialect.name == "postgresql":
            with _libpq(engine.url) as (uri, env):
                result = subprocess.run([_pg_tool("pg_dump"), "--no-password", "--format=custom", "--file",
                                         str(partial), "--dbname", uri], env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise _tool_failed("pg_dump", result.stderr, engine.url)
        else:
            try:
                with contextlib.closing(sqlite3.connect(engine.url.database)) as source, \
                        contextlib.closing(sqlite3.connect(partial)) as target:
                    source.backup(target)
                    target.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.Error as error:
                raise MaintenanceError(f"backup of {engine.url.database} failed: {error}") from None
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def tables_holding_rows(engine: sa.Engine) -> list[str]:
    """The tables a restore would empty: every table with at least one row, review_logs' partitions (their
    rows are review_logs') and the bookkeeping tables aside."""
    names = [name for name in sa.inspect(engine).get_table_names()
             if name not in BOOKKEEPING_TABLES and not partitions.is_partition_table(name)]
    quote_name = engine.dialect.identifier_preparer.quote
    with engine.connect() as conn:
        return [name for name in names
                if conn.execute(sa.text(f"SELECT 1 FROM {quote_name(name)} LIMIT 1")).first() is not None]


def restore(engine: sa.Engine, path: Path) -> None:
    """Replace the warehouse's contents with a backup made by `backup` (same database kind), all or nothing.
    Whatever the warehouse holds (newer rows, tables or partitions the backup lacks) is replaced."""
    path = Path(path)
    if not path.is_file():
        raise MaintenanceError(f"no backup at {path}")
    engine.dispose()
    try:
        if engine.dialect.name == "postgresql":
            _restore_postgres(engine.url, path)
        else:
            _restore_sqlite(engine.url.database, path)
    except MaintenanceError as error:
        raise MaintenanceError(f"restore from {path} failed, the warehouse is unchanged: {error}") from None


# Sent before the backup's SQL, in the same transaction: drops every schema but public, and in public every
# table (partitions go with their parent), view, sequence, routine and type not owned by an extension.
# pg_restore --clean cannot do this: it drops only what the backup holds, and stops at the month
# partitions' inherited primary keys.
_EMPTY_THE_DATABASE = f"""
BEGIN;
SET client_min_messages = error;
SET lock_timeout = '{RESTORE_LOCK_TIMEOUT}';
DO $empty$
DECLARE
    statement text;
BEGIN
    FOR statement IN
        SELECT format('DROP SCHEMA %I CASCADE', nspname) FROM pg_namespace
        WHERE nspname NOT IN ('public', 'information_schema') AND nspname NOT LIKE 'pg\\_%'
        UNION ALL
        SELECT format('DROP %s IF EXISTS public.%I CASCADE',
                      CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                     WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                      c.relname)
        FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND NOT c.relispartition
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e')
        UNION ALL
        SELECT format('DROP ROUTINE IF EXISTS public.%I(%s) CASCADE', p.proname,
                      pg_get_function_identity_arguments(p.oid))
        FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                          AND d.objid = p.oid AND d.deptype = 'e')
        UNION ALL
        SELECT format('DROP %s IF EXISTS public.%I CASCADE', CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                      t.typname)
        FROM pg_type t
        WHERE t.typnamespace = 'public'::regnamespace
          AND (t.typtype IN ('e', 'd', 'r')
               OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                          AND d.objid = t.oid AND d.deptype = 'e')
    LOOP
        EXECUTE statement;
    END LOOP;
END
$empty$;
"""


def _restore_postgres(url: sa.URL, path: Path) -> None:
    """psql runs, in one transaction: the drops above, then the backup as SQL (pg_restore --single-transaction
    writes it between BEGIN, a no-op inside ours, and COMMIT). The transaction commits only when the backup's
    COMMIT arrives: if pg_restore stops early, psql reaches the end of its input inside the transaction and
    disconnecting rolls it back; if a statement fails, psql stops (ON_ERROR_STOP) and the same happens."""
    pg_restore, psql = _pg_tool("pg_restore"), _pg_tool("psql")
    with _libpq(url) as (uri, env), tempfile.TemporaryFile() as reader_errors, \
            tempfile.TemporaryFile() as writer_errors:
        reader = subprocess.Popen([pg_restore, "--no-owner", "--single-transaction", "--file=-", str(path)],
                                  stdout=subprocess.PIPE, stderr=reader_errors, env=env)
        writer = subprocess.Popen([psql, "--no-password", "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1",
                                   "--dbname", uri, "--file=-"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=writer_errors, env=env)
        try:
            writer.stdin.write(_EMPTY_THE_DATABASE.encode())
            shutil.copyfileobj(reader.stdout, writer.stdin)
        except BrokenPipeError:
            pass  # psql stopped at an error: its stderr says which
        finally:
            reader.stdout.close()
            with contextlib.suppress(BrokenPipeError):
                writer.stdin.close()
            reader.wait()
            writer.wait()
        # psql first: when it stops, pg_restore fails too, writing into a closed pipe.
        for name, process, errors in (("psql", writer, writer_errors), ("pg_restore", reader, reader_errors)):
            if process.returncode != 0:
                errors.seek(0)
                raise _tool_failed(name, errors.read().decode(errors="replace"), url)


def _restore_sqlite(database: str, path: Path) -> None:
    """SQLite's backup API writes the target in one transaction: readers see the old or the new warehouse,
    and a copy that fails part-way is rolled back. The backup is checked first, since a damaged file could
    otherwise be copied without an error."""
    source_uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(source_uri, uri=True)) as source:
            problems = [row[0] for row in source.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise MaintenanceError(f"the backup is damaged: {'; '.join(problems[:3])}")
            with contextlib.closing(sqlite3.connect(database, timeout=30)) as target:
                source.backup(target)
    except sqlite3.Error as error:
        raise MaintenanceError(str(error)) from None


def verify(engine: sa.Engine) -> list[str]:
    """What is wrong with the warehouse (empty when nothing): schema not at head, tables missing, and on
    PostgreSQL months with reviews but no partition, or rows in DEFAULT for a month that has one."""
    problems = []
    current, head = migrate.current_revision(engine), migrate.head_revision()
    if current != head:
        problems.append(f"schema at revision {current}, head is {head}: run `learning-pipelines db upgrade`")
    present = set(sa.inspect(engine).get_table_names())
    missing = sorted(set(tables.metadata.tables) - present)
    if missing:
        problems.append(f"missing table(s): {', '.join(missing)}")
    if engine.dialect.name == "postgresql" and "review_logs" in present:
        with engine.connect() as conn:
            state = partition_migration.layout(conn)
            if state != "partitioned":
                problems.append(f"review_logs: {partition_migration.progress_report(conn)['next_step']}")
                return problems
            months = set(partitions.months_with_data(conn, partitions.PARENT_TABLE))
            existing = partitions.existing_month_partitions(conn)
            for month in sorted(months - existing):
                problems.append(f"reviews of {month:%Y-%m} have no partition (they sit in {partitions.DEFAULT_PARTITION})")
            for month in sorted(months & existing):
                stray = conn.execute(sa.text(
                    f"SELECT count(*) FROM {partitions.DEFAULT_PARTITION} WHERE reviewed_at >= :lo AND reviewed_at < :hi"),
                    {"lo": month, "hi": partitions.next_month(month)}).scalar_one()
                if stray:
                    problems.append(f"{stray} review(s) of {month:%Y-%m} in {partitions.DEFAULT_PARTITION} "
                                    "although the month has a partition")
    return problems
