"""A Prometheus collector that reads everything it reports from storage.

Counters and histograms are derived from Dagster's run storage and event log. Finished runs are
counted once and kept in memory; later scrapes read only the runs updated since, and a restarted
exporter counts the whole run history again, so the counters never go backwards. Nothing inside
the assets has to report anything.

Every run counter and the run queue are exported for every job of the code location from the first
scrape, at 0 until something happens: Prometheus's increase() only counts what happened after a series'
first sample, so a counter born at its first failure would hide that failure, and an idle queue would be
a missing series rather than 0.

Revision queues are watched per learner: a learner's queue for their day is due at their own rollover (their
day_start_hour in their time zone), built in the 15-minute window that holds it. Learner counts per calendar and
learner shard are kept in memory, read again every few minutes a page a scrape; each scrape compares them with the
window builds of the last two days.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import dagster as dg
import numpy as np
import pandas as pd
import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from learning_pipelines import settings
from learning_pipelines.db import monitoring_reads
from learning_pipelines.domain import rollovers, time_zones
from learning_pipelines.domain.learner_shards import shard_keys, shard_of
from learning_pipelines.observability import admin_views

FSRS_JOB = "fsrs_optimization_job"
CDC_ASSET = "concept_complexity"
# Runs updated this long before the newest one already counted are read again (commit order and
# clock skew between run workers); a run id is counted once.
RUN_SCAN_OVERLAP = dt.timedelta(minutes=5)
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
# Cutoff to queue ready of a window build: a build has BUILD_LEAD (900 s) before its window opens.
WINDOW_BUILD_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)
# Learners are counted per calendar and shard in passes over `users` by user_id, LEARNER_PAGE learners a scrape (a
# pass over 10M learners spans 40 scrapes), so no scrape reads more than a page; the first pass is read whole on the
# first scrape, so the gauges exist from the start. A new pass starts LEARNER_COUNTS_EVERY after the last one ended,
# not sooner: the counts change only when learners register, move or are forgotten, and such a learner gets their
# first queue of the new calendar at their next rollover anyway.
LEARNER_COUNTS_EVERY = dt.timedelta(minutes=5)
LEARNER_PAGE = 250_000
# Learners registered this recently are kept one by one with their registration time (they are few). One registered
# after the build of their current day took its learners (its cutoff) is not late: their first queue comes at their
# next rollover. A current day started at most 25 hours ago, so older registrations only need counting.
RECENTLY_REGISTERED = dt.timedelta(days=2)
CALENDAR = ["timezone", "day_start_hour"]
BUILD_KEY = ["window_start", "queue_date", "learner_shard"]  # a window build of a learner shard's day
IN_QUEUE = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
            dg.DagsterRunStatus.STARTED)
FINISHED = {dg.DagsterRunStatus.SUCCESS: "success", dg.DagsterRunStatus.FAILURE: "failure",
            dg.DagsterRunStatus.CANCELED: "canceled"}
# Prometheus owns `job` (the scrape job) and would store ours as `exported_job`.
JOB_LABEL = "dagster_job"
# Exposed metric families; the dashboard and alert rules may only use these (a test checks).
METRIC_NAMES = (
    "dagster_run_queue_size", "dagster_runs_finished", "jobs_failed", "learning_pipelines_last_success_timestamp_seconds",
    "fsrs_optimization_jobs_processed", "fsrs_optimization_job_duration_seconds", "cdc_calculation_job_duration_seconds",
    "dagster_asset_last_materialization_timestamp_seconds", "fsrs_learners_optimized",
    "revision_queue_due", "revision_queue_learners_without_todays_queue",
    "revision_queue_oldest_missing_rollover_age_seconds", "revision_queue_window_build_seconds",
    "revision_queue_last_build_ready_timestamp_seconds", "revision_queue_last_build_late", "review_logs_rows",
    "review_log_rejects_rows", "learning_pipelines_scrape_duration_seconds", "learning_pipelines_warehouse_up",
    "ncf_model_age_seconds", "ncf_model_hr_at_10", "review_logs_partition_migration_months",
    "review_logs_partition_migration_rows_copied", *admin_views.METRIC_NAMES,
)


def _cumulative_buckets(values: list[float], bounds: Iterable[float]) -> list[tuple[str, int]]:
    return [(str(float(b)), sum(v <= b for v in values)) for b in bounds] + [("+Inf", len(values))]


def _histogram(name: str, documentation: str, values: Iterable[float]) -> HistogramMetricFamily:
    values = list(values)
    return HistogramMetricFamily(name, documentation, buckets=_cumulative_buckets(values, DURATION_BUCKETS),
                                 sum_value=float(sum(values)))


@dataclasses.dataclass(frozen=True)
class LearnerCounts:
    """Learners per calendar (time zone as the recipes read it, day_start_hour) and learner shard."""
    # Learners registered before RECENTLY_REGISTERED: timezone, day_start_hour, learner_shard, n_learners.
    registered_before: pd.DataFrame
    registered_since: pd.DataFrame  # the others: timezone, day_start_hour, learner_shard, created_at, one row each


def count_learners(page: pd.DataFrame, zones: list[str], n_shards: int,
                   since: dt.datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A page of monitoring_reads.learner_calendar_page as LearnerCounts' two frames (learners whose time zone is not
    in `zones`, a tzdata older than the warehouse's time_zones, are left out)."""
    page = page.loc[page["zone_code"] >= 0]
    zone_codes, hours = page["zone_code"].to_numpy(np.int64), page["day_start_hour"].to_numpy(np.int64)
    shards = shard_of(page["user_id"].to_numpy(), n_shards)
    recent = (page["created_at"] >= pd.Timestamp(since)).to_numpy()
    # Counted on one integer per (zone, hour, shard): grouping half a million rows on strings is seconds.
    groups, n_learners = np.unique(((zone_codes * 24 + hours) * n_shards + shards)[~recent], return_counts=True)

    def calendar_shard(zone_codes: np.ndarray, hours: np.ndarray, shards: np.ndarray) -> dict:
        return {"timezone": np.array(zones, dtype=object)[zone_codes], "day_start_hour": hours,
                "learner_shard": np.array(shard_keys(n_shards), dtype=object)[shards]}

    before = pd.DataFrame({**calendar_shard(groups // (24 * n_shards), groups // n_shards % 24, groups % n_shards),
                           "n_learners": n_learners})
    registered_since = pd.DataFrame({**calendar_shard(zone_codes[recent], hours[recent], shards[recent]),
                                     "created_at": page["created_at"].array[recent]})
    return before, registered_since


class LearnerCountPass:
    """Learner counts gathered over `users`, a page of learners at a time."""

    def __init__(self, n_shards: int, now: dt.datetime):
        self.n_shards = n_shards
        self.since = now - RECENTLY_REGISTERED
        self.zones = sorted(time_zones.tzdata_keys())
        self.after_user_id: int | None = None
        self.counted: list[pd.DataFrame] = []
        self.registered_since: list[pd.DataFrame] = []

    def read_page(self, conn: sa.Connection, limit: int) -> bool:
        """Counts the next `limit` learners; whether the pass has counted every learner."""
        page = monitoring_reads.learner_calendar_page(conn, self.zones, self.after_user_id, limit)
        if not page.empty:
            before, registered_since = count_learners(page, self.zones, self.n_shards, self.since)
            self.counted.append(before)
            self.registered_since.append(registered_since)
            self.after_user_id = int(page["user_id"].max())
        return len(page) < limit

    def counts(self) -> LearnerCounts:
        keys = CALENDAR + ["learner_shard"]
        if not self.counted:
            return LearnerCounts(pd.DataFrame(columns=keys + ["n_learners"]), pd.DataFrame(columns=keys + ["created_at"]))
        return LearnerCounts(pd.concat(self.counted).groupby(keys, as_index=False)["n_learners"].sum(),
                             pd.concat(self.registered_since, ignore_index=True))


def current_days(calendars: pd.DataFrame, now: dt.datetime) -> pd.DataFrame:
    """Per calendar (timezone, day_start_hour), the day `now` falls in: queue_date, rollover_at (when it started),
    day_ends_at, window_start (the window its queue is built in)."""
    utc_day = now.astimezone(dt.timezone.utc).date()
    # UTC offsets run from -12 to +14 hours and a day may start as late as 23:00 local: the day `now` falls in
    # starts between two days before the UTC date and the day after it.
    every = rollovers.rollovers(calendars, [utc_day + dt.timedelta(days=n) for n in range(-2, 2)])
    at = pd.Timestamp(now)
    return every.loc[(every["rollover_at"] <= at) & (at < every["day_ends_at"])].reset_index(drop=True)


@dataclasses.dataclass(frozen=True)
class LearnersToday:
    """Learners per calendar and shard with their current day: window_start, queue_date, learner_shard,
    rollover_at, n_learners (a learner registered after that day's build took its cutoff is not counted: their
    first queue comes at their next rollover). The same until `until`, when the first of those days ends."""
    learners: pd.DataFrame
    until: pd.Timestamp


def learners_today(counts: LearnerCounts, now: dt.datetime) -> LearnersToday:
    calendars = pd.concat([counts.registered_before[CALENDAR], counts.registered_since[CALENDAR]]).drop_duplicates()
    if calendars.empty:
        return LearnersToday(pd.DataFrame(columns=BUILD_KEY + ["rollover_at", "n_learners"]),
                             pd.Timestamp.max.tz_localize("UTC"))
    today = current_days(calendars, now)
    registered_since = counts.registered_since.merge(today, on=CALENDAR)
    cutoffs = registered_since["window_start"] - pd.Timedelta(rollovers.BUILD_LEAD)
    learners = pd.concat([counts.registered_before.merge(today, on=CALENDAR),
                          registered_since.loc[registered_since["created_at"] < cutoffs].assign(n_learners=1)])
    learners = learners.assign(window_start=pd.to_datetime(learners["window_start"], utc=True))
    return LearnersToday(learners[BUILD_KEY + ["rollover_at", "n_learners"]], today["day_ends_at"].min())


def learners_without_todays_queue(today: LearnersToday, built_windows: pd.DataFrame) -> pd.DataFrame:
    """Per learner shard with any: n_learners whose rollover into their current day has passed and whose queue
    for it was not built (no window build of that day, window and shard in `built_windows`: window_start,
    queue_date, learner_shard), and the oldest such rollover (oldest_rollover_at)."""
    built = built_windows[BUILD_KEY].assign(window_start=pd.to_datetime(built_windows["window_start"], utc=True),
                                            built=True).drop_duplicates(BUILD_KEY)
    learners = today.learners.assign(window_start=pd.to_datetime(today.learners["window_start"], utc=True)).merge(
        built, on=BUILD_KEY, how="left")
    missing = learners.loc[learners["built"].isna() & (learners["n_learners"] > 0)]
    return (missing.groupby("learner_shard", as_index=False)
            .agg(n_learners=("n_learners", "sum"), oldest_rollover_at=("rollover_at", "min")))


class LearningPipelinesCollector(Collector):
    def __init__(self, instance: dg.DagsterInstance, engine: sa.Engine | None, job_names: Iterable[str] = (),
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
                 learner_counts_every: dt.timedelta = LEARNER_COUNTS_EVERY, learner_page: int = LEARNER_PAGE,
                 tag_debt_alert_share: float | None = None):
        self.instance = instance
        self.engine = engine
        self.job_names = frozenset(job_names)  # exported from the first scrape, at 0 until they run
        self.clock = clock  # the warehouse figures' now (aware)
        self.learner_counts_every = learner_counts_every
        self.learner_page = learner_page
        self.tag_debt_alert_share = (settings.tag_debt_alert_share() if tag_debt_alert_share is None
                                     else tag_debt_alert_share)
        self._admin_views = admin_views.AdminViews()
        self._learner_counts: LearnerCounts | None = None  # of the last complete pass
        self._learner_counts_done_at: dt.datetime | None = None
        self._learner_count_pass: LearnerCountPass | None = None
        # A scrape that outlives Prometheus's timeout still runs when the next one comes: one reads learners at a time.
        self._learner_counts_lock = threading.Lock()
        self._learners_today: tuple[LearnerCounts, LearnersToday] | None = None  # from those counts, until a day ends
        # Finished runs never change outcome: each is counted once, and later scrapes read only the
        # runs updated since (with an overlap, deduplicated by run id), not the whole run history.
        self._finished: Counter = Counter()
        self._last_success: dict[str, float] = {}
        self._fsrs_durations: list[float] = []
        self._counted: dict[str, dt.datetime] = {}  # run id -> update time, only within the overlap
        self._seen_until: dt.datetime | None = None

    def collect(self) -> Iterator:
        started = time.perf_counter()
        yield from self._runs()
        yield from self._assets()
        warehouse_up = GaugeMetricFamily("learning_pipelines_warehouse_up", "1 when the warehouse answered this scrape")
        try:
            families = list(self._warehouse()) if self.engine is not None else []
            warehouse_up.add_metric([], 1 if self.engine is not None else 0)
        except sa.exc.SQLAlchemyError:
            families = []
            warehouse_up.add_metric([], 0)
        yield from families
        yield warehouse_up
        yield admin_views.alert_share_family(self.tag_debt_alert_share)
        scrape = GaugeMetricFamily("learning_pipelines_scrape_duration_seconds", "Time to build this scrape")
        scrape.add_metric([], time.perf_counter() - started)
        yield scrape

    def _learner_counts_at(self, conn: sa.Connection, now: dt.datetime) -> LearnerCounts:
        """The counts of the last complete pass, after reading a page of the pass under way, or of a new one when
        LEARNER_COUNTS_EVERY has passed since the last ended (every page of the first pass at once)."""
        with self._learner_counts_lock:
            done_at = self._learner_counts_done_at
            if self._learner_count_pass is None and (done_at is None or not done_at <= now < done_at
                                                     + self.learner_counts_every):
                self._learner_count_pass = LearnerCountPass(settings.LEARNER_SHARDS, now)
            counting = self._learner_count_pass
            if counting is not None:
                done = counting.read_page(conn, self.learner_page)
                while not done and self._learner_counts is None:
                    done = counting.read_page(conn, self.learner_page)
                if done:
                    self._learner_counts = counting.counts()
                    self._learner_counts_done_at, self._learner_count_pass = now, None
            return self._learner_counts

    def _learners_today_at(self, counts: LearnerCounts, now: dt.datetime) -> LearnersToday:
        """learners_today, computed again only for new counts or when one of those days has ended."""
        if self._learners_today is not None:
            counted_from, today = self._learners_today
            if counted_from is counts and now < today.until:
                return today
        today = learners_today(counts, now)
        self._learners_today = counts, today
        return today

    def _count_finished_runs(self) -> None:
        since = self._seen_until - RUN_SCAN_OVERLAP if self._seen_until else None
        for record in self.instance.get_run_records(
                filters=dg.RunsFilter(statuses=list(FINISHED), updated_after=since),
                order_by="update_timestamp", ascending=True):
            run = record.dagster_run
            self._seen_until = max(filter(None, (self._seen_until, record.update_timestamp)))
            if run.run_id in self._counted:
                continue
            self._counted[run.run_id] = record.update_timestamp
            self._finished[(run.job_name, FINISHED[run.status])] += 1
            if run.status == dg.DagsterRunStatus.SUCCESS and record.end_time:
                self._last_success[run.job_name] = max(self._last_success.get(run.job_name, 0.0), record.end_time)
                if run.job_name == FSRS_JOB and record.start_time:
                    self._fsrs_durations.append(record.end_time - record.start_time)
        if self._seen_until is not None:
            horizon = self._seen_until - RUN_SCAN_OVERLAP
            self._counted = {run_id: when for run_id, when in self._counted.items() if when >= horizon}

    def _runs(self) -> Iterator:
        self._count_finished_runs()
        queued = Counter(record.dagster_run.job_name for record in self.instance.get_run_records(
            filters=dg.RunsFilter(statuses=list(IN_QUEUE))))
        finished, last_success, fsrs_durations = self._finished, self._last_success, self._fsrs_durations
        jobs = sorted(self.job_names | set(queued) | {job for job, _ in finished})
        queue = GaugeMetricFamily("dagster_run_queue_size", "Queued, starting and running runs per job",
                                  labels=[JOB_LABEL])
        for job in jobs:
            queue.add_metric([job], queued[job])
        yield queue
        runs = CounterMetricFamily("dagster_runs_finished", "Finished runs per job and outcome",
                                   labels=[JOB_LABEL, "status"])
        failed = CounterMetricFamily("jobs_failed", "Failed runs per job", labels=[JOB_LABEL])
        for job in jobs:
            for outcome in FINISHED.values():
                runs.add_metric([job, outcome], finished[(job, outcome)])
            failed.add_metric([job], finished[(job, "failure")])
        yield runs
        yield failed
        success = GaugeMetricFamily("learning_pipelines_last_success_timestamp_seconds",
                                    "End time of each job's latest successful run", labels=[JOB_LABEL])
        for job, when in sorted(last_success.items()):
            success.add_metric([job], when)
        yield success
        processed = CounterMetricFamily("fsrs_optimization_jobs_processed", "Successful FSRS optimization runs")
        processed.add_metric([], len(fsrs_durations))
        yield processed
        yield _histogram("fsrs_optimization_job_duration_seconds", "Duration of successful FSRS optimization runs",
                         fsrs_durations)

    def _assets(self) -> Iterator:
        cdc = self.instance.fetch_materializations(dg.AssetKey(CDC_ASSET), limit=1000).records
        seconds = [r.asset_materialization.metadata["seconds"].value for r in cdc
                   if r.asset_materialization and "seconds" in r.asset_materialization.metadata]
        yield _histogram("cdc_calculation_job_duration_seconds", "Duration of concept complexity (CDC) calculations",
                         seconds)
        latest = GaugeMetricFamily("dagster_asset_last_materialization_timestamp_seconds",
                                   "Time of each asset's latest materialization", labels=["asset"])
        for key in sorted(self.instance.get_asset_keys(), key=lambda k: k.to_user_string()):
            event = self.instance.get_latest_materialization_event(key)
            if event is not None:
                latest.add_metric([key.to_user_string()], event.timestamp)
        yield latest

    def _warehouse(self) -> Iterator:
        now = self.clock()
        shards = shard_keys(settings.LEARNER_SHARDS)
        with self.engine.connect() as conn:
            figures = monitoring_reads.warehouse_figures(conn, shards, now)
            counts = (self._learner_counts_at(conn, now) if figures.queues is not None and figures.calendars_readable
                      else None)
            views = (self._admin_views.read(conn, figures.queues, shards, now) if figures.queues is not None
                     else None)
        today = self._learners_today_at(counts, now) if counts is not None else None
        gauge = GaugeMetricFamily("fsrs_learners_optimized", "Learners with their own FSRS weights")
        gauge.add_metric([], figures.learners_optimized)
        yield gauge
        for name, doc, value in (("review_logs_rows", "Reviews in the warehouse", figures.reviews),
                                 ("review_log_rejects_rows", "Rejected review rows kept for inspection",
                                  figures.rejects)):
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], value)
            yield family
        yield from _queue_families(figures.queues, today, shards, now)
        yield from admin_views.families(views, figures.shadow_metrics)
        age = GaugeMetricFamily("ncf_model_age_seconds", "Age of the latest NCF model")
        hit_rate = GaugeMetricFamily("ncf_model_hr_at_10", "Held-out HR@10 of the latest NCF model and of popularity",
                                     labels=["model"])
        model = figures.latest_model
        if model is not None:
            age.add_metric([], time.time() - model.trained_at.timestamp())
            hit_rate.add_metric(["ncf"], model.hr_at_10)
            hit_rate.add_metric(["popularity"], model.popularity_hr_at_10)
        yield age
        yield hit_rate
        yield from _migration_progress(figures.migration)


