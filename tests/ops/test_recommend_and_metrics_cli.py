"""`recommend` for a learner who does not exist, and `metrics` without DAGSTER_HOME."""

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd

from learning_pipelines.cli import main
from learning_pipelines.db import bulk, engine, migrate, tables

ROOT = Path(__file__).resolve().parents[2]


@dg.asset
def probe() -> None:
    """A run to find in the instance the metrics read."""


def test_recommend_says_an_unknown_learner_does_not_exist(warehouse_url, warehouse_engine, capsys):
    with warehouse_engine.begin() as conn:
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": [1]}))

    assert main(["recommend", "404", "--database-url", warehouse_url]) == 2
    err = capsys.readouterr().err
    assert "no learner 404 in the warehouse" in err and "materialize" not in err

    assert main(["recommend", "1", "--database-url", warehouse_url]) == 1
    assert "materialize `recommendations` first" in capsys.readouterr().err


def test_metrics_without_dagster_home_falls_back_to_the_repos_instance(empty_sqlite_url, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setattr(engine, "PROJECT_ROOT", tmp_path)
    migrate.upgrade(empty_sqlite_url)
    (tmp_path / "dagster_home").mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", tmp_path / "dagster_home" / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        assert dg.materialize([probe], instance=instance).success

    assert main(["metrics", "--once", "--database-url", empty_sqlite_url]) == 0

    out = capsys.readouterr().out
    assert 'dagster_asset_last_materialization_timestamp_seconds{asset="probe"}' in out
    assert "learning_pipelines_warehouse_up 1.0" in out


def test_metrics_names_what_to_set_when_there_is_no_instance_to_fall_back_to(empty_sqlite_url, tmp_path, monkeypatch,
                                                                             capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setattr(engine, "PROJECT_ROOT", tmp_path)

    assert main(["metrics", "--once", "--database-url", empty_sqlite_url]) == 2

    assert f"no Dagster instance at {tmp_path / 'dagster_home'}; set DAGSTER_HOME" in capsys.readouterr().err
