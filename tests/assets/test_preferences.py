"""Writing learner preferences: NaN and infinities are refused before the database sees them."""

import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.db.preferences import write_learning_prefs
from learning_pipelines.domain.revision import InvalidPreference


@pytest.fixture
def two_learners(warehouse_engine):
    with warehouse_engine.begin() as conn:
        bulk.bulk_insert(conn, tables.users, pd.DataFrame({"user_id": [1, 2]}))
    return warehouse_engine


def _stored(engine) -> list[tuple]:
    prefs = tables.user_learning_prefs
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(
            sa.select(prefs.c.user_id, prefs.c.spacing_multiplier, prefs.c.retention_target_override)
            .order_by(prefs.c.user_id))]


@pytest.mark.parametrize("prefs, problem", [
    ({"retention_target_override": [0.8, float("nan")]}, "user 2: retention_target_override nan is not a finite number"),
    ({"spacing_multiplier": [1.0, float("nan")]}, "user 2: spacing_multiplier nan is not a finite number"),
    ({"spacing_multiplier": [float("inf"), 1.0]}, "user 1: spacing_multiplier inf is not a finite number"),
    ({"retention_target_override": [float("-inf"), 0.8]}, "user 1: retention_target_override -inf is not a finite"),
])
def test_nan_or_infinite_preferences_are_refused_naming_the_learner_and_nothing_is_written(two_learners, prefs, problem):
    with pytest.raises(InvalidPreference, match=problem):
        with two_learners.begin() as conn:
            write_learning_prefs(conn, pd.DataFrame({"user_id": [1, 2]} | prefs))
    assert _stored(two_learners) == []


def test_an_unset_retention_target_is_stored_as_null(two_learners):
    with two_learners.begin() as conn:
        write_learning_prefs(conn, pd.DataFrame({"user_id": [1, 2],
                                                 "retention_target_override": pd.array([None, 0.8], dtype="Float64")}))
    assert _stored(two_learners) == [(1, 1.0, None), (2, 1.0, 0.8)]
