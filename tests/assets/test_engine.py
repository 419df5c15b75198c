import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
from dagster._core.remote_representation.external_data import RepositorySnap, ResourceConfigEnvVarSnap

from learning_pipelines.cli import main
from learning_pipelines.db import migrate
from learning_pipelines.db.engine import DATABASE_URL_ENV, get_engine, resolve_database_url
from learning_pipelines.defs.resources import Warehouse

ROOT = Path(__file__).resolve().parents[2]


def test_no_url_means_the_warehouse_the_environment_names_now(tmp_path, monkeypatch):
    """A process that changes $LEARNING_PIPELINES_DATABASE_URL (a test, a worker) never keeps the old warehouse."""
    first, second = (f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
    monkeypatch.setenv(DATABASE_URL_ENV, first)
    assert get_engine().url.database == str(tmp_path / "a.db")
    monkeypatch.setenv(DATABASE_URL_ENV, second)
    assert get_engine().url.database == str(tmp_path / "b.db")
    assert get_engine() is get_engine(second)


def test_a_failed_statement_never_prints_its_parameters(warehouse_url):
    import pytest
    import sqlalchemy as sa

    from learning_pipelines.db import tables

    with pytest.raises(sa.exc.IntegrityError) as failure:
        with get_engine(warehouse_url).begin() as conn:
            conn.execute(tables.users.insert(), [{"user_id": 424242, "external_ref": "alice@example.org"}] * 2)
    # (PostgreSQL's own DETAIL line may still name the conflicting key.)
    assert "alice@example.org" not in str(failure.value) and "hide_parameters" in str(failure.value)


# --- one warehouse for the CLI, Alembic and the code location's resource -----------------------------------


def _alembic_upgrade_head() -> None:
    """`alembic upgrade head` as `make demo` and `make dev` run it (migrations/env.py), in this environment."""
    subprocess.run([str(Path(sys.executable).parent / "alembic"), "upgrade", "head"], cwd=ROOT, env=dict(os.environ),
                   check=True, capture_output=True, timeout=300)


def _cli_current(capsys) -> str:
    capsys.readouterr()
    assert main(["db", "current"]) == 0
    return capsys.readouterr().out


def _code_location_warehouse() -> tuple[Warehouse, dict]:
    """The code location's own `warehouse`, resolved as a run resolves it, and what the UI shows of its config."""
    from learning_pipelines.definitions import defs

    definitions = defs()
    [shown] = [r.configured_values for r in RepositorySnap.from_def(definitions.get_repository_def()).resources
               if r.name == "warehouse"]
    with dg.build_resources({"warehouse": definitions.resources["warehouse"]}) as resolved:
        return resolved.warehouse, shown


def test_no_variable_means_the_embedded_sqlite_for_the_cli_alembic_and_the_resource(tmp_path, monkeypatch, capsys):
    """`make demo` / `make dev` set no warehouse variable: all three use $DAGSTER_HOME/warehouse.db."""
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    embedded = tmp_path / "warehouse.db"
    assert resolve_database_url() == f"sqlite:///{embedded}"

    _alembic_upgrade_head()
    assert embedded.is_file()
    assert f"at revision {migrate.head_revision()} " in _cli_current(capsys)
    warehouse, shown = _code_location_warehouse()
    assert shown == {"database_url": '""'}, "no dg.EnvVar without the variable: it would refuse to resolve"
    assert warehouse.database_url == ""
    assert warehouse.engine.url.database == str(embedded)
    assert migrate.current_revision(warehouse.engine) == migrate.head_revision()


def test_the_variable_names_one_warehouse_for_the_cli_alembic_and_the_resource(tmp_path, monkeypatch, capsys):
    named = tmp_path / "named.db"
    monkeypatch.setenv(DATABASE_URL_ENV, f"sqlite:///{named}")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))

    _alembic_upgrade_head()
    assert named.is_file() and not (tmp_path / "home" / "warehouse.db").exists()
    assert f"at revision {migrate.head_revision()} " in _cli_current(capsys)
    warehouse, shown = _code_location_warehouse()
    assert shown == {"database_url": ResourceConfigEnvVarSnap(name=DATABASE_URL_ENV)}
    assert warehouse.engine.url.database == str(named)
    assert migrate.current_revision(warehouse.engine) == migrate.head_revision()
