"""The dashboard and alert rules checked against what the exporter exports (metric and label names), the
exporter scraped over HTTP after real runs, the failure sensor, and run monitoring. Prometheus itself (promtool's
rule tests and a real server) is in test_prometheus_server.py."""

import datetime as dt
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

from learning_pipelines.cli import main
from learning_pipelines.db import migrate, tables
from learning_pipelines.db.engine import get_engine
from learning_pipelines.definitions import defs as load_defs
from learning_pipelines.defs.alerts import run_failure_reporter
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.demo import load_platform
from learning_pipelines.domain.simulate import simulate_platform
from learning_pipelines.observability.alert_webhook import ALERT_WEBHOOK_ENV
from learning_pipelines.observability.exporter import build_registry, code_location_jobs

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
# Prometheus sets these on every series it scrapes; an exporter's own `job` would be stored as `exported_job`.
PROMETHEUS_TARGET_LABELS = {"job", "instance"}
OUTCOMES = ("success", "failure", "canceled")
PROMQL_WORDS = {"sum", "by", "on", "and", "or", "unless", "offset", "without", "ignoring", "group_left", "group_right",
                "bool", "max", "min", "avg", "count", "le", "inf", "nan"}


def _metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]?", n)}


def _label_names(expr: str, legend: str = "") -> set[str]:
    """The label names an expression matches, groups or joins on, and those its legend shows."""
    names = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        names |= set(re.findall(r"\w+", group))
    for matchers in re.findall(r"\{([^}]*)\}", re.sub(r'"[^"]*"', '""', expr)):
        names |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    return names


def _dashboard() -> dict:
    return json.loads((MONITORING / "grafana" / "dashboards" / "learning_pipelines.json").read_text())


def _query_panels(dashboard: dict) -> list[dict]:
    """The panels that query Prometheus: all but the rows (headers that group the panels below them)."""
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def _exported_sample_names(registry) -> set[str]:
    names = set()
    for family in registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                    "gaugehistogram": ["_bucket", "_gsum", "_gcount"]}.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_dashboard_and_alerts_use_only_exported_metrics(tmp_path, empty_sqlite_url):
    migrate.upgrade(empty_sqlite_url)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        exported = _exported_sample_names(build_registry(instance, get_engine(empty_sqlite_url)))
    exported.add("up")  # written by Prometheus itself for every scrape target
    dashboard = _dashboard()
    datasource_uid = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
                                    .read_text())["datasources"][0]["uid"]
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    expressions = []
    for panel in _query_panels(dashboard):
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
    dashboard_names = set().union(*(_metric_names(t["expr"]) for p in _query_panels(dashboard) for t in p["targets"]))
    families = {n.removesuffix("_bucket").removesuffix("_total") for n in dashboard_names}
    missing = {n for n in exported if re.sub(r"_(g?sum|g?count|bucket|total)$", "", n) not in families and n != "up"}
    assert not missing, f"exported but on no panel: {sorted(missing)}"
    scrape_config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert scrape_config["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9464"]


def test_only_up_is_matched_grouped_or_shown_by_the_labels_prometheus_sets():
    """Prometheus owns `job` and `instance`: a panel or rule that reads our series by them would see the scrape
    job, not the Dagster job (which the exporter labels `dagster_job`)."""
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"][0]["rules"]
    queries = [(f"panel {p['title']!r}", t["expr"], t.get("legendFormat", "")) for p in _query_panels(_dashboard())
               for t in p["targets"]]
    queries += [(f"alert {rule['alert']}", rule["expr"], "") for rule in rules]
    for where, expr, legend in queries:
        if _metric_names(expr) != {"up"}:
            assert not _label_names(expr, legend) & PROMETHEUS_TARGET_LABELS, f"{where}: {expr} / {legend}"
    per_job = [where for where, expr, legend in queries if "dagster_job" in _label_names(expr, legend)]
    assert len(per_job) >= 4, per_job  # queue, failures, outcomes, last success by job; the FSRS alert


