"""`learning-pipelines deploy verify`: is this deployment whole, and fast enough to serve?

Eight checks, in this order, each ok or failed with what to do about it:

1. warehouse        the warehouse answers and its schema is at the Alembic head of this code; it says whose open
                    transactions card_memory_states waits for: this database's where its role is a superuser or
                    a member of pg_read_all_stats, else every database's on the server (with the GRANT to fix it).
2. dagster_storage  Dagster's run, event log and schedule storage answer and are migrated (read only: the
                    instance is opened with `should_autocreate_tables: false`, so verifying never creates them).
3. month_partitions review_logs has its month partitions for this month and the next (PostgreSQL; UTC months).
4. daemons          the scheduler, sensor, run monitoring and run queue daemons wrote a heartbeat lately.
5. code_location    the gRPC code server answers and loaded the code location without an error.
6. celery_workers   enough Celery workers answer on the broker, listening on the deployment's queue.
7. metrics          the metrics exporter answers with learning_pipelines_ metrics and reaches the warehouse.
8. smoke_ingest     10,000 synthetic reviews imported into a throw-away schema of the warehouse database at
                    >= 1,000 rows/s, card_memory_states and revision_queues materialized from them in-process,
                    and one learner's queue read in <= 100 ms (median). The schema is always dropped. On SQLite
                    it runs in a temporary SQLite file. It runs only when the warehouse check passed, and it
                    shares the database's advisory locks (partition DDL, card_memory_states) with production:
                    it waits for a card_memory_states update in progress.

What to verify comes from the flags (--metrics-url, --code-server), else `<run dir>/stack.json` (written by
`learning-pipelines stack start`), else the environment a deployment without one sets: DAGSTER_HOME,
LEARNING_PIPELINES_DATABASE_URL, LEARNING_PIPELINES_CELERY_BROKER, LEARNING_PIPELINES_CELERY_QUEUE. Passwords
never appear in what is printed: URLs are shown with *** for them, and error texts have them replaced.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import socket
import statistics
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zoneinfo
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus

import sqlalchemy as sa
import yaml
from dagster._core.errors import DagsterInvalidConfigError

from learning_pipelines.db import memory_states
from learning_pipelines.db.engine import DATABASE_URL_ENV
from learning_pipelines.deploy.stack import DESCRIPTION, Stack, read_description
from learning_pipelines.errors import one_line
from learning_pipelines.settings import CELERY_BROKER_ENV, CELERY_QUEUE_ENV, DEFAULT_CELERY_BROKER

# Daemons a production instance runs (deploy/dagster.yaml enables all four); type names as dagster._daemon has them.
DAEMON_TYPES = ("SCHEDULER", "SENSOR", "MONITORING", "QUEUED_RUN_COORDINATOR")
# A daemon heartbeats every 30 s; four missed in a row is a daemon that is stuck or gone.
HEARTBEAT_MAX_AGE_S = 120
# The smoke ingest: a day's imports of a small platform must keep pace, and the app reads one learner's queue per
# screen, so 100 ms is the most a screen can spend on it.
SMOKE_REVIEWS = 10_000
MIN_IMPORT_ROWS_PER_S = 1_000
MAX_QUEUE_READ_MS = 100.0
QUEUE_READS = 15
# How long one probe waits for a server before calling it unreachable.
CONNECT_TIMEOUT_S = 5
CELERY_REPLY_TIMEOUT_S = 3


class TargetMissing(ValueError):
    """Neither stack.json nor the environment says what to verify; the message lists what is missing."""


@dataclasses.dataclass(frozen=True)
class Target:
    """What to verify, and where each value came from (stack.json, an environment variable, a flag)."""

    dagster_home: Path
    warehouse_url: str
    broker_url: str
    queue: str
    min_workers: int
    metrics_url: str
    code_server: tuple[str, int]
    run_dir: Path | None  # the stack's run directory, when stack.json was read (its logs/ are named in remedies)
    origins: Mapping[str, str]

    def lines(self) -> list[str]:
        shown = {"dagster_home": str(self.dagster_home), "warehouse": _shown_url(self.warehouse_url),
                 "broker": _shown_url(self.broker_url), "queue": self.queue, "workers": f">= {self.min_workers}",
                 "code_server": f"{self.code_server[0]}:{self.code_server[1]}",
                 "metrics": _shown_url(self.metrics_url)}
        return [f"  {name:<13} {value}  ({self.origins.get(name, 'given')})" for name, value in shown.items()]


def resolve_target(run_dir: Path, environ: Mapping[str, str], metrics_url: str | None = None,
                   code_server: tuple[str, int] | None = None) -> Target:
    """A flag, else stack.json in `run_dir` (a shell's DAGSTER_HOME for development must not redirect the check of
    a stack), else the environment a deployment without stack.json sets; TargetMissing names what none gives."""
    description_path = run_dir / DESCRIPTION
    try:
        description = read_description(run_dir) or {}
    except (OSError, ValueError) as error:
        raise TargetMissing(f"{description_path} cannot be read ({one_line(str(error))}): restart the stack "
                            "(`learning-pipelines stack start`) to write it again") from None
    origins: dict[str, str] = {}

    def pick(name: str, env: str | None, flag, stack_value, default=None):
        if flag:
            origins[name] = "flag"
            return flag
        if stack_value not in (None, ""):
            origins[name] = DESCRIPTION
            return stack_value
        if env and environ.get(env, "").strip():
            origins[name] = f"${env}"
            return environ[env].strip()
        origins[name] = "default"
        return default

    server = description.get("code_server") or {}
    values = {
        "dagster_home": pick("dagster_home", "DAGSTER_HOME", None, description.get("dagster_home")),
        "warehouse": pick("warehouse", DATABASE_URL_ENV, None,
                          _without_hidden_password(description.get("warehouse_url"))),
        "broker": pick("broker", CELERY_BROKER_ENV, None, None, DEFAULT_CELERY_BROKER),
        "queue": pick("queue", CELERY_QUEUE_ENV, None, description.get("queue"), Stack.queue),
        "workers": pick("workers", None, None, description.get("workers"), 1),
        "code_server": pick("code_server", None, code_server,
                            (server["host"], int(server["port"])) if server.get("host") and server.get("port")
                            else None),
        "metrics": pick("metrics", None, metrics_url, description.get("metrics_url")),
    }
    how = {"dagster_home": "the Dagster instance: set DAGSTER_HOME to the directory holding its dagster.yaml",
           "warehouse": f"the warehouse: set {DATABASE_URL_ENV}",
           "code_server": "the gRPC code server: pass --code-server HOST:PORT",
           "metrics": "the metrics endpoint: pass --metrics-url URL"}
    missing = [text for name, text in how.items() if values[name] is None]
    if missing:
        raise TargetMissing("\n".join([
            f"nothing says what to verify: no {description_path} (start the stack with `make stack`, or point "
            "--run-dir at its run directory), and nothing names", *(f"  - {text}" for text in missing)]))
    return Target(dagster_home=Path(values["dagster_home"]), warehouse_url=values["warehouse"],
                  broker_url=values["broker"], queue=values["queue"], min_workers=int(values["workers"]),
                  metrics_url=values["metrics"], code_server=values["code_server"],
                  run_dir=run_dir if description else None, origins=origins)


def _without_hidden_password(url: str | None) -> str | None:
    """stack.json shows a password as ***: drop it, so libpq takes the real one from PGPASSWORD or ~/.pgpass."""
    if not url:
        return None
    parsed = sa.engine.make_url(url)
    if parsed.password != "***":
        return url
    # URL.set(password=None) keeps the password: a new URL without one.
    return sa.engine.URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database,
                                parsed.query).render_as_string(hide_password=False)


@dataclasses.dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    remedy: str  # what to do; "" when ok


@dataclasses.dataclass(frozen=True)
class Report:
    target: Target
    checks: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_json(self) -> str:
        return json.dumps({"ok": self.ok, "checks": [dataclasses.asdict(check) for check in self.checks]}, indent=2)

    def render(self) -> str:
        width = max(len(check.name) for check in self.checks) + 2
        failed = sum(not check.ok for check in self.checks)
        lines = ["deploy verify:", *self.target.lines(), "",
                 f"{'CHECK':<{width}}{'STATUS':<8}DETAIL"]
        for check in self.checks:
            lines.append(f"{check.name:<{width}}{'ok' if check.ok else 'FAIL':<8}{check.detail}")
            if not check.ok:
                lines.append(f"{'':<{width + 8}}what to do: {check.remedy}")
        lines += ["", "all checks passed" if not failed else f"{failed} of {len(self.checks)} check(s) failed"]
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str
    remedy: str | None = None  # None: the check's usual remedy


class _Session:
    """What the checks share: the target, the secrets to keep out of error texts, and what earlier checks found
    (a later check that needs the warehouse or the instance says so instead of failing the same way again)."""

    def __init__(self, target: Target):
        self.target = target
        urls = (target.warehouse_url, target.broker_url, target.metrics_url)
        self.passwords = {password for password in map(_password, urls) if password}
        # Each stays as written here when its check stopped on an error of its own.
        self.warehouse: sa.Engine | None = None
        self.warehouse_problem: str | None = "the warehouse check failed"
        self.instance = None
        self.instance_problem: str | None = "the dagster_storage check failed"

    def reason(self, error: BaseException) -> str:
        """An exception as one line without passwords (a driver's error may quote its connection string)."""
        cause = getattr(error, "orig", None) or error
        return self.scrub(one_line(str(cause)).split(" (Background on this error at:")[0] or type(cause).__name__)

    def scrub(self, text: str) -> str:
        for password in sorted(self.passwords, key=len, reverse=True):
            for form in {password, quote(password, safe=""), quote_plus(password)}:
                text = text.replace(form, "***")
        return text[:400]

    def logs(self, pattern: str) -> str:
        """Where the stack's process(es) write their log, when this is a stack (`pattern` may hold a *)."""
        run_dir = self.target.run_dir
        if not run_dir:
            return ""
        return f"; {'their logs' if '*' in pattern else 'its log'}: {run_dir / 'logs' / pattern}"

    def close(self) -> None:
        if self.warehouse is not None:
            self.warehouse.dispose()
        if self.instance is not None:
            self.instance.dispose()


def _engine(url: str) -> sa.Engine:
    """An engine that gives up on an unreachable server after CONNECT_TIMEOUT_S and keeps no connection open."""
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith("postgresql") else {}
    return sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=connect_args, hide_parameters=True)


