"""Attacks through what one can write: a row of the model registry, a file in the model store, the alert
webhook setting. Each is refused with a clear error, and nothing the attacker planted runs. And what one can
read: the UI shows the variables that hold the warehouse URL and the webhook, never their values."""

import datetime as dt
import io
import json
import os
import pickle
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import torch
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from learning_pipelines.db import tables
from learning_pipelines.db.engine import DATABASE_URL_ENV, get_engine
from learning_pipelines.defs.alerts import run_failure_reporter, short_message
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.recommendations import recommendations
from learning_pipelines.defs.resources import AlertWebhook, LocalModelStore, ModelKeyRefused, Warehouse, resources
from learning_pipelines.observability.alert_webhook import ALERT_WEBHOOK_ENV, checked_webhook_url, post_alert

ROOT = Path(__file__).resolve().parents[2]


class _OpensAFile:
    """Unpickling this calls open(path, "w"): the file appears if a loader ever runs pickled code."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _malicious_checkpoint(marker: Path, fmt: str) -> bytes:
    if fmt == "raw pickle":
        return pickle.dumps(_OpensAFile(marker), protocol=2)
    buffer = io.BytesIO()
    torch.save(_OpensAFile(marker), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["torch zip", "raw pickle"])
def test_the_planted_checkpoint_runs_code_when_fully_unpickled(tmp_path, fmt):
    """The payload the tests below plant is a real exploit: an unrestricted load creates the file."""
    marker = tmp_path / "pwned"
    payload = _malicious_checkpoint(marker, fmt)
    opened = pickle.loads(payload) if fmt == "raw pickle" else torch.load(io.BytesIO(payload), weights_only=False)
    opened.close()
    assert marker.exists()


def _register_model(url: str, checkpoint_uri: str) -> None:
    """A registry row that beats popularity, so `recommendations` serves its checkpoint."""
    with get_engine(url).begin() as conn:
        conn.execute(tables.ncf_models.insert().values(
            trained_at=dt.datetime.now(dt.timezone.utc), checkpoint_uri=checkpoint_uri, n_interactions=10, n_users=2,
            n_items=2, hr_at_10=0.9, ndcg_at_10=0.5, popularity_hr_at_10=0.1, epochs=1, train_seconds=1.0))


def _recommendations_error(url: str, store: LocalModelStore) -> str:
    result = dg.materialize([recommendations], resources={"warehouse": Warehouse(database_url=url),
                                                          "model_store": store},
                            partition_key=learner_shards.get_partition_keys()[0], raise_on_error=False)
    assert not result.success
    return result.failure_data_for_node("recommendations").error.to_string()


@pytest.mark.parametrize("fmt", ["torch zip", "raw pickle"])
def test_recommendations_refuse_a_checkpoint_that_would_run_code(warehouse_url, tmp_path, fmt):
    store = LocalModelStore(base_dir=str(tmp_path / "models"))
    marker = tmp_path / "pwned"
    uri = store.save("ncf/20260101T000000.pt", _malicious_checkpoint(marker, fmt))
    _register_model(warehouse_url, uri)
    error = _recommendations_error(warehouse_url, store)
    assert not marker.exists()
    assert "checkpoint refused: it is not a weights-only checkpoint" in error
    assert "weights_only` set to `False`" not in error, "no advice to load it unrestricted"
    with get_engine(warehouse_url).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.user_recommendations)).scalar_one() == 0


def test_recommendations_refuse_checkpoints_outside_the_store(warehouse_url, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    marker = tmp_path / "pwned"
    planted = outside / "evil.pt"
    planted.write_bytes(_malicious_checkpoint(marker, "torch zip"))
    (root / "linked").symlink_to(outside)
    store = LocalModelStore(base_dir=str(root))
    for key, why in [("../outside/evil.pt", "'..' component"), (planted.as_uri(), "absolute path outside the store"),
                     (str(planted), "absolute path outside the store"), ("linked/evil.pt", "symlink leads out"),
                     ("file://attacker.example/evil.pt", "not a local file URI")]:
        _register_model(warehouse_url, key)
        error = _recommendations_error(warehouse_url, store)
        assert not marker.exists()
        assert f"model store key {key!r} refused: " in error and why in error, error


def test_store_reads_and_writes_only_inside_its_root(tmp_path):
    root = tmp_path / "models"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not a checkpoint")
    store = LocalModelStore(base_dir=str(root))
    uri = store.save("ncf/a b.pt", b"weights")
    assert uri == (root / "ncf" / "a b.pt").resolve().as_uri()
    assert store.load(uri) == store.load("ncf/a b.pt") == store.load(str(root / "ncf" / "a b.pt")) == b"weights"
    (root / "ncf" / "latest.pt").symlink_to(root / "ncf" / "a b.pt")
    assert store.load("ncf/latest.pt") == b"weights", "a symlink that stays inside is followed"
    (root / "elsewhere").symlink_to(outside)
    for key in ["../outside/secret", str(outside / "secret"), (outside / "secret").as_uri(), "elsewhere/secret",
                "ncf/../../outside/secret", "s3://bucket/secret", "", "."]:
        with pytest.raises(ModelKeyRefused, match=f"model store key {key!r} refused"):
            store.load(key)
    for key in ["../outside/new.pt", str(outside / "new.pt"), "elsewhere/new.pt", "elsewhere/deeper/new.pt"]:
        with pytest.raises(ModelKeyRefused, match=f"model store key {key!r} refused"):
            store.save(key, b"weights")
    assert sorted(path.name for path in outside.iterdir()) == ["secret"]


# --- the alert webhook -------------------------------------------------------------------------


@pytest.mark.parametrize("url, scheme", [("file:///etc/passwd", "file:"), ("ftp://files.example/alerts", "ftp:"),
                                         ("data:,hello", "data:"), ("//hooks.example/alerts", "none")])
def test_a_webhook_that_is_not_http_is_refused(url, scheme):
    with pytest.raises(ValueError, match=rf"\$LEARNING_PIPELINES_ALERT_WEBHOOK must be an http:// or https:// URL, "
                                         rf"its scheme is {scheme}$"):
        post_alert(url, {"job": "j"})


def test_a_webhook_is_an_http_url_naming_a_host():
    assert checked_webhook_url("HTTPS://hooks.example/alerts") == "HTTPS://hooks.example/alerts"
    assert checked_webhook_url("") is None
    with pytest.raises(ValueError, match="must name a host"):
        checked_webhook_url("http:///alerts")


@pytest.mark.parametrize("url, refusal", [("file:///etc/passwd", "its scheme is file:"),
                                          ("http:///alerts", "must name a host")])
def test_a_bad_webhook_variable_refuses_the_resources_as_they_load(url, refusal, monkeypatch):
    """The check runs where the definitions load (`resources()`), not when the first failure is posted."""
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, url)
    with pytest.raises(ValueError, match=rf"^\$LEARNING_PIPELINES_ALERT_WEBHOOK .*{refusal}") as refused:
        resources()
    assert url not in str(refused.value)
    monkeypatch.delenv(ALERT_WEBHOOK_ENV)
    assert resources().resources["alert_webhook"].url == "", "unset: no webhook, and the location loads"


def test_a_file_webhook_stops_the_code_location_from_loading(tmp_path):
    target = tmp_path / "alerts.json"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "LEARNING_PIPELINES_ALERT_WEBHOOK": target.as_uri()}
    checked = subprocess.run([str(Path(sys.executable).parent / "dg"), "check", "defs"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode != 0
    assert ("ValueError: $LEARNING_PIPELINES_ALERT_WEBHOOK must be an http:// or https:// URL, its scheme is file:"
            in checked.stdout + checked.stderr)
    assert str(target) not in checked.stdout + checked.stderr, "the URL itself is not echoed"


class _Webhook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.end_headers()
            return
        length = int(self.headers.get("Content-Length", 0))
        _Webhook.received.append((self.command, self.path, json.loads(self.rfile.read(length)) if length else None))
        self.send_response(204)
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = HTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Webhook.received = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_a_webhook_redirect_is_not_followed(webhook):
    assert post_alert(f"{webhook}/moved", {"job": "j"}) == "302"
    assert _Webhook.received == []


LEARNER_ID = 987654321
LEARNER_NOTE = f"learner {LEARNER_ID}: private note"


@dg.asset
def registers_a_learner_twice(warehouse: Warehouse) -> None:
    with warehouse.begin() as conn:
        for _ in range(2):
            conn.execute(tables.users.insert().values(user_id=LEARNER_ID, external_ref=LEARNER_NOTE))


def test_the_alert_carries_no_sql_parameters(warehouse_url, webhook):
    warehouse = Warehouse(database_url=warehouse_url)
    alert_webhook = AlertWebhook(url=f"{webhook}/alerts")
    with dg.instance_for_test() as instance:
        result = dg.materialize([registers_a_learner_twice], instance=instance, resources={"warehouse": warehouse},
                                raise_on_error=False)
        assert not result.success
        raw = result.failure_data_for_node("registers_a_learner_twice").error.to_string()
        assert "[SQL: INSERT INTO users" in raw, "the step's own error names the statement"
        assert LEARNER_NOTE not in raw and "[parameters:" not in raw, "engines hide the parameters (the learner's data)"
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_reporter", dagster_instance=instance, dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
            resources={"warehouse": warehouse, "alert_webhook": alert_webhook}).for_run_failure()
        run_failure_reporter(context)

    [(method, path, posted)] = _Webhook.received
    assert (method, path) == ("POST", "/alerts")
    payload = json.dumps(posted)
    for leaked in (LEARNER_NOTE, str(LEARNER_ID), "[SQL:", "[parameters:", "INSERT INTO", "DETAIL"):
        assert leaked not in payload
    assert set(posted) == {"job", "run_id", "step", "error_class", "message", "failed_at"}
    assert posted["run_id"] == result.run_id and posted["step"] == "registers_a_learner_twice"
    assert posted["error_class"] == "IntegrityError"
    assert "UNIQUE constraint failed" in posted["message"] or "duplicate key value" in posted["message"]
    with get_engine(warehouse_url).connect() as conn:
        stored = conn.execute(sa.select(tables.pipeline_run_failures.c.message)).scalar_one()
    assert stored == posted["message"]


@pytest.mark.parametrize("message, short", [
    ("sqlalchemy.exc.IntegrityError: (psycopg2.errors.UniqueViolation) duplicate key value violates unique "
     "constraint \"users_pkey\"\nDETAIL:  Key (user_id)=(7) already exists.\n\n[SQL: INSERT INTO users (user_id) "
     "VALUES (%(user_id)s)]\n[parameters: {'user_id': 7}]\n(Background on this error at: https://sqlalche.me/e/20/gkpj)",
     "sqlalchemy.exc.IntegrityError: (psycopg2.errors.UniqueViolation) duplicate key value violates unique "
     "constraint \"users_pkey\""),
    ("StatementError: bad value [SQL: SELECT :x] [parameters: [{'x': 'secret'}]]", "StatementError: bad value"),
    ("ValueError: " + "x" * 1000, "ValueError: " + "x" * 288),
    ("", ""),
])
def test_short_message_keeps_the_first_line_without_sql(message, short):
    assert short_message(message) == short


# --- what the UI shows of the deployment's settings ------------------------------------------------------------

WAREHOUSE_PASSWORD = "s3cret-warehouse-password"
WEBHOOK_TOKEN = "s3cret-webhook-token"
RESOURCE_CONFIG_QUERY = """
query ($selector: ResourceSelector!) {
  topLevelResourceDetailsOrError(resourceSelector: $selector) {
    ... on ResourceDetails { configuredValues { key value type } }
  }
}
"""


@pytest.fixture
def deployment_settings(tmp_path, monkeypatch):
    """A deployment's environment: the warehouse URL with its password, the webhook with its token."""
    monkeypatch.setenv(DATABASE_URL_ENV, f"postgresql+psycopg2://lp:{WAREHOUSE_PASSWORD}@warehouse.invalid/warehouse")
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, f"https://hooks.example/alerts?token={WEBHOOK_TOKEN}")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))