def test_quantile_panels_read_no_data_yet_instead_of_nan():
    """histogram_quantile of a window without new observations (or of a gauge histogram of no builds) is NaN;
    guarded, the panel is empty and says so."""
    quantile_panels = [p for p in _query_panels(_dashboard())
                       if any("histogram_quantile" in t["expr"] for t in p["targets"])]
    assert len(quantile_panels) == 3  # FSRS optimization and CDC durations, window builds' cutoff to ready
    for panel in quantile_panels:
        assert panel["fieldConfig"]["defaults"].get("noValue") == "no data yet", panel["title"]
        for target in panel["targets"]:
            over_time = re.search(r"\((\w+)_bucket\[(\w+)\]", target["expr"])  # a histogram's observations in a range
            as_is = re.search(r"\((\w+)_bucket\)", target["expr"])  # a gauge histogram's, as they are
            guard = (f"and on() sum(increase({over_time[1]}_count[{over_time[2]}])) > 0" if over_time else
                     f"and on() sum({as_is[1]}_gcount) > 0")
            assert target["expr"].endswith(guard), (panel["title"], target["expr"])


# The admin views' rows (issue #32): what each row's panels must show, by metric.
ROWS = {
    "Queues": {"revision_queue_due", "revision_queue_theme_due", "revision_queue_last_build_ready_timestamp_seconds",
               "revision_queue_last_build_late", "revision_queue_learners_without_todays_queue"},
    "Evaluation": {"fsrs_shadow_logloss", "fsrs_shadow_brier", "fsrs_shadow_ece", "fsrs_shadow_rmse_bins"},
    "Tag quality": {"tag_quality_debt_last_7_days", "tag_quality_debt_by_theme_last_7_days",
                    "revision_queue_due_last_7_days", "tag_quality_debt_alert_share"},
}


def test_the_dashboard_has_the_queues_evaluation_and_tag_quality_rows():
    """Grafana puts a panel in the row above it (by gridPos.y); no two panels overlap, so each is where it is read."""
    panels = sorted(_dashboard()["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    rows = [p for p in panels if p["type"] == "row"]
    assert [row["title"] for row in rows] == list(ROWS)
    assert all(row["gridPos"]["w"] == 24 and not row["collapsed"] and not row["panels"] for row in rows)
    in_row: dict[str, set[str]] = {}
    current = None
    for panel in panels:
        if panel["type"] == "row":
            current = panel["title"]
        elif current:
            in_row.setdefault(current, set()).update(*(_metric_names(t["expr"]) for t in panel["targets"]))
    for title, metrics in ROWS.items():
        assert metrics <= in_row[title], f"row {title!r} lacks {sorted(metrics - in_row[title])}"
    cells = [(x, y) for p in panels for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
             for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])]
    assert len(cells) == len(set(cells)) and all(x < 24 for x, _ in cells), "panels overlap or leave the grid"


def test_every_known_job_and_outcome_is_exported_from_the_first_scrape_at_zero(tmp_path, empty_sqlite_url):
    """increase() counts a failure only if Prometheus scraped the counter at 0 before it (so "at least 3
    failures" fires at the third); an idle run queue is 0, not a missing series."""
    migrate.upgrade(empty_sqlite_url)
    jobs = ["fsrs_optimization_job", "revision_queues_job"]
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        values = _scrape(build_registry(instance, get_engine(empty_sqlite_url), job_names=jobs))
    for job in jobs:
        assert values[("dagster_run_queue_size", (("dagster_job", job),))] == 0
        assert values[("jobs_failed_total", (("dagster_job", job),))] == 0
        for status in OUTCOMES:
            assert values[("dagster_runs_finished_total", (("dagster_job", job), ("status", status)))] == 0
    per_job = [key for key in values if key[0] in ("dagster_run_queue_size", "jobs_failed_total",
                                                   "dagster_runs_finished_total")]
    assert len(per_job) == len(jobs) * (2 + len(OUTCOMES))
    # No success yet, so no time to report: the alerts on it guard with absent().
    assert not any(name == "learning_pipelines_last_success_timestamp_seconds" for name, _ in values)