def _check_warehouse(session: _Session) -> Outcome:
    from learning_pipelines.db import migrate

    url = session.target.warehouse_url
    shown = _shown_url(url)
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if not path or not Path(path).is_file():
            session.warehouse_problem = "the warehouse file does not exist"
            return Outcome(False, f"no SQLite warehouse at {path}",
                           f"create it: `learning-pipelines db upgrade` with {DATABASE_URL_ENV} set to {shown}")
    session.warehouse = engine = _engine(url)
    try:
        current = migrate.current_revision(engine)
    except sa.exc.SQLAlchemyError as error:
        session.warehouse_problem = "the warehouse is unreachable"
        return Outcome(False, f"cannot reach {shown}: {session.reason(error)}",
                       f"start its PostgreSQL server, or fix {DATABASE_URL_ENV} (a password goes in PGPASSWORD or "
                       "~/.pgpass)")
    head = migrate.head_revision()
    if current != head:
        session.warehouse_problem = "the warehouse is not at the Alembic head"
        return Outcome(False, f"{shown} is at revision {current or 'none (not migrated)'}, the code's head is {head}")
    session.warehouse_problem = None
    return Outcome(True, f"{shown} at revision {current} (head); {_in_flight_line(engine)}")


def _in_flight_line(engine: sa.Engine) -> str:
    """Whose open transactions hold card_memory_states back: a role that cannot see other roles' sessions counts
    every database's on the server, so one left open in Dagster's storage delays the states."""
    with engine.connect() as conn:
        scope = memory_states.in_flight_scope(conn)
    line = f"card_memory_states counts the open transactions of: {scope.label}"
    if scope.grant:
        line += (" (this role cannot see other roles' sessions, so one left open in another database, e.g. "
                 f"Dagster's storage, holds the states back): to count this database's only, {scope.grant}")
    return line


