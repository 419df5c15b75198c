"""The dashboard's admin views of the warehouse: the queues current now by theme, the shadow evaluation's metrics
per A/B group, and tag-quality debt over the last 7 queue dates, by reason and by theme.

The per-theme and debt figures read more rows than the rest of a scrape (every theme of every current build; a
queue date's whole debt log), and they change only when a window build lands or a day ends. So they are read
again only then: the queues by theme when the set of builds current now changed, a queue date's debt when its
builds did (their number or the latest ready_at); other scrapes serve what was read. Rows removed without a new
build (`learners forget`) leave the kept figures until the date's next build.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import threading
from collections.abc import Iterator

import pandas as pd
import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily

from learning_pipelines.db import monitoring_reads
from learning_pipelines.domain import admin_figures

# Window builds read to find the last DEBT_DAYS queue dates and whether they changed: a queue date's windows start
# from 14 hours before it (UTC+14) to a day after it, so 9 days of windows hold every build of the last 7 dates.
DEBT_BUILDS = dt.timedelta(days=admin_figures.DEBT_DAYS + 2)
THEME_DUE = "revision_queue_theme_due"
SHADOW_FAMILIES = {metric: f"fsrs_shadow_{metric}" for metric in monitoring_reads.SHADOW_METRICS}
DEBT_BY_REASON, DEBT_BY_THEME = "tag_quality_debt_last_7_days", "tag_quality_debt_by_theme_last_7_days"
DUE_7_DAYS, ALERT_SHARE = "revision_queue_due_last_7_days", "tag_quality_debt_alert_share"
METRIC_NAMES = (THEME_DUE, *SHADOW_FAMILIES.values(), DEBT_BY_REASON, DEBT_BY_THEME, DUE_7_DAYS, ALERT_SHARE)


@dataclasses.dataclass(frozen=True)
class AdminFigures:
    theme_totals: pd.DataFrame  # theme_key, due_today, overdue of the queues current now, every theme
    debt: pd.DataFrame  # reason, fallback_key, n_concepts over the last DEBT_DAYS queue dates
    due_last_days: int  # concepts due on those dates (every theme)


class AdminViews:
    """The figures, each read again only when the window builds it comes from changed."""

    def __init__(self):
        self._lock = threading.Lock()  # a scrape that outlives Prometheus's timeout still runs when the next comes
        self._themes: tuple[frozenset, pd.DataFrame] | None = None  # current builds read -> their theme totals
        self._dates: dict[dt.date, tuple[tuple, monitoring_reads.DateDebt]] = {}  # by queue date, with its builds

    def read(self, conn: sa.Connection, queues: monitoring_reads.QueueFigures, shards: list[str],
             now: dt.datetime) -> AdminFigures:
        with self._lock:
            current = frozenset(queues.current_builds.itertuples(index=False, name=None))
            if self._themes is None or self._themes[0] != current:
                self._themes = current, monitoring_reads.current_theme_totals(conn, shards, now)
            builds = monitoring_reads.builds_by_queue_date(conn, shards, now - DEBT_BUILDS).set_index("queue_date")
            dates = admin_figures.debt_dates(list(builds.index))
            for day in dates:
                seen = tuple(builds.loc[day]) if day in builds.index else ()
                if day not in self._dates or self._dates[day][0] != seen:
                    self._dates[day] = seen, monitoring_reads.date_debt(conn, day, shards)
            self._dates = {day: self._dates[day] for day in dates}
            kept = [debt for _, debt in self._dates.values()]
            debt = pd.concat([d.debt for d in kept] or [pd.DataFrame(columns=["reason", "fallback_key", "n_concepts"])],
                             ignore_index=True)
            return AdminFigures(self._themes[1], debt, sum(d.due_today for d in kept))


def families(figures: AdminFigures | None, shadow_metrics: pd.DataFrame) -> Iterator:
    """The admin views' metric families of the warehouse (`figures` None: a warehouse before migration 0013, no
    samples of the queue and debt families)."""
    due = GaugeMetricFamily(THEME_DUE, f"Concepts due in the queues current now (as revision_queue_due) of the "
                            f"{admin_figures.TOP_THEMES} themes with most due today, by kind", labels=["theme_key", "kind"])
    by_reason = GaugeMetricFamily(DEBT_BY_REASON, "Due concepts logged as tag-quality debt over the last "
                                  f"{admin_figures.DEBT_DAYS} queue dates, by reason", labels=["reason"])
    by_theme = GaugeMetricFamily(DEBT_BY_THEME, "Due concepts logged as tag-quality debt over the last "
                                 f"{admin_figures.DEBT_DAYS} queue dates, of the {admin_figures.TOP_THEMES} fallback "
                                 "themes with most", labels=["theme_key"])
    due_days = GaugeMetricFamily(DUE_7_DAYS, f"Concepts due over the last {admin_figures.DEBT_DAYS} queue dates "
                                 "(every theme): what tag-quality debt is a share of")
    if figures is not None:
        for theme in admin_figures.top_themes(figures.theme_totals, "due_today").itertuples():
            due.add_metric([theme.theme_key, "due_today"], int(theme.due_today))
            due.add_metric([theme.theme_key, "overdue"], int(theme.overdue))
        for reason, n_concepts in admin_figures.debt_by_reason(figures.debt).items():
            by_reason.add_metric([reason], n_concepts)
        for theme in admin_figures.debt_by_theme(figures.debt).itertuples():
            by_theme.add_metric([theme.theme_key], int(theme.n_concepts))
        due_days.add_metric([], figures.due_last_days)
    yield from (due, by_reason, by_theme, due_days)
    for metric, name in SHADOW_FAMILIES.items():
        family = GaugeMetricFamily(name, f"Latest daily shadow-evaluation {metric} per A/B group", labels=["ab_group"])
        for group, value in shadow_metrics[["ab_group", metric]].itertuples(index=False):
            if value is not None and math.isfinite(value):
                family.add_metric([group], float(value))
        yield family


def alert_share_family(alert_share: float) -> GaugeMetricFamily:
    """The TagQualityDebtHigh alert's threshold (configuration: served whether the warehouse answers or not)."""
    share = GaugeMetricFamily(ALERT_SHARE, "Share of due concepts that tag-quality debt over the last "
                              f"{admin_figures.DEBT_DAYS} queue dates may reach before TagQualityDebtHigh fires")
    share.add_metric([], alert_share)
    return share
