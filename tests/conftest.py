"""Real databases for tests: a migrated SQLite file, and a fresh database on the test PostgreSQL."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

# Four learner shards keep the in-process optimizations short; the default (16) is pinned in test_definitions.
os.environ.setdefault("LEARNING_PIPELINES_LEARNER_SHARDS", "4")

from learning_pipelines.db import migrate
from learning_pipelines.db.engine import get_engine

TEST_PG_URL = os.environ.get("LEARNING_PIPELINES_TEST_DATABASE_URL",
                             "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ANKI_CSV = SHARED_DATA / "fsrs" / "anki_one_learner_revlog.csv"


TEST_BROKER_URL = os.environ.get("LEARNING_PIPELINES_TEST_BROKER", "pyamqp://guest:guest@127.0.0.1:5672//")


def _admin_engine() -> sa.Engine:
    return sa.create_engine(TEST_PG_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def _postgres_reachable() -> str | None:
    try:
        with _admin_engine().connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return None
    except sa.exc.OperationalError as error:
        return str(error).splitlines()[0]


def _skip_or_fail(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (under CI a missing service is a failure)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_available() -> None:
    problem = _postgres_reachable()
    if problem:
        _skip_or_fail(f"PostgreSQL at {TEST_PG_URL} unreachable: {problem}")


@pytest.fixture(scope="session")
def rabbitmq_available() -> None:
    import kombu

    try:
        with kombu.Connection(TEST_BROKER_URL, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as error:  # noqa: BLE001  (kombu raises the transport's own errors)
        shown = kombu.utils.url.maybe_sanitize_url(TEST_BROKER_URL)
        _skip_or_fail(f"RabbitMQ at {shown} unreachable: {str(error).splitlines()[0]}")


@contextlib.contextmanager
def scratch_postgres_database() -> Iterator[str]:
    """The URL of a brand-new database on the test server, dropped afterwards."""
    name = f"lp_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(TEST_PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def empty_postgres_url(postgres_available) -> str:
    """A brand-new database on the test server, dropped afterwards."""
    with scratch_postgres_database() as url:
        yield url


@pytest.fixture
def empty_sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    yield url
    get_engine(url).dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request) -> str:
    """A warehouse migrated to head, on SQLite and on PostgreSQL."""
    url = request.getfixturevalue("empty_sqlite_url" if request.param == "sqlite" else "empty_postgres_url")
    migrate.upgrade(url)
    return url


@pytest.fixture
def warehouse_engine(warehouse_url) -> sa.Engine:
    return get_engine(warehouse_url)


@pytest.fixture
def anki_csv() -> Path:
    if not ANKI_CSV.exists():
        pytest.skip(f"shared data not found at {ANKI_CSV} (a user's checkout has no ../shared/data)")
    return ANKI_CSV


# Longer than any test that builds the day's queues takes.
_LONGEST_QUEUE_TEST = dt.timedelta(minutes=5)


@pytest.fixture
def now() -> dt.datetime:
    """The current UTC instant (the schedule's zone in tests), for tests that build today's queues. Their runs
    refuse a day that has passed by the time they start, so a test that would straddle midnight first waits
    for the new day."""
    instant = dt.datetime.now(dt.timezone.utc)
    midnight = dt.datetime.combine(instant.date() + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    if midnight - instant < _LONGEST_QUEUE_TEST:
        time.sleep((midnight - instant).total_seconds() + 1)
        instant = dt.datetime.now(dt.timezone.utc)
    return instant


@pytest.fixture
def today(now) -> dt.date:
    return now.date()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread_per_test_process() -> Iterator[None]:
    """torch (NCF) keeps to one thread in each test process and in the processes the tests start (the CLI, code
    servers): pytest-xdist already runs one test process per core, and torch's OpenMP threads on top of that spin
    waiting for siblings that have no core. ncf_model on the 150-learner demo took 53 s of CPU with 2 threads on 2
    busy cores, 5 s with 1, for the same model and scores; test_ncf.py 262 s of CPU, 53 s."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # read when a process loads torch (test_ncf.py loads it at collection)
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch else None
        if torch:
            torch.set_num_threads(1)
        yield
        if torch and threads:
            torch.set_num_threads(threads)


# Warehouses prepared for the fault-injection harness (tests/support/faults.py), copied per scenario.
@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('faults') / 'template.db'}"
    from tests.support.faults import prepare_template

    prepare_template(url)
    return url


@pytest.fixture(scope="session")
def postgres_template(postgres_available):
    from tests.support.faults import prepare_template

    with scratch_postgres_database() as url:
        prepare_template(url)
        yield url


def pytest_addoption(parser) -> None:
    parser.addoption("--faults", action="store_true",
                     help="also run the fault-injection matrix (tests marked faults; `make test-faults`)")


def pytest_collection_modifyitems(config, items) -> None:
    if config.getoption("--faults"):
        return
    matrix = [item for item in items if item.get_closest_marker("faults")]
    if matrix:
        config.hook.pytest_deselected(items=matrix)
        items[:] = [item for item in items if not item.get_closest_marker("faults")]