def _instance(home: Path):
    """The instance of `home` opened to read, never to write: PostgreSQL storage that lacks its tables is reported
    as such instead of being created (Dagster creates them on open by default)."""
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    config = yaml.safe_load((home / "dagster.yaml").read_text()) or {}
    overrides = {}
    storage = config.get("storage") if isinstance(config, dict) else None
    if isinstance(storage, dict) and isinstance(storage.get("postgres"), dict):
        overrides["storage"] = {**storage, "postgres": {**storage["postgres"], "should_autocreate_tables": False}}
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides=overrides))


def _check_dagster_storage(session: _Session) -> Outcome:
    home = session.target.dagster_home
    if not (home / "dagster.yaml").is_file():
        session.instance_problem = "there is no Dagster instance"
        return Outcome(False, f"no dagster.yaml in {home}",
                       "set DAGSTER_HOME to the instance's directory (the stack's is <run dir>/dagster_home; "
                       "deploy/dagster.yaml is the production instance)")
    try:
        session.instance = instance = _instance(home.resolve())
    except yaml.YAMLError as error:
        session.instance_problem = "dagster.yaml cannot be read"
        return Outcome(False, f"{home / 'dagster.yaml'} is not valid YAML: {one_line(str(error))}",
                       "fix the file (deploy/dagster.yaml is the production instance)")
    except DagsterInvalidConfigError as error:
        session.instance_problem = "dagster.yaml cannot be loaded"
        return _invalid_instance_config(home, error)
    storages = {"run": instance.run_storage, "event log": instance.event_log_storage,
                "schedule": instance.schedule_storage}
    for url in sorted({getattr(s, "postgres_url", None) for s in storages.values()} - {None}):
        session.passwords |= {_password(url)} - {None}
        # Dagster retries an unreachable database for about 10 s per call: one quick probe first.
        probe = _engine(url)
        try:
            with probe.connect():
                pass
        except sa.exc.SQLAlchemyError as error:
            session.instance_problem = "Dagster's storage is unreachable"
            return Outcome(False, f"cannot reach {_shown_url(url)}: {session.reason(error)}",
                           "start the PostgreSQL server of Dagster's storage, or fix the storage block of "
                           f"{home / 'dagster.yaml'} (the password goes in DAGSTER_PG_PASSWORD)")
        finally:
            probe.dispose()
    behind = []
    for name, storage in storages.items():
        current, head = storage.alembic_version()
        if current != head:
            behind.append(f"{name} storage at {current or 'none (not migrated)'}, head {head}")
    if behind:
        session.instance_problem = "Dagster's storage is not migrated"
        return Outcome(False, "; ".join(behind), f"DAGSTER_HOME={home} dagster instance migrate")
    session.instance_problem = None
    where = _shown_url(getattr(instance.run_storage, "postgres_url", "") or str(home))
    return Outcome(True, f"run, event log and schedule storage migrated ({where})")


