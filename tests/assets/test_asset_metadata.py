"""What the UI shows of each asset: owner, kinds, the table it writes with its columns, and after a run its row
count and the tables people would rather look at than read (calibration, model scores, top themes)."""

import datetime as dt
import re

import dagster as dg
import pytest
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

from learning_pipelines.db import migrate, tables
from learning_pipelines.db.engine import get_engine
from learning_pipelines.definitions import defs as load_defs
from learning_pipelines.demo import REPOSITORY, load_platform, materialize_all, review_months
from learning_pipelines.domain.simulate import simulate_platform

MAINTENANCE = {"review_logs_partitioned"}  # the online partition migration's copy: no table of its own to show
TORCH_ASSETS = {"ncf_model", "recommendations"}  # the only assets that train or score a torch model


def _specs():
    return {spec.key.to_user_string(): spec for spec in load_defs().resolve_all_asset_specs()}


def _materialized_specs():
    """The assets Dagster materializes (the app's external assets, defs/app_boundary.py, left out)."""
    graph = load_defs().resolve_asset_graph()
    return {name: spec for name, spec in _specs().items() if graph.get(spec.key).is_materializable}


def test_every_asset_has_an_owner_kinds_and_a_description():
    for name, spec in _specs().items():
        assert spec.owners, f"{name} has no owner"
        assert spec.kinds, f"{name} has no kinds"
        assert spec.description, f"{name} has no description"
        assert ("torch" in spec.kinds) == (name in TORCH_ASSETS), f"{name}: kinds {sorted(spec.kinds)}"


def test_every_data_asset_shows_the_columns_of_the_table_it_writes():
    for name, spec in _materialized_specs().items():
        if name in MAINTENANCE:
            continue
        table = tables.metadata.tables[spec.metadata["dagster/table_name"]]
        schema = spec.metadata["dagster/column_schema"]
        assert [column.name for column in schema.columns] == [column.name for column in table.columns], name
        described = {column.name: column.description for column in schema.columns}
        assert all(described[column.name] == column.comment for column in table.columns), name


def _markdown_rows(markdown: str) -> list[list[str]]:
    """The body rows of the (first) markdown table in `markdown`."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


@pytest.fixture(scope="module")
def demo_instance(tmp_path_factory):
    """The demo's runs (every job, upstream first) over a small simulated platform: (instance, warehouse URL)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'warehouse.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEARNING_PIPELINES_DATABASE_URL", url)
        migrate.upgrade(url)
        engine = get_engine(url)
        load_platform(engine, simulate_platform(n_learners=60, n_concepts=60, n_resources=30, days=120, seed=4,
                                                as_of=dt.datetime.now(dt.timezone.utc)))
        with dg.instance_for_test() as instance:
            materialize_all(load_defs(), instance, review_months(engine))
            yield instance
        engine.dispose()


@pytest.mark.slow
def test_demo_runs_belong_to_the_workspace_code_location(demo_instance):
    """As if launched from the UI: the Overview timeline and each job's page list them (by this origin and tag)."""
    runs = demo_instance.get_runs()
    assert runs and all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
    assert {run.remote_job_origin.location_name for run in runs} == {"learning_pipelines"}
    label = f"{REPOSITORY}@learning_pipelines"
    for job in {run.job_name for run in runs}:
        listed = demo_instance.get_runs(dg.RunsFilter(job_name=job, tags={REPOSITORY_LABEL_TAG: label}))
        assert len(listed) == len([run for run in runs if run.job_name == job]), job


@pytest.mark.slow
def test_materializations_carry_row_counts_and_the_tables_people_look_at(demo_instance):
    latest = {}
    for name in set(_materialized_specs()) - MAINTENANCE:  # the demo has nothing to migrate
        records = demo_instance.fetch_materializations(dg.AssetKey(name), limit=1000).records
        assert records, f"{name} was never materialized"
        latest[name] = [record.asset_materialization.metadata for record in records]

    for name, materializations in latest.items():
        assert all("dagster/row_count" in m for m in materializations), f"{name} has no row count"
        looked_at = {"preview", "themes", "calibration", "scores", "hardest", "global_weights"}
        assert all(looked_at & m.keys() for m in materializations), f"{name} shows nothing of what it wrote"
        # A key keeps one type from one materialization to the next, so the UI plots it over time.
        types = {}
        for metadata in materializations:
            for key, value in metadata.items():
                types.setdefault(key, set()).add(type(value).__name__)
        assert all(len(kinds) == 1 for kinds in types.values()), (name, {k: v for k, v in types.items() if len(v) > 1})

    calibration = latest["fsrs_shadow_evaluation"][0]["calibration"].value
    rows = _markdown_rows(calibration)
    assert len(rows) == 20 and {row[0] for row in rows} == {"BASELINE_GLOBAL", "TUNED_ELIGIBLE"}
    assert [row[1] for row in rows[:10]] == [f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10)]

    scores = _markdown_rows(latest["ncf_model"][0]["scores"].value)
    assert [row[0].split(" ")[0] for row in scores] == ["NeuMF", "popularity"]
    assert all(re.fullmatch(r"0\.\d{4}", cell) for row in scores for cell in row[1:])

    themes = [_markdown_rows(m["themes"].value) for m in latest["revision_queues"]]
    assert any(themes) and all(row[0] != "*" for table in themes for row in table)
