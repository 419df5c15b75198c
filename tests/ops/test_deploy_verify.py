"""`learning-pipelines deploy verify`: against a deployment where nothing runs every check fails with what to do
(never a traceback, never a password); the smoke ingest drops its throw-away schema even when it fails; against
a real stack every check passes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from learning_pipelines.db import migrate, scratch_schema
from learning_pipelines.db.engine import DATABASE_URL_ENV, get_engine
from learning_pipelines.deploy import targets, verify
from learning_pipelines.settings import CELERY_BROKER_ENV, CELERY_QUEUE_ENV
from tests.conftest import scratch_postgres_database
from tests.support.running_stack import free_port, running_stack

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
CHECK_NAMES = ["warehouse", "dagster_storage", "month_partitions", "daemons", "code_location", "celery_workers",
               "metrics", "smoke_ingest"]
# The variables that would point verify somewhere other than the run directory under test.
TARGET_ENV = ("DAGSTER_HOME", DATABASE_URL_ENV, CELERY_QUEUE_ENV, CELERY_BROKER_ENV)


def _verify(run_dir: Path, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in TARGET_ENV}
    return subprocess.run([str(BIN / "learning-pipelines"), "deploy", "verify", "--run-dir", str(run_dir), *flags],
                          env={**clean, **(env or {})}, capture_output=True, text=True, timeout=600, cwd=ROOT)


def _dagster_home(path: Path, database_url: str) -> Path:
    """An instance like the stack's (deploy/dagster.yaml) on `database_url`'s database."""
    url = sa.engine.make_url(database_url)
    instance = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    postgres_db = instance["storage"]["postgres"]["postgres_db"]
    postgres_db.update(hostname=url.host, port=url.port or 5432, username=url.username, db_name=url.database)
    postgres_db.pop("password")
    path.mkdir()
    (path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    return path


@pytest.fixture
def nothing_running(postgres_available, tmp_path):
    """A run directory whose stack.json names a scratch database that is not migrated (as warehouse and as
    Dagster's storage) and ports where nothing listens."""
    with scratch_postgres_database() as url:
        run_dir = tmp_path / "stack"
        run_dir.mkdir()
        description = {
            "marker": uuid.uuid4().hex, "dagster_home": str(_dagster_home(run_dir / "dagster_home", url)),
            "workspace": str(run_dir / "workspace.yaml"), "warehouse_url": url,
            "metrics_url": f"http://127.0.0.1:{free_port()}/metrics", "webserver_url": "http://127.0.0.1:1",
            "queue": f"lp_test_{uuid.uuid4().hex[:10]}", "workers": 2, "location_name": "learning_pipelines",
            "code_server": {"host": "127.0.0.1", "port": free_port()}}
        (run_dir / "stack.json").write_text(json.dumps(description))
        yield run_dir, url


def test_every_check_fails_with_what_to_do_when_nothing_runs(nothing_running):
    run_dir, url = nothing_running
    # Passwords the output must never show: the warehouse's (trust authentication ignores it) and the broker's.
    warehouse_url = sa.engine.make_url(url).set(password="pw-warehouse-7731").render_as_string(hide_password=False)
    env = {DATABASE_URL_ENV: warehouse_url,
           CELERY_BROKER_ENV: f"pyamqp://guest:pw-broker-9902@127.0.0.1:{free_port()}//"}
    description = json.loads((run_dir / "stack.json").read_text())
    del description["warehouse_url"]  # so the environment names it, with its password
    (run_dir / "stack.json").write_text(json.dumps(description))

    table = _verify(run_dir, env=env)
    assert table.returncode == 1, table.stdout + table.stderr
    output = table.stdout + table.stderr
    assert "Traceback" not in output
    assert "pw-warehouse-7731" not in output and "pw-broker-9902" not in output
    rows = {line.split()[0]: line.split()[1] for line in table.stdout.splitlines()
            if line.split() and line.split()[0] in CHECK_NAMES}
    assert rows == dict.fromkeys(CHECK_NAMES, "FAIL")
    assert table.stdout.count("what to do: ") == len(CHECK_NAMES)
    assert "8 of 8 check(s) failed" in table.stdout
    assert "learning-pipelines db upgrade" in table.stdout and "dagster instance migrate" in table.stdout
    assert "($LEARNING_PIPELINES_DATABASE_URL)" in table.stdout  # the environment fills what stack.json lacks

    as_json = _verify(run_dir, "--json", env=env)
    assert as_json.returncode == 1 and "Traceback" not in as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert [check["name"] for check in report["checks"]] == CHECK_NAMES
    for check in report["checks"]:
        assert set(check) == {"name", "ok", "detail", "remedy"}
        assert check["ok"] is False and check["detail"] and check["remedy"], check
    by_name = {check["name"]: check for check in report["checks"]}
    assert "not migrated" in by_name["warehouse"]["detail"]
    assert "not migrated" in by_name["dagster_storage"]["detail"]
    assert "cannot reach the broker" in by_name["celery_workers"]["detail"]
    assert "pw-warehouse-7731" not in as_json.stdout and "pw-broker-9902" not in as_json.stdout

    # Verifying changed nothing: Dagster's tables were not created, and no scratch schema is left.
    engine = get_engine(url)
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []
    assert scratch_schema.scratch_schemas(engine) == []


def test_nothing_to_verify_says_what_is_missing(tmp_path):
    done = _verify(tmp_path / "no_stack_here")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    for missing in ("DAGSTER_HOME", DATABASE_URL_ENV, "--code-server HOST:PORT", "--metrics-url URL"):
        assert missing in done.stderr


def test_a_damaged_stack_description_is_one_line_saying_how_to_write_it_again(tmp_path):
    (tmp_path / "stack.json").write_text('{"warehouse_url": ')  # cut short, as by a full disk
    done = _verify(tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "stack.json cannot be read" in done.stderr and "learning-pipelines stack start" in done.stderr


def test_stack_json_wins_over_the_environment_which_fills_what_it_lacks_and_a_hidden_password_is_left_to_libpq(
        tmp_path):
    (tmp_path / "stack.json").write_text(json.dumps({
        "dagster_home": "/stack/home", "warehouse_url": "postgresql+psycopg2://app:***@db:5432/warehouse",
        "metrics_url": "http://127.0.0.1:9464/metrics", "queue": "stack_queue", "workers": 2,
        "code_server": {"host": "127.0.0.1", "port": 4266}}))
    from_stack = targets.resolve_target(tmp_path, {})
    assert from_stack.warehouse_url == "postgresql+psycopg2://app@db:5432/warehouse"
    assert (from_stack.queue, from_stack.min_workers, from_stack.code_server) == ("stack_queue", 2, ("127.0.0.1", 4266))
    # A development shell's DAGSTER_HOME (the Makefile exports one) does not redirect the check of the stack.
    environment = {"DAGSTER_HOME": "/env/home", CELERY_QUEUE_ENV: "env_queue", DATABASE_URL_ENV: "sqlite:///w.db"}
    with_environment = targets.resolve_target(tmp_path, environment, metrics_url="http://m:1/metrics",
                                             code_server=("h", 5))
    assert (with_environment.dagster_home, with_environment.queue) == (Path("/stack/home"), "stack_queue")
    assert (with_environment.metrics_url, with_environment.code_server) == ("http://m:1/metrics", ("h", 5))
    assert with_environment.origins["metrics"] == "flag" and with_environment.origins["queue"] == "stack.json"
    without_stack = targets.resolve_target(tmp_path / "none", environment, metrics_url="http://m:1/metrics",
                                          code_server=("h", 5))
    assert (without_stack.dagster_home, without_stack.queue, without_stack.warehouse_url) == (
        Path("/env/home"), "env_queue", "sqlite:///w.db")
    assert without_stack.origins["queue"] == f"${CELERY_QUEUE_ENV}"


def test_the_smoke_ingest_drops_its_schema_when_it_fails(postgres_available, monkeypatch, tmp_path):
    from learning_pipelines.ingest import importer

    def failing_import(*args, **kwargs):
        raise RuntimeError("the disk is full")

    created = []
    create_schema = scratch_schema.create_schema

    def recording_create_schema(engine):
        created.append(create_schema(engine))
        return created[-1]

    monkeypatch.setattr(scratch_schema, "create_schema", recording_create_schema)
    monkeypatch.setattr(importer, "import_review_file", failing_import)
    with scratch_postgres_database() as url:
        migrate.upgrade(url)
        target = verify.Target(dagster_home=tmp_path, warehouse_url=url, broker_url="pyamqp://", queue="q",
                               min_workers=1, metrics_url="http://127.0.0.1:1/metrics", code_server=("127.0.0.1", 1),
                               run_dir=None, origins={})
        checks = tuple(check for check in verify.CHECKS if check.name in ("warehouse", "smoke_ingest"))
        report = verify.verify(target, checks)
        warehouse, smoke = report.checks
        assert warehouse.ok
        assert not smoke.ok and smoke.remedy
        assert "RuntimeError: the disk is full" in smoke.detail
        assert len(created) == 1 and created[0] in smoke.detail
        assert scratch_schema.scratch_schemas(get_engine(url)) == []


def test_on_sqlite_partitions_do_not_apply_and_the_smoke_runs_in_a_temporary_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    migrate.upgrade(url)
    target = verify.Target(dagster_home=tmp_path, warehouse_url=url, broker_url="pyamqp://", queue="q",
                           min_workers=1, metrics_url="http://127.0.0.1:1/metrics", code_server=("127.0.0.1", 1),
                           run_dir=None, origins={})
    checks = tuple(check for check in verify.CHECKS if check.name in ("warehouse", "month_partitions", "smoke_ingest"))
    warehouse, partitions, smoke = verify.verify(target, checks).checks
    assert warehouse.ok
    assert partitions.ok and partitions.detail.startswith("not applicable: ok")
    assert "in a temporary SQLite file: 10,000 reviews imported at" in smoke.detail, smoke.detail
    get_engine(url).dispose()


SMOKE_FIGURES = re.compile(r"imported at ([\d,]+) rows/s .* read in ([\d.]+) ms, median")


@pytest.mark.slow
def test_every_check_passes_against_a_running_stack(postgres_available, rabbitmq_available, tmp_path):
    run_dir = tmp_path / "stack"
    with running_stack(run_dir) as stack:
        # The daemons write their first heartbeats some seconds after they start.
        deadline = time.monotonic() + 90
        while True:
            done = _verify(run_dir, "--json")
            assert "Traceback" not in done.stderr, done.stderr
            report = json.loads(done.stdout)
            if report["ok"] or time.monotonic() > deadline:
                break
            time.sleep(3)
        failed = {check["name"]: check["detail"] for check in report["checks"] if not check["ok"]}
        logs = {path.name: path.read_text()[-1500:] for path in (run_dir / "logs").glob("*.log")} if failed else {}
        assert done.returncode == 0 and report["ok"], json.dumps({"failed": failed, "logs": logs}, indent=1)
        assert [check["name"] for check in report["checks"]] == CHECK_NAMES
        smoke = next(check for check in report["checks"] if check["name"] == "smoke_ingest")
        rows_per_second, read_ms = SMOKE_FIGURES.search(smoke["detail"]).groups()
        print(f"\nsmoke ingest: {rows_per_second} rows/s, queue read {read_ms} ms (median)")
        assert scratch_schema.scratch_schemas(get_engine(stack.warehouse_url)) == []
        get_engine(stack.warehouse_url).dispose()


@pytest.mark.slow
def test_a_code_location_that_fails_to_load_is_reported_with_its_error(tmp_path):
    (tmp_path / "broken_definitions.py").write_text(
        "import dagster as dg\n\nraise ValueError('LEARNING_PIPELINES_SOMETHING is not set')\n")
    port = free_port()
    log = tmp_path / "code_server.log"
    with open(log, "w") as output:  # the server writes to its own copy of the file
        server = subprocess.Popen([str(BIN / "dagster"), "code-server", "start", "-f", "broken_definitions.py",
                                   "-h", "127.0.0.1", "-p", str(port)], cwd=tmp_path, stdout=output,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    target = verify.Target(dagster_home=tmp_path, warehouse_url="sqlite://", broker_url="pyamqp://", queue="q",
                           min_workers=1, metrics_url="http://127.0.0.1:1/metrics", code_server=("127.0.0.1", port),
                           run_dir=None, origins={})
    checks = tuple(check for check in verify.CHECKS if check.name == "code_location")
    try:
        deadline = time.monotonic() + 120
        while True:
            (result,) = verify.verify(target, checks).checks
            if not result.detail.startswith("nothing answers") or time.monotonic() > deadline:
                break
            assert server.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # its own group: the server and the process it loads the code in
        server.wait(10)
    assert not result.ok
    assert result.detail.startswith("the code location failed to load: ")
    assert "ValueError: LEARNING_PIPELINES_SOMETHING is not set" in result.detail
    assert "dagster definitions validate" in result.remedy


def test_the_metrics_check_reads_only_http_urls(tmp_path):
    (tmp_path / "stack.json").write_text(json.dumps({
        "dagster_home": str(tmp_path), "warehouse_url": "sqlite:///w.db", "metrics_url": "file:///etc/passwd",
        "queue": "q", "workers": 1, "code_server": {"host": "127.0.0.1", "port": 1}}))
    target = targets.resolve_target(tmp_path, {})
    [metrics] = verify.verify(target, tuple(c for c in verify.CHECKS if c.name == "metrics")).checks
    assert not metrics.ok and "is not an http:// or https:// URL" in metrics.detail
