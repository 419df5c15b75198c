"""The console script as a user runs it: a subprocess with its own DAGSTER_HOME and warehouse."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from learning_pipelines.db import migrate
from learning_pipelines.db.engine import get_engine

ROOT = Path(__file__).resolve().parents[1]
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