def test_metrics_cli_exports_every_job_of_the_code_location(tmp_path, empty_sqlite_url, monkeypatch, capsys):
    migrate.upgrade(empty_sqlite_url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    assert main(["metrics", "--once", "--database-url", empty_sqlite_url]) == 0

    samples = [s for family in text_string_to_metric_families(capsys.readouterr().out) for s in family.samples]
    failed = {s.labels["dagster_job"]: s.value for s in samples if s.name == "jobs_failed_total"}
    queued = {s.labels["dagster_job"]: s.value for s in samples if s.name == "dagster_run_queue_size"}
    jobs = {job.name for job in load_defs().get_repository_def().get_all_jobs()} - {"__ASSET_JOB"}
    assert "fsrs_optimization_job" in jobs and "revision_queues_job" in jobs
    assert failed == queued == dict.fromkeys(jobs, 0.0)


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


def _queue_shard(day: str) -> dg.MultiPartitionKey:
    """The first learner shard of revision_queues on `day`."""
    return dg.MultiPartitionKey({"day": day, "shard": learner_shards.get_partition_keys()[0]})


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
        instance=instance, resources=broken, partition_key=_queue_shard("2026-03-10"), raise_on_error=False)
    assert not failed.success

    jobs = code_location_jobs(repository)
    registry = build_registry(instance, engine, job_names=jobs)
    values = _scrape(registry)
    assert values[("jobs_failed_total", (("dagster_job", "revision_queues_job"),))] == 1
    assert values[("dagster_runs_finished_total", (("dagster_job", "fsrs_optimization_job"), ("status", "success")))] \
        == len(shards)
    never_ran = ("dagster_runs_finished_total", (("dagster_job", "ncf_job"), ("status", "failure")))
    assert values[never_ran] == 0
    assert not any(PROMETHEUS_TARGET_LABELS & dict(labels).keys() for _, labels in values)
    assert values[("fsrs_optimization_jobs_processed_total", ())] == len(shards)  # one run per learner shard
    assert values[("fsrs_optimization_job_duration_seconds_count", ())] == len(shards)
    records = [instance.get_run_record_by_id(ok.run_id) for ok in oks]
    assert values[("fsrs_optimization_job_duration_seconds_sum", ())] == pytest.approx(
        sum(r.end_time - r.start_time for r in records))
    assert all(values[("dagster_run_queue_size", (("dagster_job", job),))] == 0 for job in jobs), "nothing queued"
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
        instance=instance, resources=broken, partition_key=_queue_shard("2026-03-11"), raise_on_error=False)
    later = _scrape(registry)
    assert later[("jobs_failed_total", (("dagster_job", "revision_queues_job"),))] == 2
    assert later[("fsrs_optimization_jobs_processed_total", ())] == len(shards)
    restarted = _scrape(build_registry(instance, engine, job_names=jobs))
    assert {k: v for k, v in restarted.items() if k[0].endswith("_total")} == \
        {k: v for k, v in later.items() if k[0].endswith("_total")}


class _Webhook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
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
    # The code location's `alert_webhook` is dg.EnvVar("LEARNING_PIPELINES_ALERT_WEBHOOK"), resolved by the sensor.
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, f"http://127.0.0.1:{server.server_port}/alerts")
    _Webhook.received = []
    definitions = load_defs()
    repository = definitions.get_repository_def()
    broken = {"warehouse": Warehouse(database_url=f"sqlite:///{tmp_path / 'never_migrated.db'}")}
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()  # a day it may build: it reaches the warehouse
    result = repository.get_job("revision_queues_job").execute_in_process(
        instance=instance, resources=broken, partition_key=_queue_shard(today), raise_on_error=False)
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_reporter", dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"warehouse": Warehouse(database_url=empty_sqlite_url),
                   "alert_webhook": definitions.resources["alert_webhook"]},
    ).for_run_failure()
    run_failure_reporter(context)
    server.shutdown()

    assert len(_Webhook.received) == 1
    posted = _Webhook.received[0]
    assert posted["job"] == "revision_queues_job" and posted["run_id"] == result.run_id
    assert posted["step"] == "revision_queues" and posted["error_class"] == "OperationalError"
    with get_engine(empty_sqlite_url).connect() as conn:
        row = conn.execute(sa.select(tables.pipeline_run_failures)).one()
    assert (row.run_id, row.job_name, row.step_key, row.error_class, row.webhook_status) == (
        result.run_id, "revision_queues_job", "revision_queues", "OperationalError", "204")


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
        "relative_path": str(Path(__file__).parents[1] / "support" / "hung_job.py"), "location_name": "hung"}}]}))
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)  # create the storage now: daemon and CLI creating it at once race
    bin_dir = Path(sys.executable).parent
    with open(tmp_path / "daemon.log", "w") as output:  # the daemon writes to its own copy of the file
        daemon = subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)], env=env,
                                  stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
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
