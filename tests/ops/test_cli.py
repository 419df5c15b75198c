"""The console script as a user runs it: a subprocess with its own DAGSTER_HOME and warehouse."""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from learning_pipelines import cli
from learning_pipelines.db import migrate
from learning_pipelines.db.engine import get_engine

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "learning-pipelines")


def _run(args, env_extra, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def dagster_home(tmp_path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return home


@pytest.mark.slow
def test_demo_loads_learners_materializes_and_prints_where_to_look(warehouse_url, dagster_home):
    env = {"DAGSTER_HOME": str(dagster_home), "LEARNING_PIPELINES_DATABASE_URL": warehouse_url}
    result = _run(["demo", "--learners", "150"], env)  # enough learners for NCF to beat popularity
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "loaded simulated platform" in out and "make dev" in out
    assert "review_logs [" in out
    engine = get_engine(warehouse_url)
    with engine.connect() as conn:
        n_reviews = conn.execute(sa.text("SELECT count(*) FROM review_logs")).scalar_one()
        n_intervals = conn.execute(sa.text("SELECT count(*) FROM review_log_intervals")).scalar_one()
    assert n_reviews > 1000 and n_intervals == n_reviews
    assert f"{n_reviews:,}" in out
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs()
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        materialized = instance.get_materialized_partitions(dg.AssetKey("review_logs"))
        assert len(materialized) == len([line for line in out.splitlines() if "review_logs [" in line])

    again = _run(["demo", "--learners", "150", "--no-materialize"], env)
    assert again.returncode == 0 and "load skipped" in again.stdout


def test_import_command_reports_and_exits_nonzero_on_a_bad_file(empty_sqlite_url, anki_csv, dagster_home, tmp_path):
    migrate.upgrade(empty_sqlite_url)
    env = {"LEARNING_PIPELINES_DATABASE_URL": empty_sqlite_url, "DAGSTER_HOME": str(dagster_home)}
    result = _run(["import", str(anki_csv), "--user-id", "1", "--register-unknown"], env)
    assert result.returncode == 0, result.stderr
    assert "12580 row(s) read, 12580 loaded" in result.stdout
    months = ["2024-03", "2024-05", "2024-07", "2024-08", "2024-09", "2024-10"]  # the file has no April or June
    assert f"reported to Dagster: review_logs {', '.join(months)}" in result.stdout
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("review_logs")) == {f"{m}-01" for m in months}

    bad = tmp_path / "bad.csv"
    bad.write_text("card_id,review_time\n1,2024-01-01T00:00:00Z\n")
    result = _run(["import", str(bad), "--user-id", "1"], env)
    assert result.returncode == 2
    assert "missing required column(s) review_rating, review_duration" in result.stderr


def test_db_command_shows_the_revision(empty_sqlite_url):
    result = _run(["db", "upgrade", "--database-url", empty_sqlite_url], {})
    assert result.returncode == 0, result.stderr
    assert f"at revision {migrate.head_revision()}" in result.stdout
    current = _run(["db", "current", "--database-url", empty_sqlite_url], {})
    assert current.returncode == 0 and f"at revision {migrate.head_revision()}" in current.stdout


def test_db_downgrade_needs_an_explicit_revision_and_yes(empty_sqlite_url):
    migrate.upgrade(empty_sqlite_url)
    engine = get_engine(empty_sqlite_url)
    tables = set(sa.inspect(engine).get_table_names())
    head = migrate.head_revision()

    no_revision = _run(["db", "downgrade", "--database-url", empty_sqlite_url], {})
    assert no_revision.returncode == 2 and "revision" in no_revision.stderr
    to_base = _run(["db", "downgrade", "base", "--database-url", empty_sqlite_url], {})
    assert to_base.returncode == 2
    assert f"would undo these {len(list(migrate.migrations_undone(engine, 'base')))} migration(s)" in to_base.stderr
    assert f"  {head} " in to_base.stderr and "  0001 " in to_base.stderr and "--yes" in to_base.stderr
    unknown = _run(["db", "downgrade", "nosuchrevision", "--yes", "--database-url", empty_sqlite_url], {})
    assert unknown.returncode == 2 and "cannot downgrade to nosuchrevision" in unknown.stderr
    engine.dispose()
    assert set(sa.inspect(engine).get_table_names()) == tables and migrate.current_revision(engine) == head

    one_down = _run(["db", "downgrade", "-1", "--yes", "--database-url", empty_sqlite_url], {})
    assert one_down.returncode == 0, one_down.stderr
    engine.dispose()
    assert migrate.current_revision(engine) not in (head, None)


def test_db_backup_and_restore_take_their_own_file_argument(empty_sqlite_url, tmp_path):
    migrate.upgrade(empty_sqlite_url)
    assert _run(["db", "backup", "--database-url", empty_sqlite_url], {}).returncode == 2
    backup = tmp_path / "backups" / "warehouse.db"
    written = _run(["db", "backup", str(backup), "--database-url", empty_sqlite_url], {})
    assert written.returncode == 0 and f"backup written to {backup}" in written.stdout
    restored = _run(["db", "restore", str(backup), "--database-url", empty_sqlite_url], {})
    assert restored.returncode == 0, restored.stderr  # an empty warehouse: nothing to lose, no --yes


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_every_db_subcommand_and_flag_has_a_help_text():
    db = _subparsers(cli.build_parser()).choices["db"]
    listed = {choice.dest: choice.help for choice in _subparsers(db)._choices_actions}
    assert set(listed) == {"upgrade", "downgrade", "current", "backup", "restore", "verify", "partition-status"}
    assert all(listed.values()), listed
    for name, parser in _subparsers(db).choices.items():
        without_help = [a.dest for a in parser._actions if not a.help or a.help == argparse.SUPPRESS]
        assert without_help == [], f"db {name}: {without_help}"