def _invalid_instance_config(home: Path, error: DagsterInvalidConfigError) -> Outcome:
    """Dagster's config errors, which carry stack traces, as one line: most often variables that are not set."""
    unset, other = [], []
    for problem in error.errors:
        variable = re.search(r'environment variable "([^"]+)" which is not set', problem.message)
        if variable:
            unset.append(variable.group(1))
        else:
            other.append(_first_line(problem.message))
    where = home / "dagster.yaml"
    if unset and not other:
        return Outcome(False, f"{where} reads environment variable(s) that are not set: {', '.join(sorted(unset))}",
                       "set them in this environment as the deployment does (the stack writes host, port, user and "
                       "database into its dagster.yaml; a password comes from DAGSTER_PG_PASSWORD)")
    shown = ", ".join(sorted(unset)) + " not set; " if unset else ""
    return Outcome(False, f"{where} is not a valid instance configuration: {shown}{'; '.join(other)[:400]}",
                   "fix the file (deploy/dagster.yaml is the production instance)")


def _check_partitions(session: _Session) -> Outcome:
    from learning_pipelines.db import partitions

    if session.warehouse_problem:
        return Outcome(False, f"not checked: {session.warehouse_problem}", "fix the warehouse check first")
    if session.warehouse.dialect.name != "postgresql":
        return Outcome(True, "not applicable: ok (SQLite has no partitions)")
    this_month = partitions.month_start(dt.datetime.now(dt.timezone.utc))
    wanted = {this_month, partitions.next_month(this_month)}
    with session.warehouse.connect() as conn:
        parent = partitions.partitioned_parent(conn)
        existing = partitions.existing_month_partitions(conn, parent) if parent else set()
    months = ", ".join(f"date({m.year}, {m.month}, 1)" for m in sorted(wanted))
    remedy = ("`learning-pipelines stack start` creates them as it starts; on a running deployment, with "
              f"{DATABASE_URL_ENV} set, run: .venv/bin/python -c \"from datetime import date; "
              "from learning_pipelines.db import partitions; from learning_pipelines.db.engine import get_engine; "
              f"partitions.create_month_partitions(get_engine(), [{months}])\"")
    if parent is None:
        return Outcome(False, "review_logs is not partitioned by month", remedy)
    missing = sorted(wanted - existing)
    if missing:
        return Outcome(False, f"{parent} lacks the partition(s) "
                       + ", ".join(partitions.month_partition_name(m) for m in missing), remedy)
    return Outcome(True, ", ".join(partitions.month_partition_name(m) for m in sorted(wanted)) + " exist")


