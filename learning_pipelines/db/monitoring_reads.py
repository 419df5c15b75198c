"""What the Prometheus exporter reads of the warehouse: per scrape, small figures in one pass over one connection
(the queue figures from the window builds of the last two days only); every few minutes, every learner's calendar
in pages; when the window builds they come from change, the queues by theme and a queue date's tag-quality debt.

None of these scans a big table: each reads through an index by a date or a time (queue_stats_daily's and
tag_quality_debt_log's primary keys start with queue_date, revision_queue_windows' with window_start, and it has an
index on ready_at), and what the exporter reads only when the builds change it keeps between scrapes."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, learner_calendars, partition_migration, reads, tables
from learning_pipelines.domain.revision import ALL_THEMES

# The metrics of eval_metrics_daily a dashboard plots per A/B group.
SHADOW_METRICS = ("logloss", "brier", "ece", "rmse_bins")
# A learner's current day started at most 25 hours ago (a day lasts up to 25 hours), so the window builds of the
# last two days hold every build of a day that is current now.
RECENT_BUILDS = dt.timedelta(days=2)


@dataclasses.dataclass(frozen=True)
class QueueFigures:
    due_today: int  # concepts due in the queues current now (every learner's current day), summed
    overdue: int
    built_windows: pd.DataFrame  # window_start, queue_date, learner_shard of the window builds of the last two days
    build_times: pd.DataFrame  # cutoff_at, ready_at of the window builds ready in the last day
    # window_start, queue_date, learner_shard, ready_at of the builds current now (what due_today sums)
    current_builds: pd.DataFrame
    last_build: sa.Row | None  # ready_at, late of the window build ready last (None before the first)


@dataclasses.dataclass(frozen=True)
class WarehouseFigures:
    learners_optimized: int  # learners with their own FSRS weights
    reviews: int
    rejects: int
    queues: QueueFigures | None  # None: a warehouse before migration 0013 (no window builds recorded)
    calendars_readable: bool  # learners' calendars as the recipes read them (migration 0014's time_zones) exist
    shadow_metrics: pd.DataFrame  # ab_group and SHADOW_METRICS of the latest shadow-evaluated day
    migration: dict  # partition_migration.progress_report
    latest_model: sa.Row | None  # trained_at, hr_at_10, popularity_hr_at_10 of the latest NCF model


def warehouse_figures(conn: sa.Connection, shards: list[str], now: dt.datetime) -> WarehouseFigures:
    """The figures the exporter serves at `now`; `shards`: the current learner shard keys (statistics and window
    builds under another count of shards are left out)."""
    params, shadow, models = tables.srs_user_params, tables.eval_metrics_daily, tables.ncf_models
    optimized = conn.execute(sa.select(sa.func.count()).select_from(params)
                             .where(params.c.weights.is_not(None))).scalar_one()
    queues = None
    try:
        with conn.begin_nested():
            queues = queue_figures(conn, shards, now)
    except sa.exc.SQLAlchemyError:
        pass  # a warehouse still before migration 0013 (a runbook stop): no queue figures, the rest stays
    shadow_day = conn.execute(sa.select(sa.func.max(shadow.c.day))).scalar()  # the primary key's first column
    shadow_metrics = bulk.read_frame(conn, sa.select(shadow.c.ab_group, *(shadow.c[m] for m in SHADOW_METRICS))
                                     .where(shadow.c.day == shadow_day).order_by(shadow.c.ab_group))
    latest_model = conn.execute(sa.select(models.c.trained_at, models.c.hr_at_10, models.c.popularity_hr_at_10)
                                .order_by(models.c.model_id.desc()).limit(1)).first()
    return WarehouseFigures(optimized, reads.row_count(conn, tables.review_logs),
                            reads.row_count(conn, tables.review_log_rejects), queues,
                            sa.inspect(conn).has_table(tables.time_zones.name),
                            shadow_metrics,
                            partition_migration.progress_report(conn), latest_model)


def queue_figures(conn: sa.Connection, shards: list[str], now: dt.datetime) -> QueueFigures:
    """The queues current at `now` (their window's first rollover passed, their day not ended) summed over the
    learner shards `shards`, and the window builds of those shards: of the last two days, and their build times
    of the last day. Reads only window builds of the last two days (at most 96 windows x shards x 2)."""
    stats, built = tables.queue_stats_daily, tables.revision_queue_windows
    recent_builds = (built.c.window_start >= now - RECENT_BUILDS) & built.c.learner_shard.in_(shards)
    totals = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(stats.c.due_today), 0), sa.func.coalesce(sa.func.sum(stats.c.overdue), 0))
        .select_from(stats.join(built, _of_the_build(stats, built)))
        .where(recent_builds, stats.c.theme_key == ALL_THEMES, *_current(built, now))
    ).one()
    windows = bulk.read_frame(conn, sa.select(built.c.window_start, built.c.queue_date, built.c.learner_shard)
                              .where(recent_builds))
    times = bulk.read_frame(conn, sa.select(built.c.cutoff_at, built.c.ready_at).where(
        built.c.ready_at >= now - dt.timedelta(days=1), built.c.learner_shard.in_(shards)))
    current = bulk.read_frame(conn, sa.select(built.c.window_start, built.c.queue_date, built.c.learner_shard,
                                              built.c.ready_at).where(recent_builds, *_current(built, now)))
    last = conn.execute(sa.select(built.c.ready_at, built.c.late).where(built.c.learner_shard.in_(shards))
                        .order_by(built.c.ready_at.desc()).limit(1)).first()  # ix_revision_queue_windows_ready_at
    return QueueFigures(int(totals[0]), int(totals[1]), windows, times, current, last)


def _current(built: sa.Table, now: dt.datetime) -> list:
    """Of revision_queue_windows: the builds current at `now` (their first rollover passed, their day not ended)."""
    return [built.c.first_rollover_at <= now, built.c.day_ends_at > now]


def _of_the_build(stats: sa.Table, built: sa.Table):
    return ((stats.c.window_start == built.c.window_start) & (stats.c.queue_date == built.c.queue_date)
            & (stats.c.learner_shard == built.c.learner_shard))


def current_theme_totals(conn: sa.Connection, shards: list[str], now: dt.datetime) -> pd.DataFrame:
    """theme_key, due_today, overdue summed per theme over the queues current at `now` (as queue_figures' totals,
    every theme but ALL_THEMES): the rows of queue_stats_daily of at most the current builds, through its primary
    key."""
    stats, built = tables.queue_stats_daily, tables.revision_queue_windows
    return bulk.read_frame(conn, sa.select(
        stats.c.theme_key, sa.func.sum(stats.c.due_today).label("due_today"),
        sa.func.sum(stats.c.overdue).label("overdue"))
        .select_from(stats.join(built, _of_the_build(stats, built)))
        .where(built.c.window_start >= now - RECENT_BUILDS, built.c.learner_shard.in_(shards), *_current(built, now),
               stats.c.theme_key != ALL_THEMES)
        .group_by(stats.c.theme_key))


def builds_by_queue_date(conn: sa.Connection, shards: list[str], since: dt.datetime) -> pd.DataFrame:
    """queue_date, n_builds, last_ready_at of the window builds (of the learner shards `shards`) whose window started
    at `since` or later, per queue date: what tells whether a date's queues, and so its debt, changed."""
    built = tables.revision_queue_windows
    return bulk.read_frame(conn, sa.select(
        built.c.queue_date, sa.func.count().label("n_builds"), sa.func.max(built.c.ready_at).label("last_ready_at"))
        .where(built.c.window_start >= since, built.c.learner_shard.in_(shards)).group_by(built.c.queue_date))


@dataclasses.dataclass(frozen=True)
class DateDebt:
    debt: pd.DataFrame  # reason, fallback_key, n_concepts: the date's due concepts logged as tag-quality debt
    due_today: int  # the date's due concepts, every theme (queue_stats_daily, the learner shards asked)


def date_debt(conn: sa.Connection, queue_date: dt.date, shards: list[str]) -> DateDebt:
    """One queue date's tag-quality debt and due concepts: the date's rows of tag_quality_debt_log and its
    ALL_THEMES rows of queue_stats_daily, each through its primary key (queue_date first)."""
    log, stats = tables.tag_quality_debt_log, tables.queue_stats_daily
    debt = bulk.read_frame(conn, sa.select(log.c.reason, log.c.fallback_key, sa.func.count().label("n_concepts"))
                           .where(log.c.queue_date == queue_date).group_by(log.c.reason, log.c.fallback_key))
    due = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(stats.c.due_today), 0)).where(
        stats.c.queue_date == queue_date, stats.c.learner_shard.in_(shards), stats.c.theme_key == ALL_THEMES)
    ).scalar_one()
    return DateDebt(debt, int(due))


