"""A Prometheus collector that reads everything it reports from storage.

Counters and histograms are derived from Dagster's run storage and event log. Finished runs are
counted once and kept in memory; later scrapes read only the runs updated since, and a restarted
exporter counts the whole run history again, so the counters never go backwards. Nothing inside
the assets has to report anything.

Every run counter and the run queue are exported for every job of the code location from the first
scrape, at 0 until something happens: Prometheus's increase() only counts what happened after a series'
first sample, so a counter born at its first failure would hide that failure, and an idle queue would be
a missing series rather than 0.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator

import dagster as dg
import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from learning_pipelines import settings
from learning_pipelines.db.monitoring_reads import warehouse_figures
from learning_pipelines.domain.learner_shards import shard_keys

FSRS_JOB = "fsrs_optimization_job"
CDC_ASSET = "concept_complexity"
# Runs updated this long before the newest one already counted are read again (commit order and
# clock skew between run workers); a run id is counted once.
RUN_SCAN_OVERLAP = dt.timedelta(minutes=5)
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
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
    "dagster_asset_last_materialization_timestamp_seconds", "fsrs_learners_optimized", "fsrs_shadow_logloss",
    "revision_queue_due", "revision_queue_generated_timestamp_seconds", "review_logs_rows", "review_log_rejects_rows",
    "learning_pipelines_scrape_duration_seconds", "learning_pipelines_warehouse_up", "ncf_model_age_seconds",
    "ncf_model_hr_at_10", "review_logs_partition_migration_months", "review_logs_partition_migration_rows_copied",
)


def _histogram(name: str, documentation: str, values: Iterable[float]) -> HistogramMetricFamily:
    values = list(values)
    buckets = [(str(float(b)), sum(v <= b for v in values)) for b in DURATION_BUCKETS] + [("+Inf", len(values))]
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=float(sum(values)))


class LearningPipelinesCollector(Collector):
    def __init__(self, instance: dg.DagsterInstance, engine: sa.Engine | None, job_names: Iterable[str] = ()):
        self.instance = instance
        self.engine = engine
        self.job_names = frozenset(job_names)  # exported from the first scrape, at 0 until they run
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
        scrape = GaugeMetricFamily("learning_pipelines_scrape_duration_seconds", "Time to build this scrape")
        scrape.add_metric([], time.perf_counter() - started)
        yield scrape

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
        with self.engine.connect() as conn:
            figures = warehouse_figures(conn, shard_keys(settings.LEARNER_SHARDS))
        gauge = GaugeMetricFamily("fsrs_learners_optimized", "Learners with their own FSRS weights")
        gauge.add_metric([], figures.learners_optimized)
        yield gauge
        for name, doc, value in (("review_logs_rows", "Reviews in the warehouse", figures.reviews),
                                 ("review_log_rejects_rows", "Rejected review rows kept for inspection",
                                  figures.rejects)):
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], value)
            yield family
        due = GaugeMetricFamily("revision_queue_due", "Concepts due on the latest day every learner shard built",
                                labels=["kind"])
        if figures.queue_totals is not None:
            due.add_metric(["due_today"], int(figures.queue_totals["due_today"]))
            due.add_metric(["overdue"], int(figures.queue_totals["overdue"]))
        yield due
        when = GaugeMetricFamily("revision_queue_generated_timestamp_seconds",
                                 "When the latest day every learner shard built was finished")
        if figures.queue_generated_at is not None:
            when.add_metric([], figures.queue_generated_at.timestamp())
        yield when
        shadow_family = GaugeMetricFamily("fsrs_shadow_logloss", "Latest daily shadow-evaluation logloss per A/B group",
                                          labels=["ab_group"])
        for group, value in figures.shadow_logloss:
            if value is not None and math.isfinite(value):
                shadow_family.add_metric([group], value)
        yield shadow_family
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