def _check_daemons(session: _Session) -> Outcome:
    if session.instance_problem:
        return Outcome(False, f"not checked: {session.instance_problem}", "fix the dagster_storage check first")
    statuses = session.instance.get_daemon_statuses(list(DAEMON_TYPES))
    now = time.time()
    fine, problems, notes = [], [], []
    for daemon in DAEMON_TYPES:
        status = statuses[daemon]
        heartbeat = status.last_heartbeat
        if not status.required:
            fine.append(f"{daemon} (not enabled in dagster.yaml)")
        elif heartbeat is None:
            problems.append(f"{daemon}: no heartbeat")
        else:
            age = now - heartbeat.timestamp
            if not status.healthy or age > HEARTBEAT_MAX_AGE_S:
                problems.append(f"{daemon}: last heartbeat {age:.0f} s ago")
            else:
                fine.append(f"{daemon} {age:.0f} s ago")
            if heartbeat.errors:
                notes.append(f"{daemon} reports {len(heartbeat.errors)} recent error(s), e.g. "
                             + session.scrub(one_line(heartbeat.errors[0].message)[:200]))
    if problems:
        stale = f" (a heartbeat older than {HEARTBEAT_MAX_AGE_S} s is stale)"
        return Outcome(False, "; ".join(problems + notes) + stale,
                       "start or restart dagster-daemon (`learning-pipelines stack stop` then `stack start`, or "
                       f"`DAGSTER_HOME={session.target.dagster_home} dagster-daemon run -w <workspace.yaml>`)"
                       + session.logs("daemon.log"))
    return Outcome(True, "heartbeats: " + ", ".join(fine) + ("; " + "; ".join(notes) if notes else ""))


def _check_code_location(session: _Session) -> Outcome:
    from dagster._core.errors import DagsterUserCodeUnreachableError
    from dagster._grpc.client import DagsterGrpcClient
    from dagster._serdes import deserialize_value
    from dagster._utils.error import SerializableErrorInfo

    host, port = session.target.code_server
    remedy = ("start the code server (`learning-pipelines stack start`, or `dagster code-server start -m "
              f"learning_pipelines.definitions -h {host} -p {port}`)" + session.logs("code_server.log"))
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        return Outcome(False, f"nothing answers at {host}:{port} ({error.strerror or error})", remedy)
    try:
        response = deserialize_value(DagsterGrpcClient(host=host, port=port).list_repositories())
    except DagsterUserCodeUnreachableError as error:
        return Outcome(False, f"the code server at {host}:{port} does not answer: {session.reason(error)}", remedy)
    if isinstance(response, SerializableErrorInfo):
        root = response
        while root.cause is not None:  # Dagster's wrapper first, the error of the code itself last
            root = root.cause
        message = _first_line(response.message) or response.cls_name
        if root is not response:
            cause = _first_line(root.message)
            message += f" ... {cause if cause.startswith(root.cls_name or '?') else f'{root.cls_name}: {cause}'}"
        return Outcome(False, f"the code location failed to load: {session.scrub(message)}",
                       "fix the error, then restart the code server; `dagster definitions validate -m "
                       "learning_pipelines.definitions` shows it in full" + session.logs("code_server.log"))
    names = ", ".join(symbol.repository_name for symbol in response.repository_symbols)
    return Outcome(True, f"{host}:{port} serves {len(response.repository_symbols)} repository(ies): {names}")


