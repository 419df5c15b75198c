"""Sentry, through a transport that keeps envelopes here: one tagged event per failed asset, nothing without a DSN."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sentry_sdk
import sqlalchemy as sa
from sentry_sdk.transport import Transport

from learning_pipelines.db import migrate
from learning_pipelines.definitions import defs
from learning_pipelines.defs.fsrs import fsrs_parameters
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.observability import error_tracking

FAKE_DSN = "https://public@example.invalid/1"
LEARNER_EMAIL = "ada@example.com"  # a learner's row in a failed statement's parameters
SHARD = learner_shards.get_partition_keys()[2]


class KeptEnvelopes(Transport):
    def __init__(self, options=None):
        super().__init__(options)
        self.envelopes = []

    def capture_envelope(self, envelope) -> None:
        self.envelopes.append(envelope)

    def events(self) -> list[dict]:
        return [item.get_event() for envelope in self.envelopes for item in envelope.items if item.type == "event"]

    def item_types(self) -> set[str]:
        return {item.type for envelope in self.envelopes for item in envelope.items}


@pytest.fixture
def transport(monkeypatch):
    kept = KeptEnvelopes()
    yield kept
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)  # inactive again for the tests that follow


@dg.asset
def duplicate_row() -> None:
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE learners (email TEXT PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO learners VALUES (:email), (:email)"), {"email": LEARNER_EMAIL})


def test_a_failed_shard_step_sends_one_event_tagged_like_its_logs(transport, monkeypatch, empty_sqlite_url):
    monkeypatch.setenv(error_tracking.DSN_ENV, FAKE_DSN)
    assert error_tracking.init(transport=transport)
    migrate.upgrade(empty_sqlite_url)  # no global weights yet: the shard's fit refuses to start

    result = dg.materialize([error_tracking.capture_failures(fsrs_parameters)], partition_key=SHARD,
                            resources={"warehouse": Warehouse(database_url=empty_sqlite_url)}, raise_on_error=False)

    assert not result.success
    [event] = transport.events()
    assert event["level"] == "error"
    assert event["exception"]["values"][-1]["type"] == "Failure"
    assert event["tags"] == {"run_id": result.run_id, "job": "__ephemeral_asset_job__", "asset": "fsrs_parameters",
                             "partition": SHARD, "shard": SHARD}
    assert "user" not in event


def test_an_error_event_leaves_the_rows_of_a_sql_error_out(transport, monkeypatch):
    monkeypatch.setenv(error_tracking.DSN_ENV, FAKE_DSN)
    error_tracking.init(transport=transport)

    dg.materialize([error_tracking.capture_failures(duplicate_row)], raise_on_error=False)

    [event] = transport.events()
    values = " ".join(exception["value"] for exception in event["exception"]["values"])
    assert "UNIQUE constraint failed" in values
    assert LEARNER_EMAIL not in str(event)
    assert event["tags"]["asset"] == "duplicate_row" and "shard" not in event["tags"]


@dg.asset
def logs_then_fails(context: dg.AssetExecutionContext) -> None:
    learner_row = {"email": LEARNER_EMAIL}  # a frame variable that must not be sent
    context.log.info(f"reading {learner_row}")
    context.log.warning(f"odd row {learner_row}")
    logging.getLogger("learning_pipelines").warning("odd row %s", learner_row)
    raise ValueError("the step failed")


def test_log_lines_of_a_failed_step_are_no_breadcrumb_log_or_event_and_no_frame_variable_is_sent(
        transport, monkeypatch):
    monkeypatch.setenv(error_tracking.DSN_ENV, FAKE_DSN)
    assert error_tracking.init(transport=transport)

    dg.materialize([error_tracking.capture_failures(logs_then_fails)], raise_on_error=False)
    sentry_sdk.flush()

    [event] = transport.events()
    assert transport.item_types() <= {"event", "client_report"}  # no "log" item, no other telemetry
    assert not event.get("breadcrumbs", {}).get("values")
    frames = [frame for exception in event["exception"]["values"]
              for frame in (exception.get("stacktrace") or {}).get("frames", [])]
    assert frames and not any(frame.get("vars") for frame in frames)
    assert LEARNER_EMAIL not in str(event) and "user" not in event


@pytest.mark.parametrize("dsn", ["not a dsn", "ftp://public@example.invalid/1", "https://example.invalid/1"])
def test_a_dsn_sentry_refuses_is_one_warning_line_and_the_command_runs_without_it(transport, monkeypatch, capsys,
                                                                                  dsn):
    monkeypatch.setenv(error_tracking.DSN_ENV, dsn)

    assert not error_tracking.init()  # the DSN is read by the SDK's own HTTP transport

    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: error tracking is off") and dsn not in line
    assert not sentry_sdk.get_client().is_active()


def test_an_option_this_sdk_does_not_know_is_one_warning_line(transport, monkeypatch, capsys):
    # What sentry-sdk 3 did to 2.x's include_local_variables: an option removed under us never stops a command.
    options = error_tracking._no_personal_data_options()
    monkeypatch.setattr(error_tracking, "_no_personal_data_options", lambda: {**options, "no_such_option": True})
    monkeypatch.setenv(error_tracking.DSN_ENV, FAKE_DSN)

    assert not error_tracking.init(transport=transport)

    [line] = capsys.readouterr().err.splitlines()
    assert "no_such_option" in line and FAKE_DSN not in line


def test_a_command_runs_when_sentry_refuses_its_settings():
    env = {**os.environ, error_tracking.DSN_ENV: "https://example.invalid/1"}  # no public key: refused
    done = subprocess.run([str(Path(sys.executable).with_name("learning-pipelines")), "fsrs", "--help"], env=env,
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 0 and "usage:" in done.stdout
    assert done.stderr.count("\n") == 1 and "error tracking is off" in done.stderr


def test_without_a_dsn_nothing_starts_and_nothing_is_sent(transport, monkeypatch):
    monkeypatch.delenv(error_tracking.DSN_ENV, raising=False)

    assert not error_tracking.init(transport=transport)
    dg.materialize([error_tracking.capture_failures(duplicate_row)], raise_on_error=False)

    assert not sentry_sdk.get_client().is_active()
    assert transport.envelopes == []


def test_every_asset_of_the_code_location_reports_its_failures():
    # Not the separate checks, nor the app's external assets (nothing runs for them).
    assets = [a for a in defs().resolve_asset_graph().assets_defs if a.keys and a.is_executable]
    assert assets and all(any(hook.name.startswith("sentry_") for hook in a.hook_defs) for a in assets)
