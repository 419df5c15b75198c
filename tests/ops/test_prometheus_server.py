"""Prometheus itself reads what we ship: promtool's unit tests of monitoring/alerts.yml, and a real Prometheus
scraping `learning-pipelines metrics` over a freshly materialized instance, asked through its HTTP API whether
the lateness alert fires while a rollover window's build is missing, whether the alerts stay quiet when healthy,
whether the failure-rate alert notices failures, and whether every dashboard query answers with the labels its
legend shows."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from prometheus_client.parser import text_string_to_metric_families

from learning_pipelines import settings
from learning_pipelines.db import migrate
from learning_pipelines.db.engine import get_engine
from learning_pipelines.definitions import defs as load_defs
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.demo import load_platform
from learning_pipelines.domain.learner_shards import shard_keys
from learning_pipelines.domain.simulate import simulate_platform
from learning_pipelines.observability.exporter import code_location_jobs
from tests.conftest import _skip_or_fail
from tests.support.admin_figures import ADMIN_SERIES, expected_series
from tests.support.queue_windows import BUILD_KEY, built_keys, current_builds, write_builds
from tests.support.running_stack import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "learning_pipelines.json"
CLI = str(Path(sys.executable).parent / "learning-pipelines")
# One healthy run of each (every shard of a sharded job, the latest partition of a dated one), upstream first:
# afterwards every panel but the "no data yet" ones has something to plot.
HEALTHY_JOBS = ("review_logs_job", "fsrs_global_job", "fsrs_optimization_job", "card_memory_states_job",
                "revision_queues_job", "fsrs_shadow_evaluation_job", "concept_complexity_job", "ncf_job")
NO_DATA_YET = "no data yet"  # the noValue of a panel that is empty until something happens in its window
WAIT_SECONDS = 90  # the longest any condition below is waited for; with 2 s scrapes each takes a few seconds
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
LATE_AFTER = dt.timedelta(minutes=30)  # RevisionQueueLate's threshold
# The window left unbuilt: its rollover well past LATE_AFTER, its learners' next rollover (when they would get a new
# day, and the gauge would follow it) far beyond the end of the test.
STOPPED_ROLLOVER_AGE, STOPPED_NEXT_ROLLOVER_IN = dt.timedelta(minutes=40), dt.timedelta(minutes=20)


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _skip_or_fail(f"{name} not installed (Debian package `prometheus`; `make test` installs it)")
    return path


def test_alert_rules_fire_on_failure_and_stay_quiet_when_healthy():
    promtool = _binary("promtool")
    checked = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=MONITORING, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=MONITORING, capture_output=True,
                            text=True, timeout=300)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"][0]["rules"]
    cases = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
    for rule in rules:
        expectations = [t["exp_alerts"] for case in cases for t in case["alert_rule_test"]
                        if t["alertname"] == rule["alert"]]
        assert any(expectations) and any(not e for e in expectations), f"{rule['alert']} needs a firing and a quiet case"
    # Every input series carries what a real Prometheus stores: the scrape job and instance, then ours.
    series = [s["series"] for case in cases for s in case["input_series"]]
    assert all('job="learning_pipelines",instance="127.0.0.1:9464"' in s for s in series)


def _run(job: dg.JobDefinition, instance: dg.DagsterInstance, warehouse: Warehouse,
         partition_key: str | None = None) -> dg.ExecuteInProcessResult:
    return job.execute_in_process(instance=instance, resources={"warehouse": warehouse}, partition_key=partition_key,
                                  raise_on_error=False)


def _materialize_healthy(repository: dg.RepositoryDefinition, instance: dg.DagsterInstance, warehouse: Warehouse):
    for name in HEALTHY_JOBS:
        job = repository.get_job(name)
        if job.partitions_def is None:
            keys = [None]
        elif isinstance(job.partitions_def, dg.StaticPartitionsDefinition):
            keys = job.partitions_def.get_partition_keys()
        elif isinstance(job.partitions_def, dg.MultiPartitionsDefinition):  # every learner shard of the latest day
            last_day = job.partitions_def.get_last_partition_key().keys_by_dimension["day"]
            keys = [key for key in job.partitions_def.get_partition_keys()
                    if key.keys_by_dimension["day"] == last_day]
        else:
            keys = [job.partitions_def.get_last_partition_key()]
        for key in keys:
            assert _run(job, instance, warehouse, key).success, f"{name} [{key}]"


def _get(base: str, path: str, **params) -> dict:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def _query(base: str, expr: str) -> list[dict]:
    data = _get(base, "/api/v1/query", query=expr)
    assert data["resultType"] == "vector", (expr, data)
    return data["result"]


def _alerts(base: str) -> list[dict]:
    """Pending and firing alerts."""
    return _get(base, "/api/v1/alerts")["alerts"]


def _rule_evaluations(base: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        families = text_string_to_metric_families(response.read().decode())
        return sum(s.value for f in families if f.name == "prometheus_rule_group_iterations" for s in f.samples)


def _wait_for(condition: Callable[[], object], what: str) -> object:
    deadline = time.monotonic() + WAIT_SECONDS
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_SECONDS} s for {what}")
        time.sleep(0.25)
    return value


def _settle(base: str) -> None:
    """Until the exporter was scraped three times and the rules evaluated twice since (so increase() has two
    samples of everything and no alert is judged on the empty database Prometheus started with)."""
    _wait_for(lambda: _query(base, 'count_over_time(up{job="learning_pipelines"}[1m]) >= 3'), "three scrapes")
    evaluated = _rule_evaluations(base)
    _wait_for(lambda: _rule_evaluations(base) >= evaluated + 2, "two rule evaluations after the scrapes")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextlib.contextmanager
def _prometheus_over(home: Path, database_url: str, tmp_path: Path) -> Iterator[str]:
    """`learning-pipelines metrics` on a free port, and a Prometheus configured as monitoring/prometheus.yml but
    scraping that port every 2 seconds, with its own storage; its base URL. Both stopped afterwards."""
    prometheus_binary = _binary("prometheus")
    processes = []
    try:
        log = tmp_path / "exporter.log"
        with open(log, "w") as output:  # the exporter writes to its own copy of the file
            exporter = subprocess.Popen([CLI, "metrics", "--port", "0", "--database-url", database_url],
                                        env={**os.environ, "DAGSTER_HOME": str(home)},
                                        stdout=output, stderr=subprocess.STDOUT)
        processes.append(exporter)

        def serving() -> re.Match | None:
            assert exporter.poll() is None, log.read_text()[-3000:]
            return re.search(r"serving Prometheus metrics on http://127\.0\.0\.1:(\d+)/metrics", log.read_text())

        exporter_port = _wait_for(serving, "the exporter to listen")[1]
        config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
        # A scrape may not take longer than the interval; on a busy machine one takes over a second.
        config["global"].update(scrape_interval="2s", evaluation_interval="1s")
        assert config["rule_files"] == ["alerts.yml"]
        config["rule_files"] = [str(MONITORING / "alerts.yml")]
        (scrape,) = config["scrape_configs"]
        scrape["static_configs"] = [{"targets": [f"127.0.0.1:{exporter_port}"]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        with open(tmp_path / "prometheus.log", "w") as prometheus_log:  # the server writes to its own copy
            prometheus = subprocess.Popen(
                [prometheus_binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp_path / 'prometheus_data'}", f"--web.listen-address=127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL, stderr=prometheus_log)
        processes.append(prometheus)
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                return urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200
            except OSError:
                return False

        _wait_for(ready, "Prometheus to be ready")
        yield base
    finally:
        for process in processes:
            _stop(process)


def _check_dashboard(base: str, may_be_empty: Callable[[dict], bool]) -> None:
    """Every target of every panel: data (unless the panel may be empty), never NaN, and every label its legend
    shows present and telling the series apart."""
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):  # a row only groups the panels below it
            where = f"panel {panel['title']!r} {target['refId']}: {target['expr']}"
            series = _query(base, target["expr"])
            assert series or may_be_empty(panel), f"no data: {where}"
            assert not [s for s in series if s["value"][1] == "NaN"], f"NaN: {where}"
            legend = target.get("legendFormat", "")
            shown = set(LEGEND_LABEL.findall(legend))
            for s in series:
                assert shown <= s["metric"].keys(), f"{where}: {s['metric']} lacks {shown - s['metric'].keys()}"
            legends = [LEGEND_LABEL.sub(lambda m, s=s: s["metric"][m[1]], legend) for s in series]
            assert not shown or len(set(legends)) == len(legends), f"{where}: series share a legend: {legends}"


def _check_admin_views(base: str, engine: sa.Engine) -> None:
    """What Prometheus stored of the admin views equals the tables (tests/support/admin_figures.py); the healthy
    instance's tag-quality debt, every concept of it under a reason of the fixed list, is under the alert's share."""
    stored = {(s["metric"]["__name__"], tuple(sorted((k, v) for k, v in s["metric"].items()
                                                     if k not in ("__name__", "job", "instance")))): float(s["value"][1])
              for s in _query(base, f'{{__name__=~"{"|".join(ADMIN_SERIES)}"}}')}
    assert stored == pytest.approx(expected_series(engine, shard_keys(settings.LEARNER_SHARDS),
                                                          dt.datetime.now(dt.timezone.utc)))
    debt = {s["metric"]["reason"]: float(s["value"][1]) for s in _query(base, "tag_quality_debt_last_7_days")}
    assert debt["other"] == 0 and sum(debt.values()) > 0, debt
    share = float(_query(base, "sum(tag_quality_debt_last_7_days) / sum(revision_queue_due_last_7_days)")[0]["value"][1])
    assert 0 < share < float(_query(base, "tag_quality_debt_alert_share")[0]["value"][1])


def _no_value(panel: dict) -> str | None:
    return panel.get("fieldConfig", {}).get("defaults", {}).get("noValue")


def _build_every_window_but_one(engine: sa.Engine, learners: pd.DataFrame, now: dt.datetime) -> pd.DataFrame:
    """Every learner's current day built in its window (those revision_queues_job did not build already), as the
    rollover windows would have, except one window whose rollover passed over LATE_AFTER ago: its builds."""
    builds = current_builds(learners, now, settings.LEARNER_SHARDS)
    done = built_keys(engine)
    builds = builds.loc[[key not in done for key in builds[BUILD_KEY].itertuples(index=False)]]
    next_rollover = current_builds(learners, now, settings.LEARNER_SHARDS, day_offset=1).set_index("user_id")
    windows = builds.assign(next_rollover_at=builds["user_id"].map(next_rollover["rollover_at"])).groupby(
        "window_start").agg(rollover_at=("rollover_at", "min"), next_rollover_at=("next_rollover_at", "min"))
    stoppable = windows.loc[(windows["rollover_at"] < pd.Timestamp(now - STOPPED_ROLLOVER_AGE))
                            & (windows["next_rollover_at"] > pd.Timestamp(now + STOPPED_NEXT_ROLLOVER_IN))]
    assert len(stoppable), f"no window to stop among {windows}"
    stopped = builds["window_start"] == stoppable.index[0]
    write_builds(engine, builds.loc[~stopped])
    return builds.loc[stopped]


def test_a_real_prometheus_scrapes_the_exporter_and_evaluates_the_alerts(tmp_path, empty_sqlite_url):
    """RevisionQueueLate firing while a window's build is missing and its rollover passed over 30 minutes ago,
    cleared once built (late); quiet on a healthy instance; the failure-rate alert pending at the third failed run
    (its `for:` is promtool's to prove, so not waited out); every dashboard query answered, with its legend's
    labels."""
    _binary("prometheus")  # skip before materializing anything
    migrate.upgrade(empty_sqlite_url)
    engine = get_engine(empty_sqlite_url)
    platform = simulate_platform(n_learners=30, n_concepts=60, n_resources=10, days=120, seed=2)
    platform.users["created_at"] = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)
    load_platform(engine, platform)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    repository = load_defs().get_repository_def()
    jobs = code_location_jobs(repository)
    warehouse = Warehouse(database_url=empty_sqlite_url)
    broken = Warehouse(database_url=f"sqlite:///{tmp_path / 'never_migrated.db'}")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        _materialize_healthy(repository, instance, warehouse)
        stopped = _build_every_window_but_one(engine, platform.users, dt.datetime.now(dt.timezone.utc))

        with _prometheus_over(home, empty_sqlite_url, tmp_path) as base:
            _settle(base)
            # What Prometheus stores: the scrape job in `job`, the Dagster job in `dagster_job`, every job present.
            for family in ("jobs_failed_total", "dagster_run_queue_size"):
                stored = [s["metric"] for s in _query(base, family)]
                assert all(s["job"] == "learning_pipelines" and "exported_job" not in s for s in stored), stored
                assert sorted(s.get("dagster_job") for s in stored) == jobs, (family, stored)
            rules = [rule for group in _get(base, "/api/v1/rules")["groups"] for rule in group["rules"]]
            assert rules and all(rule["health"] == "ok" for rule in rules), [r.get("lastError") for r in rules]

            # The stopped window: its learners' rollover passed over 30 minutes ago without their queue.
            alerts = _alerts(base)
            assert [(a["labels"]["alertname"], a["state"]) for a in alerts] == [("RevisionQueueLate", "firing")]
            rollover_age = dt.datetime.now(dt.timezone.utc) - stopped["rollover_at"].min()
            assert float(alerts[0]["value"]) == pytest.approx(rollover_age.total_seconds(), abs=60)
            assert float(alerts[0]["value"]) > LATE_AFTER.total_seconds()
            without_queue = _query(base, "sum(revision_queue_learners_without_todays_queue)")
            assert float(without_queue[0]["value"][1]) == len(stopped) > 0
            assert alerts[0]["annotations"]["summary"].startswith(f"{len(stopped)} learners have no revision queue")

            # Built late, every learner has their day's queue: the alert clears.
            write_builds(engine, stopped, ready_at=dt.datetime.now(dt.timezone.utc))
            _wait_for(lambda: not _alerts(base), "RevisionQueueLate to clear once the window is built")
            _settle(base)
            assert _alerts(base) == [], "a healthy instance raises no alert, not even a pending one"
            assert float(_query(base, "sum(revision_queue_learners_without_todays_queue)")[0]["value"][1]) == 0
            _check_dashboard(base, may_be_empty=lambda panel: _no_value(panel) is not None)
            _check_admin_views(base, engine)

            # One more FSRS shard and CDC calculation (so the duration quantiles have a window with data), then
            # exactly 3 failed runs: the third failure makes the failure rate alert pending.
            fsrs = repository.get_job("fsrs_optimization_job")
            assert _run(fsrs, instance, warehouse, fsrs.partitions_def.get_partition_keys()[0]).success
            assert _run(repository.get_job("concept_complexity_job"), instance, warehouse).success
            for day in ("2026-03-10", "2026-03-11", "2026-03-12"):
                key = dg.MultiPartitionKey({"day": day, "shard": fsrs.partitions_def.get_partition_keys()[0]})
                assert not _run(repository.get_job("revision_queues_job"), instance, broken, key).success
            _wait_for(lambda: _alerts(base), "an alert after 3 failed runs")
            alerts = _alerts(base)
            assert [(a["labels"]["alertname"], a["state"]) for a in alerts] == [("PipelineFailureRateHigh", "pending")]
            assert float(alerts[0]["value"]) == pytest.approx(3 / 5, rel=0.1)  # 3 of the 5 runs since Prometheus started
            _settle(base)
            _check_dashboard(base, may_be_empty=lambda panel: _no_value(panel) not in (None, NO_DATA_YET))