def _check_celery_workers(session: _Session) -> Outcome:
    import celery

    target = session.target
    broker = _shown_url(target.broker_url)
    app = celery.Celery(broker=target.broker_url, set_as_current=False)
    app.conf.broker_connection_timeout = CONNECT_TIMEOUT_S
    start = (f"start them: `make stack` (`learning-pipelines stack start`), or `dagster-celery worker start -A "
             f"dagster_celery.app -y <celery.yaml> -q {target.queue}` with {CELERY_BROKER_ENV} set"
             + session.logs("worker_*.log"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, interval_start=0.5, interval_step=0.5)
                # Each worker's own reply, not inspect()'s merge by node name: two workers with one name (two
                # stacks on one broker) must count twice.
                replies = app.control.broadcast("active_queues", reply=True, timeout=CELERY_REPLY_TIMEOUT_S,
                                                connection=connection)
        except Exception as error:  # kombu and amqp raise their own hierarchies for a broker that refuses
            return Outcome(False, f"cannot reach the broker {broker}: {session.reason(error)}",
                           f"start RabbitMQ, or fix {CELERY_BROKER_ENV}")
    ours, others = [], 0
    for reply in replies or []:
        for node, queues in reply.items():
            if any(queue.get("name") == target.queue for queue in queues or []):
                ours.append(node)
            else:
                others += 1
    detail = (f"{len(ours)} worker(s) listening on queue {target.queue} (need >= {target.min_workers})"
              + (f": {', '.join(sorted(ours))}" if ours else "")
              + (f"; {others} other worker(s) on other queues" if others else ""))
    if len(ours) < target.min_workers:
        return Outcome(False, detail, start)
    return Outcome(True, detail)


def _check_metrics(session: _Session) -> Outcome:
    url = session.target.metrics_url
    shown = _shown_url(url)
    remedy = ("start the exporter (`learning-pipelines stack start`, or `learning-pipelines metrics --port <port>` "
              "with DAGSTER_HOME set)" + session.logs("metrics.log"))
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        return Outcome(False, f"{shown} is not an http:// or https:// URL", "pass --metrics-url http://HOST:PORT/metrics")
    try:
        with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S) as response:  # nosec B310: http(s) checked above
            status, body = response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as error:
        return Outcome(False, f"{shown} answered HTTP {error.code}", remedy)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        return Outcome(False, f"no answer from {shown}: {session.scrub(one_line(str(reason)))}", remedy)
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            samples[name.split("{")[0]] = value
    ours = sorted(name for name in samples if name.startswith("learning_pipelines_"))
    if status != 200 or not ours:
        return Outcome(False, f"{shown} answered HTTP {status} without any learning_pipelines_ metric: is another "
                              "program listening there?", remedy)
    up = samples.get("learning_pipelines_warehouse_up", "").strip()
    if up and float(up.split()[0]) != 1:
        return Outcome(False, f"{shown} answers, but learning_pipelines_warehouse_up is {up}: the exporter cannot "
                              "reach the warehouse",
                       f"check {DATABASE_URL_ENV} in the exporter's environment and restart it"
                       + session.logs("metrics.log"))
    return Outcome(True, f"{shown} answers HTTP 200 with {len(ours)} learning_pipelines_ metric(s)"
                   + (", warehouse up" if up else ""))


def _check_smoke_ingest(session: _Session) -> Outcome:
    if session.warehouse_problem:
        return Outcome(False, f"not run: {session.warehouse_problem}", "fix the warehouse check first")
    if session.warehouse.dialect.name != "postgresql":
        with tempfile.TemporaryDirectory(prefix="deploy_verify_") as folder:
            return _smoke_in(session, f"sqlite:///{Path(folder) / 'warehouse.db'}", "a temporary SQLite file")
    from learning_pipelines.db import scratch_schema

    try:
        left_behind = scratch_schema.scratch_schemas(session.warehouse)
        schema = scratch_schema.create_schema(session.warehouse)
    except sa.exc.SQLAlchemyError as error:
        return Outcome(False, "cannot create a throw-away schema in the warehouse database: "
                              + session.reason(error),
                       "grant the user of the warehouse URL CREATE on its database, or run verify as one who has it")
    outcome = Outcome(False, "interrupted")
    try:
        outcome = _smoke_in(session, scratch_schema.schema_url(session.target.warehouse_url, schema),
                            f"schema {schema}")
    finally:
        try:
            scratch_schema.drop_schema(session.warehouse, schema)
        except sa.exc.SQLAlchemyError as error:
            outcome = Outcome(False, f"{outcome.detail}; the scratch schema {schema} could not be dropped "
                              f"({session.reason(error)})", f'drop it: DROP SCHEMA "{schema}" CASCADE')
    if left_behind:
        # A verify killed mid-smoke cannot drop its schema (or another verify is running now).
        names = ", ".join(left_behind[:3]) + (", ..." if len(left_behind) > 3 else "")
        outcome = dataclasses.replace(outcome, detail=f"{outcome.detail}; note: {len(left_behind)} schema(s) of "
                                      f"earlier runs remain ({names}): drop each with DROP SCHEMA <name> CASCADE "
                                      "once no verify is running")
    return outcome


