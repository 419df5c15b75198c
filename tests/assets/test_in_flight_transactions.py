"""Which transactions card_memory_states waits for on PostgreSQL: those of the warehouse database only, where its
role sees every session; the whole server's otherwise, and then the run's metadata and `deploy verify` say so."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from learning_pipelines.db import memory_state_progress as progress_store
from learning_pipelines.db import migrate
from learning_pipelines.db.engine import get_engine
from learning_pipelines.defs.card_memory_states import card_memory_states
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.demo import load_platform
from learning_pipelines.deploy import verify
from learning_pipelines.domain.simulate import simulate_platform
from tests.conftest import TEST_PG_URL, scratch_postgres_database

AS_OF = dt.datetime(2026, 3, 31, 12, tzinfo=dt.timezone.utc)


def _admin_engine() -> sa.Engine:
    """The test server as its superuser, for roles and their grants."""
    return sa.create_engine(TEST_PG_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@pytest.fixture
def warehouse(empty_postgres_url) -> str:
    migrate.upgrade(empty_postgres_url)
    load_platform(get_engine(empty_postgres_url), simulate_platform(
        n_learners=4, n_concepts=10, n_resources=5, days=20, mean_cards_per_learner=5, as_of=AS_OF, seed=3))
    return empty_postgres_url


@pytest.fixture
def other_database(postgres_available) -> str:
    """Another database on the same server (as Dagster's own storage is in `make stack`)."""
    with scratch_postgres_database() as url:
        yield url


@contextlib.contextmanager
def _write_left_open(url: str, later_commit: bool = True):
    """A transaction of `url`'s database that has written (its xid assigned) and stays open; yields its xid.

    later_commit: a transaction with a higher xid commits meanwhile, so the open one lies below a snapshot's xmax
    and is listed by pg_snapshot_xip; without it, the open one is the newest transaction: PostgreSQL leaves it out
    of the snapshot's list (ids from xmax on are not listed), although its rows are just as invisible."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn, engine.connect() as other:
            conn.execute(sa.text("CREATE TABLE IF NOT EXISTS lp_scratch_writes (x int)"))
            conn.commit()
            conn.execute(sa.text("INSERT INTO lp_scratch_writes VALUES (1)"))
            xid = conn.execute(sa.text("SELECT pg_current_xact_id()::text")).scalar_one()
            if later_commit:
                other.execute(sa.text("SELECT pg_current_xact_id()"))
                other.commit()
            yield xid
            conn.rollback()
    finally:
        engine.dispose()


def _high_water(url: str) -> progress_store.HighWater:
    with get_engine(url).connect() as conn:
        return progress_store.high_water(conn)


def _materialize(url: str) -> dict:
    result = dg.materialize([card_memory_states], resources={"warehouse": Warehouse(database_url=url)})
    return {k: v.value for k, v in result.asset_materializations_for_node("card_memory_states")[0].metadata.items()}


def _progress(url: str) -> progress_store.Progress:
    with get_engine(url).connect() as conn:
        return progress_store.read_progress(conn)


def test_a_transaction_open_in_another_database_does_not_hold_the_states_back(warehouse, other_database):
    with _write_left_open(other_database) as elsewhere:
        high = _high_water(warehouse)
        assert elsewhere not in high.in_flight
        assert high.in_flight_scope == progress_store.IN_FLIGHT_DATABASE
        run = _materialize(warehouse)  # a first run: before, it waited FIRST_RUN_SETTLE for that transaction
    assert run["in_flight_transactions_from"] == progress_store.IN_FLIGHT_DATABASE
    progress = _progress(warehouse)
    assert progress.covered_seq == progress.applied_seq == high.seq > 0, "covered_seq does not lag"
    assert elsewhere not in progress.pending_xids


def test_a_transaction_open_in_the_warehouse_is_still_in_flight(warehouse, other_database):
    with _write_left_open(other_database) as elsewhere, _write_left_open(warehouse) as here, \
            _write_left_open(warehouse, later_commit=False) as newest:
        high = _high_water(warehouse)
    assert here in high.in_flight and elsewhere not in high.in_flight
    assert newest in high.in_flight, "the newest transaction, above the snapshot's xmax, counts too"


@pytest.fixture
def role_without_stats(warehouse):
    """The warehouse's URL as a new LOGIN role that may read and write its tables, but is neither a superuser nor a
    member of pg_read_all_stats; dropped afterwards."""
    role = f"lp_test_role_{uuid.uuid4().hex[:10]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
    owner = sa.create_engine(warehouse, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.execute(sa.text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'))
        conn.execute(sa.text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"'))
    url = sa.engine.make_url(warehouse).set(username=role).render_as_string(hide_password=False)
    try:
        yield role, url
    finally:
        get_engine(url).dispose()
        with owner.connect() as conn:
            conn.execute(sa.text(f'DROP OWNED BY "{role}"'))  # its grants in this database
        owner.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP ROLE "{role}"'))


def _warehouse_check(url: str) -> verify.CheckResult:
    target = verify.Target(dagster_home=Path("."), warehouse_url=url, broker_url="pyamqp://", queue="q", min_workers=1,
                           metrics_url="http://127.0.0.1:1/metrics", code_server=("127.0.0.1", 1), run_dir=None,
                           origins={})
    (check,) = verify.verify(target, tuple(c for c in verify.CHECKS if c.name == "warehouse")).checks
    return check


def test_a_role_that_cannot_see_other_sessions_counts_the_whole_server_and_says_so(
        warehouse, other_database, role_without_stats):
    role, url = role_without_stats
    with _write_left_open(other_database) as elsewhere:  # the postgres role's: its xid reads NULL for `role`
        high = _high_water(url)
    assert elsewhere in high.in_flight, "without pg_read_all_stats the cluster-wide list is kept"
    assert high.in_flight_scope == progress_store.IN_FLIGHT_SERVER

    _materialize(warehouse)  # a first run counting the whole server would wait for any transaction open on it
    run = _materialize(url)
    assert run["in_flight_transactions_from"] == progress_store.IN_FLIGHT_SERVER
    check = _warehouse_check(url)
    assert check.ok and progress_store.IN_FLIGHT_SERVER in check.detail
    assert f"GRANT pg_read_all_stats TO {role}" in check.detail
    as_owner = _warehouse_check(warehouse).detail
    assert as_owner.endswith(progress_store.IN_FLIGHT_DATABASE) and "GRANT" not in as_owner

    with _admin_engine().connect() as conn:  # the remedy the check names
        conn.execute(sa.text(f'GRANT pg_read_all_stats TO "{role}"'))
    try:
        with _write_left_open(other_database) as elsewhere:
            high = _high_water(url)
        assert elsewhere not in high.in_flight and high.in_flight_scope == progress_store.IN_FLIGHT_DATABASE
        granted = _warehouse_check(url).detail
        assert granted.endswith(progress_store.IN_FLIGHT_DATABASE) and "GRANT" not in granted
    finally:
        with _admin_engine().connect() as conn:
            conn.execute(sa.text(f'REVOKE pg_read_all_stats FROM "{role}"'))