def _queue_families(queues: monitoring_reads.QueueFigures | None, today: LearnersToday | None, shards: list[str],
                    now: dt.datetime) -> Iterator:
    """The revision queues current now, the window builds' cutoff-to-ready times, and the learners whose rollover
    passed without their queue (per shard, 0 when healthy); without samples before migration 0013 (0014 for the
    learners)."""
    due = GaugeMetricFamily("revision_queue_due", "Concepts due in the queues current now (every learner's current "
                            "day), by kind", labels=["kind"])
    build_name, build_doc = ("revision_queue_window_build_seconds",
                             "Cutoff to queues ready of each window build of a learner shard ready in the last 24 h")
    build_times = GaugeHistogramMetricFamily(build_name, build_doc)
    missing = GaugeMetricFamily("revision_queue_learners_without_todays_queue",
                                "Learners whose rollover into their current day passed without a queue for it",
                                labels=["learner_shard"])
    oldest = GaugeMetricFamily("revision_queue_oldest_missing_rollover_age_seconds",
                               "How long ago the oldest rollover without its queue was (0 when none)",
                               labels=["learner_shard"])
    last_ready = GaugeMetricFamily("revision_queue_last_build_ready_timestamp_seconds",
                                   "When the window build ready last (of a learner shard's day) was ready")
    last_late = GaugeMetricFamily("revision_queue_last_build_late",
                                  "1 when the window build ready last was ready after its window's first rollover")
    if queues is not None and queues.last_build is not None:
        last_ready.add_metric([], pd.Timestamp(queues.last_build.ready_at).timestamp())
        last_late.add_metric([], int(bool(queues.last_build.late)))
    if queues is not None:
        due.add_metric(["due_today"], queues.due_today)
        due.add_metric(["overdue"], queues.overdue)
        times = queues.build_times
        seconds = (times["ready_at"] - times["cutoff_at"]).dt.total_seconds().tolist() if len(times) else []
        build_times = GaugeHistogramMetricFamily(build_name, build_doc, gsum_value=sum(seconds),
                                                 buckets=_cumulative_buckets(seconds, WINDOW_BUILD_BUCKETS))
    if queues is not None and today is not None:
        late = learners_without_todays_queue(today, queues.built_windows).set_index("learner_shard")
        for shard in shards:
            n_learners, rollover_at = late["n_learners"].get(shard, 0), late["oldest_rollover_at"].get(shard)
            missing.add_metric([shard], int(n_learners))
            oldest.add_metric([shard], 0 if rollover_at is None else (pd.Timestamp(now) - rollover_at).total_seconds())
    yield from (due, build_times, missing, oldest, last_ready, last_late)