def _smoke_in(session: _Session, url: str, where: str) -> Outcome:
    """The smoke ingest into the empty database `url` names; every failure is an Outcome, nothing raises."""
    from learning_pipelines.db.engine import get_engine

    try:
        with warnings.catch_warnings():
            # Dagster marks features in preview or beta as it loads the assets: nothing an operator acts on.
            from dagster import BetaWarning, PreviewWarning

            warnings.simplefilter("ignore", BetaWarning)
            warnings.simplefilter("ignore", PreviewWarning)
            return _smoke(url, where)
    except Exception as error:
        return Outcome(False, f"the smoke ingest failed in {where}: {type(error).__name__}: {session.reason(error)}")
    finally:
        get_engine(url).dispose()  # the resource's pooled connections: the schema is dropped next


def _smoke(url: str, where: str) -> Outcome:
    import dagster as dg

    from learning_pipelines import settings
    from learning_pipelines.db import migrate
    from learning_pipelines.db.engine import get_engine
    from learning_pipelines.db.learner_queue import learner_queue, learner_with_most_themes
    from learning_pipelines.defs.memory_states import card_memory_states
    from learning_pipelines.defs.learner_shards import learner_shards
    from learning_pipelines.defs.resources import Warehouse
    from learning_pipelines.defs.revision_queues import revision_queues
    from learning_pipelines.demo import load_platform
    from learning_pipelines.ingest.importer import import_review_file

    migrate.upgrade(url)
    engine = get_engine(url)
    platform, reviews = _synthetic_platform()
    load_platform(engine, dataclasses.replace(platform, review_logs=platform.review_logs.iloc[:0]))
    with tempfile.TemporaryDirectory(prefix="deploy_verify_") as folder:
        path = _write_review_csv(reviews, Path(folder) / "reviews.csv")
        started = time.perf_counter()
        summary = import_review_file(engine, path)
        import_seconds = time.perf_counter() - started
    if summary.n_loaded != len(reviews):
        return Outcome(False, f"imported {summary.n_loaded} of {len(reviews)} synthetic reviews in {where}: "
                              + "; ".join(f"{n} x {reason}" for reason, n in summary.reject_reasons.items()),
                       "the importer rejects reviews it should take: run the test suite (`make test`) on this build")
    rate = summary.n_loaded / import_seconds

    day = dt.datetime.now(zoneinfo.ZoneInfo(settings.SCHEDULE_TIMEZONE)).date()
    shard = learner_shards.get_partition_keys()[0]
    # In an ephemeral instance: the smoke's run stays out of the deployment's run history and its sensors.
    result = dg.materialize(
        [card_memory_states, revision_queues],
        resources={"warehouse": Warehouse(database_url=url)}, raise_on_error=False,
        partition_key=dg.MultiPartitionKey({"day": day.isoformat(), "shard": shard}),
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
    failed_checks = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    if not result.success or failed_checks:
        failures = [one_line(str(event.step_failure_data.error.message if event.step_failure_data.error else
                                 event.step_failure_data.user_failure_data.description))[:300]
                    for event in result.get_step_failure_events()]
        return Outcome(False, f"materializing card_memory_states and revision_queues for {day}, shard {shard} in {where} failed: "
                              + "; ".join(failures + [f"check {name} failed" for name in failed_checks]),
                       "the pipeline fails on fresh data: run `make test` on this build and read the run's error")

    with engine.connect() as conn:
        learner = learner_with_most_themes(conn, day)
        if learner is None:
            return Outcome(False, f"revision_queues wrote no queue for {day}, shard {shard} in {where}",
                           "the pipeline built no queue from fresh data: run `make test` on this build")
        learner_queue(conn, learner, day)  # the first read plans the statements; an app's reads are warm
        seconds = []
        for _ in range(QUEUE_READS):
            started = time.perf_counter()
            queue = learner_queue(conn, learner, day)
            seconds.append(time.perf_counter() - started)
    read_ms = statistics.median(seconds) * 1000
    detail = (f"in {where}: {summary.n_loaded:,} reviews imported at {rate:,.0f} rows/s (need >= "
              f"{MIN_IMPORT_ROWS_PER_S:,}); learner {learner}'s queue ({len(queue.themes)} theme rows) read in "
              f"{read_ms:.1f} ms, median of {QUEUE_READS} (need <= {MAX_QUEUE_READ_MS:.0f} ms)")
    if rate < MIN_IMPORT_ROWS_PER_S or read_ms > MAX_QUEUE_READ_MS:
        return Outcome(False, detail, "the warehouse is too slow for production: look for load on it "
                                      "(pg_stat_activity), a saturated disk, or a lost index (`learning-pipelines db "
                                      "verify`), then run `deploy verify` again")
    return Outcome(True, detail)


def _synthetic_platform():
    """A small simulated platform, and the first SMOKE_REVIEWS of its reviews (whole histories but the last one's)."""
    from learning_pipelines.domain.simulate import simulate_platform

    platform = simulate_platform(n_learners=100, n_concepts=200, n_themes=12, n_resources=20, days=120,
                                 mean_cards_per_learner=20, seed=20)
    reviews = platform.review_logs.sort_values(["user_id", "reviewed_at", "id"]).head(SMOKE_REVIEWS)
    if len(reviews) < SMOKE_REVIEWS:
        raise RuntimeError(f"the simulated platform has {len(reviews)} reviews, fewer than {SMOKE_REVIEWS}")
    return platform, reviews


def _write_review_csv(reviews, path: Path) -> Path:
    """The reviews as a review file the importer reads (its canonical column names)."""
    rows = reviews.rename(columns={"id": "review_id", "concept_id": "card_id", "rating": "review_rating",
                                   "reviewed_at": "review_time", "review_duration_ms": "review_duration"})
    rows["review_time"] = rows["review_time"].map(lambda moment: moment.isoformat())
    columns = ["review_id", "user_id", "card_id", "review_rating", "review_time", "review_duration", "state"]
    rows[columns].to_csv(path, index=False)
    return path


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[_Session], Outcome]
    remedy: str  # what to do when it fails, unless its outcome says more precisely


