"""Faults at the pause points of every writer of learners' rows (tests/support/faults.py): a learner forgotten there stays
forgotten; a session terminated or a process killed there leaves nothing half-written, and the re-run equals an
uninterrupted run. One point per writer runs in `make test`; the whole matrix with `make test-faults`."""

import pytest

from tests.conftest import _admin_engine
from tests.support import faults


@pytest.fixture(params=["sqlite", "postgresql"])
def template(request):
    """(the prepared warehouse's URL, an admin engine to copy it with: None on SQLite)."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_template"), None
    return request.getfixturevalue("postgres_template"), _admin_engine()


def _cases(writer_points):
    return [pytest.param(writer.name, point, id=f"{writer.name}@{point.split('.', 1)[1]}")
            for writer in faults.WRITERS.values() for point in writer_points(writer)]


FIRST_WRITE_POINTS = {"revision_queues": "revision_queues.day_cleared", "recommendations": "recommendations.ranked",
                      "fsrs_parameters": "fsrs_parameters.fitted", "card_memory_states": "card_memory_states.work_read",
                      "ncf_model": "ncf_model.trained"}


@pytest.mark.parametrize("writer, point", _cases(lambda writer: [FIRST_WRITE_POINTS[writer.name]]))
def test_a_learner_forgotten_while_a_writer_runs_stays_forgotten(postgres_template, writer, point, today, tmp_path):
    faults.forget_scenario(faults.WRITERS[writer], postgres_template, _admin_engine(), point, today, str(tmp_path))


@pytest.mark.faults
@pytest.mark.parametrize("writer, point", _cases(lambda writer: writer.points))
def test_forget_at_every_point(template, writer, point, today, tmp_path):
    url, admin = template
    faults.forget_scenario(faults.WRITERS[writer], url, admin, point, today, str(tmp_path))


@pytest.mark.faults
@pytest.mark.parametrize("writer, point", _cases(lambda writer: writer.points))
def test_a_session_terminated_at_every_point(postgres_template, writer, point, today, tmp_path):
    faults.interrupted_scenario(faults.WRITERS[writer], postgres_template, _admin_engine(), point, "terminate", today,
                                str(tmp_path / "models"), tmp_path)


@pytest.mark.faults
@pytest.mark.parametrize("writer, point", _cases(lambda writer: writer.points))
def test_a_process_killed_at_every_point(template, writer, point, today, tmp_path):
    url, admin = template
    faults.interrupted_scenario(faults.WRITERS[writer], url, admin, point, "kill", today, str(tmp_path / "models"),
                                tmp_path)


def test_every_writer_and_forget_follow_one_table_order():
    from learning_pipelines.db import learner_locks, revision_queues, tables

    with_learners = {table for table in tables.metadata.tables.values() if "user_id" in table.c}
    order = learner_locks.LEARNER_TABLE_ORDER
    assert set(order) == with_learners and len(order) == len(with_learners), "every table with learners' rows, once"
    assert order[-1] is tables.users, "forget deletes users last, after every table that refers to it"
    assert list(revision_queues.LEARNER_TABLES) == learner_locks.in_lock_order(revision_queues.LEARNER_TABLES)


def test_a_shard_and_forget_clearing_the_same_day_do_not_deadlock(postgres_template, today, tmp_path):
    # The shard has deleted the day's revision_queue_theme rows of its learners and not yet the others; forget
    # deleted those tables in the other order, and one of the two was aborted with DeadlockDetected.
    faults.forget_scenario(faults.WRITERS["revision_queues"], postgres_template, _admin_engine(),
                           "revision_queues.cleared_revision_queue_theme", today, str(tmp_path))
