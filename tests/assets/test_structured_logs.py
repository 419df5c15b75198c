"""Asset log lines: JSON or console lines on stderr naming their step, and the same events in the run's log."""

import json
import logging

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
import structlog

from learning_pipelines.db import bulk, migrate
from learning_pipelines.db.engine import get_engine
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.review_logs import review_logs
from learning_pipelines.observability import structured_logs
from learning_pipelines.observability.structured_logs import asset_logger

SHARD = learner_shards.get_partition_keys()[1]
# Dagster's own console lines stay off stderr, so every line there is one of ours.
QUIET_DAGSTER_CONSOLE = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dg.asset(partitions_def=learner_shards)
def shard_step(context: dg.AssetExecutionContext) -> None:
    asset_logger(context).warning("learners skipped", n_learners=3)


@pytest.fixture(params=["json", "console"])
def log_format(request, monkeypatch) -> str:
    monkeypatch.setenv(structured_logs.LOG_FORMAT_ENV, request.param)
    structured_logs.configure()
    yield request.param
    structlog.reset_defaults()


def _materialize(assets, **kwargs) -> tuple[dg.ExecuteInProcessResult, dg.DagsterInstance]:
    instance = dg.DagsterInstance.ephemeral()
    return dg.materialize(assets, instance=instance, run_config=QUIET_DAGSTER_CONSOLE, **kwargs), instance


def _run_log(instance: dg.DagsterInstance, run_id: str) -> list:
    return [entry for entry in instance.all_logs(run_id) if not entry.is_dagster_event]


def test_every_line_carries_the_step_and_reaches_the_run_log(log_format, capsys):
    capsys.readouterr()
    result, instance = _materialize([shard_step], partition_key=SHARD)

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    if log_format == "json":
        line = json.loads(lines[0])
        assert line | {"timestamp": None} == {
            "event": "learners skipped", "n_learners": 3, "level": "warning", "timestamp": None,
            "run_id": result.run_id, "job": "__ephemeral_asset_job__", "asset": "shard_step",
            "partition": SHARD, "shard": SHARD}
    else:
        assert not lines[0].startswith("{")
        assert "learners skipped" in lines[0] and f"run_id={result.run_id}" in lines[0] and f"shard={SHARD}" in lines[0]
    [entry] = _run_log(instance, result.run_id)
    assert entry.level == logging.WARNING
    assert entry.user_message == f"learners skipped partition={SHARD} shard={SHARD} n_learners=3"


def test_a_real_asset_logs_its_partition_without_a_shard(log_format, empty_sqlite_url, capsys):
    migrate.upgrade(empty_sqlite_url)
    with get_engine(empty_sqlite_url).begin() as conn:
        conn.execute(sa.text("INSERT INTO users (user_id) VALUES (1)"))
        conn.execute(sa.text("INSERT INTO concepts (concept_id, name) VALUES (1, 'c')"))
        bulk.insert_review_logs(conn, pd.DataFrame([  # the second one lasted five hours: quarantined
            {"id": i, "user_id": 1, "concept_id": 1, "rating": 3, "reviewed_at": pd.Timestamp("2024-03-02", tz="UTC"),
             "review_duration_ms": duration, "state": 1} for i, duration in ((1, 4000), (2, 5 * 3_600_000))]))
    capsys.readouterr()

    result, instance = _materialize([review_logs], partition_key="2024-03-01",
                                    resources={"warehouse": Warehouse(database_url=empty_sqlite_url)})

    [line] = capsys.readouterr().err.splitlines()
    if log_format == "json":
        fields = json.loads(line)
        assert {k: fields[k] for k in ("event", "n_rejected", "asset", "partition", "run_id")} == {
            "event": "reviews moved to review_log_rejects", "n_rejected": 1, "asset": "review_logs",
            "partition": "2024-03-01", "run_id": result.run_id}
        assert "shard" not in fields
    assert [e.user_message for e in _run_log(instance, result.run_id)] == [
        "reviews moved to review_log_rejects partition=2024-03-01 n_rejected=1"]


def test_an_unknown_format_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv(structured_logs.LOG_FORMAT_ENV, "xml")
    with pytest.raises(ValueError, match="LEARNING_PIPELINES_LOG_FORMAT='xml': expected one of json, console"):
        structured_logs.configure()


def test_a_step_is_on_a_learner_shard_when_its_partitions_are_the_shard_keys():
    """The learner shards are recognised by their keys (observability/ sits below defs/ and cannot import them)."""
    same_keys = dg.StaticPartitionsDefinition(learner_shards.get_partition_keys())
    assert structured_logs.step_fields("r", "j", "a", same_keys, SHARD)["shard"] == SHARD
    assert "shard" not in structured_logs.step_fields("r", "j", "a", dg.StaticPartitionsDefinition(["x", SHARD]), SHARD)
    assert "shard" not in structured_logs.step_fields("r", "j", "a", dg.DailyPartitionsDefinition("2024-01-01"),
                                                      "2024-03-01")
    assert structured_logs.step_fields("r", "j", "a", None, None) == {"run_id": "r", "job": "j", "asset": "a"}


def test_a_run_of_a_range_of_partitions_is_logged_with_its_range():
    from learning_pipelines.observability.structured_logs import run_partition
    assert run_partition({"dagster/partition": SHARD}) == SHARD
    assert run_partition({"dagster/asset_partition_range_start": "2026-12-09|00-of-04",
                          "dagster/asset_partition_range_end": "2026-12-09|03-of-04"}) == \
        "2026-12-09|00-of-04..2026-12-09|03-of-04"
    assert run_partition({}) is None