CHECKS = (
    Check("warehouse", _check_warehouse,
          f"`learning-pipelines db upgrade` with {DATABASE_URL_ENV} set to this warehouse"),
    Check("dagster_storage", _check_dagster_storage,
          "check DAGSTER_HOME and its dagster.yaml; `DAGSTER_HOME=<instance dir> dagster instance migrate` migrates "
          "the storage"),
    Check("month_partitions", _check_partitions,
          "learning_pipelines.db.partitions.create_month_partitions for this month and the next"),
    Check("daemons", _check_daemons, "start or restart dagster-daemon, and read its log"),
    Check("code_location", _check_code_location, "restart the code server and read its log"),
    Check("celery_workers", _check_celery_workers, "start the workers: `make stack` or `dagster-celery worker start`"),
    Check("metrics", _check_metrics, "start the exporter: `learning-pipelines metrics`"),
    Check("smoke_ingest", _check_smoke_ingest, "read the detail, fix, and run `deploy verify` again"),
)


# What a stack that has just started takes a few seconds to have (the daemons need the storage check first):
# `stack start` waits for these.
READINESS = tuple(check for check in CHECKS if check.name in ("dagster_storage", "daemons", "celery_workers"))


def verify(target: Target, checks: tuple[Check, ...] = CHECKS) -> Report:
    """Every check in order; a check that raises is a failed check with the error's first line, never a traceback."""
    session = _Session(target)
    results = []
    try:
        for check in checks:
            try:
                outcome = check.run(session)
            except Exception as error:
                outcome = Outcome(False, f"{type(error).__name__}: {session.reason(error)}")
            results.append(CheckResult(check.name, outcome.ok, outcome.detail,
                                       "" if outcome.ok else (outcome.remedy or check.remedy)))
    finally:
        session.close()
    return Report(target, results)


def _password(url: str) -> str | None:
    try:
        return urllib.parse.unquote(urllib.parse.urlsplit(url).password or "") or None
    except ValueError:
        return None


def _shown_url(url: str) -> str:
    """Any URL as it may be printed: its password as ***."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "(a URL that does not parse)"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else ""
