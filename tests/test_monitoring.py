"""Alert rules proven with promtool, the dashboard checked against what the exporter exports,
the exporter scraped over HTTP after real runs, the failure sensor, and run monitoring."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from learning_pipelines import settings
from learning_pipelines.db import migrate, tables
from learning_pipelines.db.engine import get_engine
from learning_pipelines.definitions import defs as load_defs
from learning_pipelines.defs.alerts import run_failure_reporter
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.demo import load_platform
from learning_pipelines.domain.simulate import simulate_platform
from learning_pipelines.observability.exporter import build_registry

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "monitoring"
PROMQL_WORDS = {"sum", "by", "on", "and", "or", "unless", "offset", "without", "ignoring", "group_left", "group_right",
                "bool", "max", "min", "avg", "count", "le", "inf", "nan"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not installed (Debian package `prometheus`; `make test` installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.mark.slow
def test_alert_rules_fire_on_failure_and_stay_quiet_when_healthy():
    promtool = _promtool()
    checked = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=MONITORING, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=MONITORING, capture_output=True,
                            text=True, timeout=300)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"][0]["rules"]
    cases = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
    for rule in rules:
        expectations = [t["exp_alerts"] for case in cases for t in case["alert_rule_test"] if t["alertname"] == rule["alert"]]
        assert any(expectations) and any(not e for e in expectations), f"{rule['alert']} needs a firing and a quiet case"


def _metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]?", n)}


def _exported_sample_names(registry) -> set[str]:
    names = set()
    for family in registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_dashboard_and_alerts_use_only_exported_metrics(tmp_path, empty_sqlite_url):
    migrate.upgrade(empty_sqlite_url)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        exported = _exported_sample_names(build_registry(instance, get_engine(empty_sqlite_url)))
    exported.add("up")  # written by Prometheus itself for every scrape target
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "learning_pipelines.json").read_text())
    datasource_uid = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
                                    .read_text())["datasources"][0]["uid"]
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    expressions = []
    for panel in dashboard["panels"]:
        assert panel["title"] and set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["datasource"]["uid"] == datasource_uid
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"] and target["expr"]
            expressions.append(target["expr"])
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"][0]["rules"]
    expressions += [rule["expr"] for rule in rules]
    used = set().union(*(_metric_names(e) for e in expressions))
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    # and every exported family shows on the dashboard
    dashboard_names = set().union(*(_metric_names(t["expr"]) for p in dashboard["panels"] for t in p["targets"]))
    families = {n.removesuffix("_bucket").removesuffix("_total") for n in dashboard_names}
    missing = {n for n in exported if n.removesuffix("_sum").removesuffix("_count").removesuffix("_bucket")
               .removesuffix("_total") not in families and n != "up"}
    assert not missing, f"exported but on no panel: {sorted(missing)}"
    scrape_config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert scrape_config["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9464"]


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def _scrape(registry) -> dict:
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=30).read().decode()
    finally:
        server.shutdown()
        thread.join(5)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def test_exporter_after_a_successful_and_a_failed_run(instance, empty_sqlite_url, tmp_path):
    migrate.upgrade(empty_sqlite_url)
    engine = get_engine(empty_sqlite_url)
    load_platform(engine, simulate_platform(n_learners=30, n_concepts=60, n_resources=10, days=120, seed=2))
    repository = load_defs().get_repository_def()
    good = {"warehouse": Warehouse(database_url=empty_sqlite_url)}
    assert repository.get_job("fsrs_global_job").execute_in_process(instance=instance, resources=good).success
    shards = repository.get_job("fsrs_optimization_job").partitions_def.get_partition_keys()
    oks = [repository.get_job("fsrs_optimization_job").execute_in_process(instance=instance, resources=good,
                                                                          partition_key=shard) for shard in shards]
    assert all(ok.success for ok in oks)
    broken = {"warehouse": Warehouse(database_url=f"sqlite:///{tmp_path / 'never_migrated.db'}")}
    failed = repository.get_job("revision_queues_job").execute_in_process(
        instance=instance, resources=broken, partition_key="2026-03-10", raise_on_error=False)
    assert not failed.success

    registry = build_registry(instance, engine)
    values = _scrape(registry)
    assert values[("jobs_failed_total", (("job", "revision_queues_job"),))] == 1
    assert values[("dagster_runs_finished_total", (("job", "fsrs_optimization_job"), ("status", "success")))] == len(shards)
    assert values[("fsrs_optimization_jobs_processed_total", ())] == len(shards)  # one run per learner shard
    assert values[("fsrs_optimization_job_duration_seconds_count", ())] == len(shards)
    records = [instance.get_run_record_by_id(ok.run_id) for ok in oks]
    assert values[("fsrs_optimization_job_duration_seconds_sum", ())] == pytest.approx(
        sum(r.end_time - r.start_time for r in records))
    assert not any(name == "dagster_run_queue_size" for name, _ in values), "nothing queued or running"
    with engine.connect() as conn:
        optimized = conn.execute(sa.text("SELECT count(*) FROM srs_user_params WHERE weights IS NOT NULL")).scalar()
        reviews = conn.execute(sa.text("SELECT count(*) FROM review_logs")).scalar()
    assert values[("fsrs_learners_optimized", ())] == optimized > 0
    assert values[("review_logs_rows", ())] == reviews
    assert values[("learning_pipelines_warehouse_up", ())] == 1
    stamp = values[("dagster_asset_last_materialization_timestamp_seconds", (("asset", "fsrs_parameters"),))]
    assert abs(stamp - time.time()) < 600
    # A later scrape counts only the runs finished since; a restarted exporter reads the same totals back.
    repository.get_job("revision_queues_job").execute_in_process(
        instance=instance, resources=broken, partition_key="2026-03-11", raise_on_error=False)
    later = _scrape(registry)
    assert later[("jobs_failed_total", (("job", "revision_queues_job"),))] == 2
    assert later[("fsrs_optimization_jobs_processed_total", ())] == len(shards)
    restarted = _scrape(build_registry(instance, engine))
    assert {k: v for k, v in restarted.items() if k[0].endswith("_total")} == \
        {k: v for k, v in later.items() if k[0].endswith("_total")}


class _Webhook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        length = int(self.headers["Content-Length"])
        _Webhook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_failure_sensor_records_the_run_and_posts_to_the_webhook(instance, empty_sqlite_url, tmp_path, monkeypatch):
    migrate.upgrade(empty_sqlite_url)
    server = HTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # settings reads $LEARNING_PIPELINES_ALERT_WEBHOOK when the code location loads
    monkeypatch.setattr(settings, "ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/alerts")
    _Webhook.received = []
    repository = load_defs().get_repository_def()
    broken = {"warehouse": Warehouse(database_url=f"sqlite:///{tmp_path / 'never_migrated.db'}")}
    result = repository.get_job("revision_queues_job").execute_in_process(
        instance=instance, resources=broken, partition_key="2026-03-10", raise_on_error=False)
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_reporter", dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"warehouse": Warehouse(database_url=empty_sqlite_url)},
    ).for_run_failure()
    run_failure_reporter(context)
    server.shutdown()

    assert len(_Webhook.received) == 1
    posted = _Webhook.received[0]
    assert posted["job"] == "revision_queues_job" and posted["run_id"] == result.run_id
    # The job brings the memory states up to date first: that step meets the unmigrated warehouse.
    assert posted["step"] == "card_memory_states" and posted["error_class"] == "OperationalError"
    with get_engine(empty_sqlite_url).connect() as conn:
        row = conn.execute(sa.select(tables.pipeline_run_failures)).one()
    assert (row.run_id, row.job_name, row.step_key, row.error_class, row.webhook_status) == (
        result.run_id, "revision_queues_job", "card_memory_states", "OperationalError", "204")


@pytest.mark.slow
def test_run_monitoring_fails_a_run_past_its_max_runtime(tmp_path):
    """A real daemon with run monitoring launches a hung run and fails it once past dagster/max_runtime."""
    home = tmp_path / "home"
    home.mkdir()
    config = yaml.safe_load((ROOT / "dagster_home" / "dagster.yaml").read_text())
    config["run_monitoring"]["poll_interval_seconds"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_file": {
        "relative_path": str(Path(__file__).parent / "hung_job.py"), "location_name": "hung"}}]}))
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)  # create the storage now: daemon and CLI creating it at once race
    bin_dir = Path(sys.executable).parent
    daemon = subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)], env=env,
                              stdout=open(tmp_path / "daemon.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        launched = subprocess.run([str(bin_dir / "dagster"), "job", "launch", "-w", str(workspace), "-j", "hung_job"],
                                  env=env, capture_output=True, text=True, timeout=180)
        assert launched.returncode == 0, launched.stdout + launched.stderr
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline = time.time() + 240
            statuses = []
            while time.time() < deadline:
                run = instance.get_runs(limit=1)[0]
                statuses.append(run.status)
                if run.status == dg.DagsterRunStatus.FAILURE:
                    break
                time.sleep(1)
            log_tail = (tmp_path / "daemon.log").read_text()[-3000:]
            assert run.status == dg.DagsterRunStatus.FAILURE, (statuses[-5:], log_tail)
            assert dg.DagsterRunStatus.STARTED in statuses, "the run really started before it was stopped"
            messages = [e.message or "" for e in instance.all_logs(run.run_id)]
            assert any("maximum runtime of 3 seconds" in m for m in messages), messages[-10:]
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)  # dagster-daemon ignores SIGTERM
        daemon.wait(10)
