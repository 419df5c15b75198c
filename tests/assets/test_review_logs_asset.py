import datetime as dt

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk
from learning_pipelines.db.tables import review_log_intervals, review_log_rejects, review_logs
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.review_logs import (
    no_future_reviews,
    reject_rate_below_threshold,
    review_log_months,
    review_logs_nightly,
)
from learning_pipelines.defs.review_logs import review_logs as review_logs_asset
from learning_pipelines.ingest.importer import import_review_file

REVIEW_LOGS_AND_CHECKS = [review_logs_asset, reject_rate_below_threshold, no_future_reviews]


def _materialize(url: str, month: str, raise_on_error: bool = True, also=()) -> dg.ExecuteInProcessResult:
    return dg.materialize([*REVIEW_LOGS_AND_CHECKS, *also], resources={"warehouse": Warehouse(database_url=url)},
                          partition_key=month, raise_on_error=raise_on_error)


def _frame(engine, statement) -> pd.DataFrame:
    with engine.connect() as conn:
        return bulk.read_frame(conn, statement)


def _expected_intervals(anki_csv) -> pd.DataFrame:
    """Independent of the pipeline: learner days start at 04:00 UTC for this learner (user defaults)."""
    raw = pd.read_csv(anki_csv)
    raw["reviewed_at"] = pd.to_datetime(raw["review_time"], utc=True, format="ISO8601")
    raw["day"] = (raw["reviewed_at"] - pd.Timedelta(hours=4)).dt.floor("D")
    raw = raw.sort_values(["card_id", "reviewed_at"])
    raw["review_number"] = raw.groupby("card_id").cumcount() + 1
    raw["elapsed_days"] = (raw["day"] - raw.groupby("card_id")["day"].shift(1)).dt.days
    return raw


def test_a_month_gets_card_histories_that_continue_across_months(warehouse_url, warehouse_engine, anki_csv):
    import_review_file(warehouse_engine, anki_csv, user_id=1, register_unknown=True)
    expected = _expected_intervals(anki_csv)

    for month in ("2024-08-01", "2024-09-01"):
        result = _materialize(warehouse_url, month)
        metadata = result.asset_materializations_for_node("review_logs")[0].metadata
        in_month = expected[expected["reviewed_at"].dt.strftime("%Y-%m-01") == month]
        assert metadata["dagster/row_count"].value == len(in_month)
        assert metadata["n_cards"].value == in_month["card_id"].nunique()
        assert all(e.passed for e in result.get_asset_check_evaluations())

    written = _frame(warehouse_engine, sa.select(review_log_intervals))
    september = expected[expected["reviewed_at"].dt.strftime("%Y-%m") == "2024-09"]
    assert len(september) == 5584
    merged = september.merge(written, left_on=["card_id", "reviewed_at"], right_on=["concept_id", "reviewed_at"])
    assert len(merged) == len(september)
    assert (merged["review_number_x"] == merged["review_number_y"]).all()
    pd.testing.assert_series_equal(merged["elapsed_days_x"].astype("Int64"), merged["elapsed_days_y"].astype("Int64"),
                                   check_names=False)
    assert merged["review_number_y"].max() > 10  # September's cards carry their history from March on


def test_rematerializing_a_month_is_idempotent(warehouse_url, warehouse_engine, anki_csv):
    import_review_file(warehouse_engine, anki_csv, user_id=1, register_unknown=True)
    _materialize(warehouse_url, "2024-07-01")
    first = _frame(warehouse_engine, sa.select(review_log_intervals).order_by(review_log_intervals.c.review_id))
    _materialize(warehouse_url, "2024-07-01")
    second = _frame(warehouse_engine, sa.select(review_log_intervals).order_by(review_log_intervals.c.review_id))
    assert len(first) > 1000
    pd.testing.assert_frame_equal(first, second)


def _insert_raw(engine, rows: list[dict]) -> None:
    """What another writer (the app) might put in the table, bypassing the importers."""
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO users (user_id) VALUES (1)"))
        conn.execute(sa.text("INSERT INTO concepts (concept_id, name) VALUES (1, 'c'), (2, 'd')"))
        bulk.insert_review_logs(conn, pd.DataFrame(rows))


def _row(review_id, when, duration=4000, concept=1):
    return {"id": review_id, "user_id": 1, "concept_id": concept, "rating": 3, "reviewed_at": when,
            "review_duration_ms": duration, "state": 1}


def test_bad_rows_in_the_warehouse_are_quarantined_and_good_rows_kept(warehouse_url, warehouse_engine):
    now = dt.datetime.now(dt.timezone.utc)
    soon = now + dt.timedelta(minutes=10)
    month_start = soon.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    good = [_row(i, month_start + dt.timedelta(minutes=i), concept=1 + i % 2) for i in range(1, 41)]
    future = _row(100, soon + dt.timedelta(minutes=1))
    idle = _row(101, month_start + dt.timedelta(hours=1), duration=5 * 3_600_000)
    _insert_raw(warehouse_engine, [*good, future, idle])

    result = _materialize(warehouse_url, month_start.strftime("%Y-%m-01"))

    metadata = result.asset_materializations_for_node("review_logs")[0].metadata
    assert metadata["n_quarantined_now"].value == 2
    assert metadata["dagster/row_count"].value == len(good)
    remaining = set(_frame(warehouse_engine, sa.select(review_logs.c.id))["id"])
    assert remaining == {r["id"] for r in good}
    rejects = _frame(warehouse_engine, sa.select(review_log_rejects).order_by(review_log_rejects.c.review_id))
    assert rejects["review_id"].tolist() == [100, 101]
    assert "is in the future" in rejects["reason"].iloc[0]
    assert "over 3600000 ms" in rejects["reason"].iloc[1]
    assert rejects["source"].str.startswith("review_logs asset, partition").all()
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["no_future_reviews"].passed
    assert checks["reject_rate_below_threshold"].passed  # 2 of 42 is under 5%
    # Running again finds nothing new to quarantine.
    again = _materialize(warehouse_url, month_start.strftime("%Y-%m-01"))
    assert again.asset_materializations_for_node("review_logs")[0].metadata["n_quarantined_now"].value == 0


def test_reject_rate_check_fails_when_a_month_is_mostly_bad(warehouse_url, warehouse_engine):
    month_start = dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc)
    rows = [_row(i, month_start + dt.timedelta(hours=i), duration=(10 * 3_600_000 if i % 3 else 4000))
            for i in range(1, 31)]
    _insert_raw(warehouse_engine, rows)

    @dg.asset(deps=[review_logs_asset], partitions_def=review_log_months)
    def downstream_of_review_logs() -> None:
        pass

    result = _materialize(warehouse_url, "2024-02-01", raise_on_error=False, also=[downstream_of_review_logs])
    check = {e.check_name: e for e in result.get_asset_check_evaluations()}["reject_rate_below_threshold"]
    assert not check.passed
    assert check.metadata["reject_rate"].value == pytest.approx(20 / 30)
    assert result.asset_materializations_for_node("review_logs")  # the month is written, and flagged
    assert not result.asset_materializations_for_node("downstream_of_review_logs")  # the check blocks


def test_nightly_schedule_requests_the_current_month():
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 22, 1, 0, tzinfo=dt.timezone.utc))
    request = review_logs_nightly(context)
    assert request.partition_key == "2026-11-01"
    assert request.run_key == "review_logs:2026-11-22"
    assert review_logs_nightly.cron_schedule == "0 1 * * *"
