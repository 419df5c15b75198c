"""Sentry, through a transport that keeps envelopes here: one tagged event per failed asset, nothing without a DSN."""

import dagster as dg
import pytest
import sentry_sdk
import sqlalchemy as sa
from sentry_sdk.transport import Transport

from learning_pipelines.db import migrate
from learning_pipelines.defs.fsrs import fsrs_parameters
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.definitions import defs
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
    assert "user" not in event and not sentry_sdk.get_client().should_send_default_pii()


def test_an_error_event_leaves_the_rows_of_a_sql_error_out(transport, monkeypatch):
    monkeypatch.setenv(error_tracking.DSN_ENV, FAKE_DSN)
    error_tracking.init(transport=transport)

    dg.materialize([error_tracking.capture_failures(duplicate_row)], raise_on_error=False)

    [event] = transport.events()
    values = " ".join(exception["value"] for exception in event["exception"]["values"])
    assert "UNIQUE constraint failed" in values
    assert LEARNER_EMAIL not in str(event)
    assert event["tags"]["asset"] == "duplicate_row" and "shard" not in event["tags"]


def test_without_a_dsn_nothing_starts_and_nothing_is_sent(transport, monkeypatch):
    monkeypatch.delenv(error_tracking.DSN_ENV, raising=False)

    assert not error_tracking.init(transport=transport)
    dg.materialize([error_tracking.capture_failures(duplicate_row)], raise_on_error=False)

    assert not sentry_sdk.get_client().is_active()
    assert transport.envelopes == []


def test_every_asset_of_the_code_location_reports_its_failures():
    assets = [a for a in defs().resolve_asset_graph().assets_defs if a.keys]  # not the separate checks
    assert assets and all(any(hook.name.startswith("sentry_") for hook in a.hook_defs) for a in assets)