def learner_calendar_page(conn: sa.Connection, zones: list[str], after_user_id: int | None,
                          limit: int) -> pd.DataFrame:
    """The next `limit` learners by user_id after `after_user_id` (from the first when None): user_id, zone_code
    (the index in `zones` of their time zone as every recipe reads it, learner_calendars.calendars; -1 for one
    not in `zones`), day_start_hour, created_at.

    On PostgreSQL the time zone travels as its index, so every column has a fixed width and the page is one
    binary COPY decoded by numpy (the pages cover every learner)."""
    calendars, users = learner_calendars.calendars, tables.users
    # The bound on both sides of the join, so PostgreSQL's merge join starts both at the page, not one at the first.
    page = (sa.select(calendars.c.user_id, calendars.c.timezone, calendars.c.day_start_hour, users.c.created_at)
            .select_from(calendars.join(users, users.c.user_id == calendars.c.user_id))
            .where(*([] if after_user_id is None else [calendars.c.user_id > after_user_id,
                                                         users.c.user_id > after_user_id]))
            .order_by(calendars.c.user_id).limit(limit).subquery("page"))
    if conn.dialect.name != "postgresql":
        frame = bulk.read_frame(conn, sa.select(page))
        codes = pd.Categorical(frame.pop("timezone"), categories=zones).codes
        return frame.assign(zone_code=codes)[["user_id", "zone_code", "day_start_hour", "created_at"]]
    coded = sa.values(sa.column("timezone", sa.String), sa.column("zone_code", sa.Integer),
                      name="zones").data(list(zip(zones, range(len(zones)))))
    return bulk.read_frame_fixed_width(conn, sa.select(
        page.c.user_id, sa.func.coalesce(coded.c.zone_code, -1).label("zone_code"), page.c.day_start_hour,
        page.c.created_at).select_from(page.outerjoin(coded, coded.c.timezone == page.c.timezone)))
