"""A writer of learners' rows whose transaction loses a race (deadlock, serialization failure) is retried; any
other error fails its step at once."""

import pytest
import sqlalchemy as sa

from learning_pipelines import pause_points
from learning_pipelines.db.engine import get_engine
from learning_pipelines.db.lost_races import lost_a_race
from learning_pipelines.definitions import defs
from tests.conftest import _admin_engine
from tests.support import faults

PER_LEARNER_ASSETS = {"revision_queues", "recommendations", "fsrs_parameters", "card_memory_states", "ncf_model"}


def _server_error(url: str, sqlstate: str) -> None:
    """Raises the error PostgreSQL reports with `sqlstate`, as the server sends it (a real driver exception)."""
    with get_engine(url).connect() as conn:
        conn.execute(sa.text(f"DO $$ BEGIN RAISE EXCEPTION 'lost a race' USING ERRCODE = '{sqlstate}'; END $$"))


def _fail_once(url: str, sqlstate: str):
    raised = []

    def at_point(point: str) -> None:
        if not raised:
            raised.append(point)
            _server_error(url, sqlstate)
    return at_point


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
def test_a_deadlock_or_serialization_failure_is_retried_and_the_step_succeeds(postgres_template, today, tmp_path,
                                                                              sqlstate):
    writer = faults.WRITERS["revision_queues"]
    with faults.copy_of(postgres_template, _admin_engine()) as url:
        pause_points.stop_at("revision_queues.day_cleared", _fail_once(url, sqlstate))
        try:
            result = faults.run_writer(writer, url, today, str(tmp_path))
        finally:
            pause_points.clear()
        assert result.success
        assert [e.event_type_value for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert sum(len(frame) for frame in faults.written_rows(url, writer).values())


def test_any_other_database_error_fails_the_step_without_a_retry(postgres_template, today, tmp_path):
    writer = faults.WRITERS["revision_queues"]
    with faults.copy_of(postgres_template, _admin_engine()) as url:
        pause_points.stop_at("revision_queues.day_cleared", _fail_once(url, "23505"))  # a unique violation
        try:
            result = faults.run_writer(writer, url, today, str(tmp_path))
        finally:
            pause_points.clear()
        assert not result.success
        assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_only_those_two_errors_count_as_a_lost_race(postgres_available, empty_postgres_url):
    for sqlstate, lost in (("40P01", True), ("40001", True), ("23505", False), ("57P01", False)):
        with pytest.raises(sa.exc.DBAPIError) as raised:
            _server_error(empty_postgres_url, sqlstate)
        assert lost_a_race(raised.value) is lost
    assert not lost_a_race(ValueError("no database here"))


def test_every_asset_writing_learners_rows_retries_lost_races():
    graph = defs().resolve_asset_graph()
    for assets_def in graph.assets_defs:
        names = {key.to_user_string() for key in assets_def.keys}
        if names & PER_LEARNER_ASSETS:
            assert getattr(assets_def.op.compute_fn.decorated_fn, "retries_lost_races", False), names
