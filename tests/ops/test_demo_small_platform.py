"""`learning-pipelines demo` on a platform too small for NCF to beat popularity still ends with every
learner's recommendations (the content + graph fallback), as a user runs it: a subprocess, SQLite."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.db.engine import get_engine

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "learning-pipelines")


@pytest.mark.parametrize("n_learners", [1, 3])
def test_demo_completes_on_a_tiny_platform_with_fallback_recommendations(n_learners, empty_sqlite_url, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "LEARNING_PIPELINES_DATABASE_URL": empty_sqlite_url}
    result = subprocess.run([CLI, "demo", "--learners", str(n_learners)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # The summary is whole (the runs' log lines go to a file), and the one failed check says what it means and where
    # to look; nothing warns.
    assert result.stderr == ""
    assert "\x1b[" not in result.stdout and '{"run_id"' not in result.stdout
    check = result.stdout[result.stdout.index("1 check(s) failed without blocking"):]
    assert check.splitlines()[1].startswith("  ncf_model:ncf_beats_popularity [ncf_model]")
    assert "what it checks: On the held-out latest interaction per learner, NCF's HR@10 beats" in check
    assert "what it found: hr_at_10 " in check
    assert "where to look: http://127.0.0.1:3000/runs/" in check
    assert "Lineage in the sidebar" in result.stdout.splitlines()[-1]
    assert "Warning" not in (home / "logs" / "demo.log").read_text()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert runs and all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
    with get_engine(empty_sqlite_url).connect() as conn:
        recs = bulk.read_frame(conn, sa.select(tables.user_recommendations))
        n_models = conn.execute(sa.select(sa.func.count()).select_from(tables.ncf_models)).scalar_one()
    assert n_models == 1, "the losing model is recorded"
    assert recs["user_id"].nunique() == n_learners and (recs.groupby("user_id").size() == 10).all()
    assert (recs["strategy"] == "content_graph").all() and recs["model_id"].isna().all()