@pytest.mark.slow
def test_the_ui_shows_the_variables_never_their_values(deployment_settings):
    """The webserver's GraphQL API (what the UI's resource page reads), over a real code server of workspace.yaml."""
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql, infer_resource_selector

    with dg.instance_for_test() as instance, \
            define_out_of_process_context(str(ROOT / "workspace.yaml"), None, instance) as context:
        shown = {name: execute_dagster_graphql(context, RESOURCE_CONFIG_QUERY,
                                               {"selector": infer_resource_selector(context, name)}).data
                 for name in ("warehouse", "alert_webhook")}
    assert shown == {
        "warehouse": {"topLevelResourceDetailsOrError": {"configuredValues": [
            {"key": "database_url", "value": DATABASE_URL_ENV, "type": "ENV_VAR"}]}},
        "alert_webhook": {"topLevelResourceDetailsOrError": {"configuredValues": [
            {"key": "url", "value": ALERT_WEBHOOK_ENV, "type": "ENV_VAR"}]}},
    }


def test_nothing_the_code_location_hands_the_ui_holds_the_values(deployment_settings):
    """The whole repository snapshot a code server sends the webserver: every job, sensor, resource and config."""
    from learning_pipelines.definitions import defs

    definitions = defs()
    snapshot = serialize_value(RepositorySnap.from_def(definitions.get_repository_def()))
    assert DATABASE_URL_ENV in snapshot and ALERT_WEBHOOK_ENV in snapshot
    assert WAREHOUSE_PASSWORD not in snapshot and WEBHOOK_TOKEN not in snapshot
    # A run resolves them in its own process.
    with dg.build_resources({name: definitions.resources[name] for name in ("warehouse", "alert_webhook")}) as run:
        assert run.warehouse.database_url.endswith(f":{WAREHOUSE_PASSWORD}@warehouse.invalid/warehouse")
        assert run.alert_webhook.url.endswith(f"?token={WEBHOOK_TOKEN}")