def _migration_progress(report: dict) -> Iterator:
    """Months of an online partitioning by state, and rows copied; empty when none is under way."""
    months = GaugeMetricFamily("review_logs_partition_migration_months",
                               "Months of the unpartitioned review_logs by backfill state", labels=["state"])
    copied = GaugeMetricFamily("review_logs_partition_migration_rows_copied", "Rows the backfill copied so far")
    if report["layout"] == "migrating":
        states = {"pending": 0, "copying": 0, "unverified": 0, "verified": 0}
        for month in report["months"]:
            state = ("verified" if month["verified_at"] else "unverified" if month["finished_at"]
                     else "copying" if month["batches"] else "pending")
            states[state] += 1
        for state, count in states.items():
            months.add_metric([state], count)
        copied.add_metric([], sum(month["rows_copied"] for month in report["months"]))
    yield months
    yield copied


def code_location_jobs(repository: dg.RepositoryDefinition) -> list[str]:
    """The jobs a person launches (Dagster's hidden `__` jobs left out): those build_registry exports from the start."""
    return sorted(job.name for job in repository.get_all_jobs() if not job.name.startswith("__"))


def build_registry(instance: dg.DagsterInstance, engine: sa.Engine | None,
                   job_names: Iterable[str] = ()) -> CollectorRegistry:
    """`job_names`: the jobs whose run counters and queue are exported at 0 before their first run."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LearningPipelinesCollector(instance, engine, job_names))
    return registry
