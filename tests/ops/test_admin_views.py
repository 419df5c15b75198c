"""The admin views the exporter serves (queues by theme, the shadow evaluation's four metrics, tag-quality debt over
the last 7 queue dates), checked against the tables on SQLite and PostgreSQL: `learning-pipelines metrics --once`
prints exactly what tests/support/admin_figures.py computes from whole tables with pandas."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from learning_pipelines import settings
from learning_pipelines.cli import main
from learning_pipelines.db import bulk, revision_queues, tables
from learning_pipelines.db.engine import get_engine
from learning_pipelines.domain import admin_figures
from learning_pipelines.domain.learner_shards import shard_keys
from learning_pipelines.domain.rollovers import BUILD_LEAD
from learning_pipelines.observability.exporter import LearningPipelinesCollector
from tests.ops.test_queue_lateness import _learners, _scrape
from tests.support.admin_figures import REASON_LABELS, admin_series, expected_series
from tests.support.queue_windows import BUILD_KEY, current_builds, register

ROOT = Path(__file__).resolve().parents[2]
SHARDS = shard_keys(settings.LEARNER_SHARDS)
# Learners far apart, so their current days are built in several windows, days and shards.
CALENDARS = [("UTC", 4), ("Asia/Tokyo", 4), ("America/New_York", 4), ("Asia/Kolkata", 4), ("Pacific/Auckland", 3)]
THEMES = [str(theme) for theme in range(1, 13)]  # 12: two fall out of the top 10
INFERRED, UNMAPPED = list(REASON_LABELS)  # the reasons domain/revision.py writes


def _write_builds(engine, builds: pd.DataFrame, seed: int, ready_at: dt.datetime | None = None,
                  day_offset: int = 0) -> None:
    """A window build per (window_start, queue_date, learner_shard) of `builds` (current_builds' rows), its day
    moved by `day_offset`, with queue statistics per theme (a different count each) and their ALL_THEMES row."""
    with engine.begin() as conn:
        for n, ((window_start, queue_date, shard), learners) in enumerate(builds.groupby(BUILD_KEY)):
            shift = pd.Timedelta(days=day_offset)
            window_start, queue_date = window_start + shift, queue_date + dt.timedelta(days=day_offset)
            due = [(seed + n * 7 + 3 * i) % 11 for i in range(len(THEMES))]
            overdue = [d // 3 for d in due]
            stats = pd.DataFrame({"window_start": window_start, "theme_key": THEMES + ["*"], "n_learners": len(learners),
                                  "due_today": due + [sum(due)], "overdue": overdue + [sum(overdue)]})
            cutoff = window_start.to_pydatetime() - BUILD_LEAD
            first_rollover = (learners["rollover_at"].min() + shift).to_pydatetime()
            ready = ready_at or cutoff + dt.timedelta(minutes=3)
            revision_queues.write_windows(conn, queue_date, stats.assign(learner_shard=shard), pd.DataFrame({
                "learner_shard": [shard],
                "window_start": [window_start], "n_learners": [len(learners)], "first_rollover_at": [first_rollover],
                "day_ends_at": [(learners["day_ends_at"].max() + shift).to_pydatetime()], "cutoff_at": [cutoff],
                "ready_at": [ready], "late": [ready > first_rollover]}))


def _write_debt(engine, queue_date: dt.date, fallbacks: list[str], reasons: list[str], first_user: int = 1) -> None:
    with engine.begin() as conn:
        bulk.bulk_insert(conn, tables.tag_quality_debt_log, pd.DataFrame({
            "queue_date": queue_date, "user_id": range(first_user, first_user + len(fallbacks)),
            "concept_id": 100, "fallback_key": fallbacks, "reason": reasons}))


def _evaluations(engine, today: dt.date) -> None:
    with engine.begin() as conn:
        bulk.bulk_insert(conn, tables.eval_metrics_daily, pd.DataFrame({
            "day": [today - dt.timedelta(days=2)] * 2 + [today - dt.timedelta(days=1)] * 2,
            "ab_group": ["BASELINE_GLOBAL", "TUNED_ELIGIBLE"] * 2, "n_reviews": 100, "n_learners": 10,
            "logloss": [0.5, 0.4, 0.45, 0.35], "brier": [0.2, 0.15, 0.18, 0.12], "ece": [0.05, 0.04, None, 0.03],
            "rmse_bins": [0.09, 0.07, 0.08, 0.06], "evaluated_at": dt.datetime.now(dt.timezone.utc)}))


def _platform(engine, now: dt.datetime) -> dt.date:
    """Learners with their current days built (and the days before, no longer current), debt on dates inside and
    outside the last 7, two days of shadow evaluation; the latest queue date built."""
    learners = _learners(CALENDARS, per_calendar=4)
    register(engine, learners)
    builds = current_builds(learners, now, settings.LEARNER_SHARDS)
    _write_builds(engine, builds, seed=1)
    _write_builds(engine, builds, seed=5, day_offset=-1)  # the day before: ended for all of them
    latest = max(builds["queue_date"])
    # 11 fallback themes on the latest date: UNMAPPED and THEME::1 the most, THEME::11 the least (cut at 10).
    fallbacks = ["UNMAPPED"] * 4 + [f"THEME::{n}" for n in range(1, 12) for _ in range(max(1, 12 - n) // 2 + 1)]
    reasons = [UNMAPPED if key == "UNMAPPED" else INFERRED for key in fallbacks]
    _write_debt(engine, latest, fallbacks, reasons)
    _write_debt(engine, latest - dt.timedelta(days=6), ["THEME::3", "UNMAPPED"], [INFERRED, "an older reason"])
    _write_debt(engine, latest - dt.timedelta(days=7), ["THEME::12"] * 30, [INFERRED] * 30)  # outside the 7 dates
    _evaluations(engine, now.date())
    return latest


def _metrics_once(url: str, tmp_path: Path, monkeypatch, capsys) -> dict[tuple, float]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    capsys.readouterr()
    assert main(["metrics", "--once", "--database-url", url]) == 0
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(capsys.readouterr().out) for s in family.samples}


def test_metrics_once_serves_the_admin_views_as_the_tables_hold_them(warehouse_url, tmp_path, monkeypatch, capsys):
    engine = get_engine(warehouse_url)
    now = dt.datetime.now(dt.timezone.utc)
    latest = _platform(engine, now)

    served = _metrics_once(warehouse_url, tmp_path, monkeypatch, capsys)

    expected = expected_series(engine, SHARDS, dt.datetime.now(dt.timezone.utc))
    assert admin_series(served) == pytest.approx(expected)
    # What the expectation covers, so the comparison above is not empty: ten of twelve themes, each kind.
    themes = {dict(labels)["theme_key"] for name, labels in served if name == "revision_queue_theme_due"}
    assert len(themes) == admin_figures.TOP_THEMES and themes < set(THEMES)
    debt = {dict(labels)["theme_key"]: v for (name, labels), v in served.items()
            if name == "tag_quality_debt_by_theme_last_7_days"}
    # Below the top 10: THEME::11 (1), and THEME::9, tied with THEME::10 (2) and after it by key.
    assert len(debt) == 10 and not {"THEME::9", "THEME::11", "THEME::12"} & debt.keys()
    assert debt["UNMAPPED"] == 5  # 4 on the latest date, 1 six days before it
    by_reason = {dict(labels)["reason"]: v for (name, labels), v in served.items()
                 if name == "tag_quality_debt_last_7_days"}
    assert by_reason["other"] == 1 and by_reason["unmapped"] == 4
    assert sum(by_reason.values()) == sum(debt.values()) + 2 + 1
    assert served[("fsrs_shadow_logloss", (("ab_group", "TUNED_ELIGIBLE"),))] == 0.35  # the latest day's
    assert ("fsrs_shadow_ece", (("ab_group", "BASELINE_GLOBAL"),)) not in served  # not computed that day
    assert served[("revision_queue_due_last_7_days", ())] > 0 and latest in (now.date(), now.date() + dt.timedelta(1))
    assert served[("tag_quality_debt_alert_share", ())] == settings.DEFAULT_TAG_DEBT_ALERT_SHARE


def test_a_dates_debt_is_read_again_when_its_builds_change_not_on_every_scrape(warehouse_url):
    engine = get_engine(warehouse_url)
    now = dt.datetime.now(dt.timezone.utc)
    latest = _platform(engine, now)
    collector = LearningPipelinesCollector(dg.DagsterInstance.ephemeral(), engine, clock=lambda: now)
    unmapped = ("tag_quality_debt_last_7_days", (("reason", "unmapped"),))
    assert _scrape(collector)[unmapped] == 4

    _write_debt(engine, latest, ["UNMAPPED"] * 3, [UNMAPPED] * 3, first_user=1000)
    assert _scrape(collector)[unmapped] == 4, "no build changed: the date's debt as read before"
    later = now + dt.timedelta(minutes=1)
    rebuilt = pd.DataFrame({"user_id": [1], "learner_shard": [SHARDS[0]], "queue_date": [latest],
                            "rollover_at": [pd.Timestamp(later)], "day_ends_at": [pd.Timestamp(later + dt.timedelta(1))],
                            "window_start": [pd.Timestamp(later + BUILD_LEAD)]})
    _write_builds(engine, rebuilt, seed=2, ready_at=later)
    assert _scrape(collector)[unmapped] == 7
    assert _scrape(LearningPipelinesCollector(dg.DagsterInstance.ephemeral(), engine, clock=lambda: now))[unmapped] == 7


@pytest.mark.parametrize("value", ["0", "1.5", "5%", "nan"])
def test_a_bad_alert_share_is_refused_naming_the_variable(value):
    with pytest.raises(ValueError, match=settings.TAG_DEBT_ALERT_SHARE_ENV):
        settings.tag_debt_alert_share(value)


def test_the_alert_share_comes_from_the_environment(monkeypatch, empty_sqlite_url):
    monkeypatch.setenv(settings.TAG_DEBT_ALERT_SHARE_ENV, "0.2")
    collector = LearningPipelinesCollector(dg.DagsterInstance.ephemeral(), None)
    assert _scrape(collector)[("tag_quality_debt_alert_share", ())] == 0.2
    assert settings.tag_debt_alert_share("") == settings.DEFAULT_TAG_DEBT_ALERT_SHARE
