"""`learning-pipelines demo`: simulated learners into the warehouse, then every job of the code location
run once, upstream first (the schedules' partitions), so every asset is materialized."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
import zoneinfo
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from dagster._core.execution.api import execute_run
from dagster._core.execution.execute_in_process import merge_run_tags
from dagster._core.remote_representation.external import RemoteRepository
from dagster._utils.hosted_user_process import recon_job_from_origin

from learning_pipelines import settings
from learning_pipelines.db import bulk, reads, tables
from learning_pipelines.db.engine import dagster_home, get_engine, resolve_database_url
from learning_pipelines.db.maintenance import shown_url
from learning_pipelines.defs.learner_shards import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG, shard_groups
from learning_pipelines.defs.revision_queue_automation import CATCH_UP
from learning_pipelines.defs.revision_queues import ROLLOVER_WINDOW_TAG
from learning_pipelines.domain import rollovers, time_zones
from learning_pipelines.domain.simulate import SimulatedPlatform, simulate_platform

SIMULATED_REF_PREFIX = "sim:"
# Parents before children, so foreign keys hold while loading.
LOAD_ORDER = ("users", "themes", "concepts", "concept_theme_map", "concept_edges", "user_learning_prefs",
              "resources", "resource_concepts", "user_interactions", "review_logs")


def load_platform(engine: sa.Engine, platform: SimulatedPlatform) -> dict[str, int]:
    """Write a simulated platform into an empty warehouse in one transaction. A learner whose time zone is not a key
    of tzdata refuses it before anything is written (time_zones.InvalidTimeZone, naming them)."""
    users = platform.users
    time_zones.require_valid(users["timezone"], [f"simulated learner {user_id}" for user_id in users["user_id"]])
    counts = {}
    with engine.begin() as conn:
        for name in LOAD_ORDER:
            frame = getattr(platform, name)
            if name == "review_logs":
                counts[name] = bulk.insert_review_logs(conn, frame)
            else:
                counts[name] = bulk.bulk_insert(conn, tables.metadata.tables[name], frame)
    return counts


def simulated_learner_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return reads.learners_with_ref_prefix(conn, SIMULATED_REF_PREFIX)


def review_months(engine: sa.Engine) -> list[str]:
    """Partition keys (YYYY-MM-01) of the months that hold reviews."""
    with engine.connect() as conn:
        first, last = reads.review_time_bounds(conn)
    if first is None:
        return []
    return [p.strftime("%Y-%m-01") for p in pd.period_range(first.strftime("%Y-%m"), last.strftime("%Y-%m"), freq="M")]


# Maintenance assets (review_logs_partitioned) only run during an online migration; the demo's
# warehouse is partitioned from the start, so there is nothing for them to do.
MAINTENANCE_GROUP = "maintenance"


def job_order(repository: dg.RepositoryDefinition) -> list[dg.JobDefinition]:
    """The code location's jobs, each after the jobs that materialize what it reads: by the position
    of its most downstream asset in the asset graph (a larger job first on a tie, so a job whose
    assets an earlier one already covered can be skipped)."""
    position = {key: i for i, key in enumerate(repository.asset_graph.toposorted_asset_keys)}
    jobs = [job for job in repository.get_all_jobs() if not job.name.startswith("__")
            and not any(repository.asset_graph.get(key).group_name == MAINTENANCE_GROUP
                        for key in job.asset_layer.executable_asset_keys)]
    return sorted(jobs, key=lambda job: (max(position[k] for k in job.asset_layer.executable_asset_keys),
                                         -len(job.asset_layer.executable_asset_keys), job.name))


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run the demo launches: its partition and its run config (beside the demo's own)."""
    partition_key: str | None = None
    run_config: dict = dataclasses.field(default_factory=dict)
    label: str = ""
    tags: dict = dataclasses.field(default_factory=dict)


def runs_to_launch(repository: dg.RepositoryDefinition, job: dg.JobDefinition, months: list[str],
                   now: dt.datetime, calendars: pd.DataFrame) -> list[PlannedRun]:
    """Every month with reviews for a monthly job (the backfill that follows a bulk load); every learner
    shard for a sharded job; for the day x shard job every rollover window of the last day, as a first deployment
    builds them (late): each learner's current day, window by window; for a daily job the day its schedule would
    request now; one run for an unpartitioned job."""
    partitions = job.partitions_def
    if partitions is None:
        return [PlannedRun()]
    if isinstance(partitions, dg.MonthlyPartitionsDefinition):
        return [PlannedRun(month, label=month) for month in months]
    if isinstance(partitions, dg.StaticPartitionsDefinition):
        return [PlannedRun(shard, label=shard) for shard in partitions.get_partition_keys()]
    if isinstance(partitions, dg.MultiPartitionsDefinition):
        return _rollover_window_runs(now, calendars)
    for schedule in repository.schedule_defs:
        if schedule.job_name == job.name:
            tick = now.astimezone(zoneinfo.ZoneInfo(schedule.execution_timezone or "UTC"))
            key = schedule(dg.build_schedule_context(scheduled_execution_time=tick)).partition_key
            return [PlannedRun(key, label=key)]
    key = partitions.get_last_partition_key()
    return [PlannedRun(key, label=key)]


def _rollover_window_runs(now: dt.datetime, calendars: pd.DataFrame) -> list[PlannedRun]:
    due = rollovers.windows_due(calendars, now - CATCH_UP, now)
    runs = []
    for window, day in due.itertuples(index=False):
        rolling = rollovers.rolling_over_in(calendars, window.to_pydatetime())
        if not (rolling.loc[rolling["queue_date"] == day, "day_ends_at"] > pd.Timestamp(now)).any():
            continue  # that day has already ended for these learners
        config = {"ops": {"revision_queues": {"config": {"window_start": window.isoformat()}}}}
        # As revision_queue_shards_after_states launches them: the window's shards together.
        for request in shard_groups("demo", settings.WINDOW_RUN_SHARDS,
                                    lambda shard, day=day: dg.MultiPartitionKey({"day": str(day), "shard": shard}),
                                    tags={ROLLOVER_WINDOW_TAG: window.isoformat()}, run_config=config):
            first, last = (str(request.tags.get(tag, request.partition_key)).partition("|")[2]
                           for tag in (PARTITION_RANGE_START_TAG, PARTITION_RANGE_END_TAG))
            shards_built = first if first == last else f"{first}..{last}"
            runs.append(PlannedRun(request.partition_key, request.run_config,
                                   f"{day}|{shards_built} window {window:%H:%M} UTC", request.tags))
    return runs


@dataclasses.dataclass(frozen=True)
class FailedCheck:
    """A check that failed without stopping the demo: which, what it checks, what it found."""
    name: str  # asset:check
    checks: str  # the check's description: what it means
    found: str = ""  # the evaluation's description or metadata: what it saw


@dataclasses.dataclass(frozen=True)
class DemoRun:
    """One run of the demo: what it materialized, how long it took, the checks that failed without
    stopping it."""
    label: str
    seconds: float
    failed_checks: tuple[FailedCheck, ...] = ()
    run_id: str = ""

    def line(self) -> str:
        return f"  {self.label:<48} {self.seconds:6.1f} s"


WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"
REPOSITORY = "__repository__"  # the one repository of a code location that Definitions make


@contextlib.contextmanager
def workspace_repository(instance: dg.DagsterInstance) -> Iterator[RemoteRepository]:
    """The code location of workspace.yaml, loaded as `make dev` loads it (its own code server)."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    with WorkspaceProcessContext(instance, WorkspaceFileTarget([str(WORKSPACE)])) as workspace:
        request = workspace.create_request_context()
        errors = request.code_location_errors()
        if errors:
            raise RuntimeError(f"the code location of {WORKSPACE.name} does not load: {errors[0].message}")
        (location,) = request.code_locations
        yield location.get_repository(REPOSITORY)


def launch_in_process(instance: dg.DagsterInstance, repository: RemoteRepository, job: dg.JobDefinition,
                      partition_key: str | None, run_config: dict, tags: dict | None = None) -> str:
    """Runs `job` here, in this process, as a run of the workspace's code location (what the UI launches
    carries the same origin, so the Overview timeline, job and asset pages list the run); its run id."""
    remote_job = repository.get_full_job(job.name)
    run = instance.create_run_for_job(
        job_def=job, run_config=run_config, status=dg.DagsterRunStatus.NOT_STARTED,
        tags=merge_run_tags(job_def=job, partition_key=partition_key, tags=tags, asset_selection=None,
                            instance=instance, run_config=run_config),
        remote_job_origin=remote_job.get_remote_origin(), job_code_origin=remote_job.get_python_origin())
    execute_run(recon_job_from_origin(remote_job.get_python_origin()), run, instance)
    return run.run_id


def _failed_check(evaluation, descriptions: dict[dg.AssetCheckKey, str]) -> FailedCheck:
    key = dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name)
    found = evaluation.description or ", ".join(
        f"{name} {value.value}" for name, value in evaluation.metadata.items()
        if isinstance(value.value, (int, float, str)) and len(str(value.value)) <= 60)
    return FailedCheck(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}",
                       descriptions.get(key) or "", found)


def materialize_all(defs: dg.Definitions, instance: dg.DagsterInstance, months: list[str],
                    on_run: Callable[[DemoRun], None] = lambda run: None) -> list[DemoRun]:
    """Every job of the code location, upstream first, into `instance`, each run launched as from the
    workspace's code location (the UI shows the runs everywhere, as if launched there); `on_run` is told of each
    run as it ends."""
    runs = []
    # Steps in this process: a step process per step would import the code location each time.
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}},
                  "execution": {"config": {"in_process": {}}}}
    repository_def = defs.get_repository_def()
    check_graph = repository_def.asset_graph
    descriptions = {key: check_graph.get_check_spec(key).description for key in check_graph.asset_check_keys}
    now = dt.datetime.now(dt.timezone.utc)
    with get_engine().connect() as conn:
        calendars = reads.calendars_in_use(conn)
    done: set = set()
    with workspace_repository(instance) as repository:
        for job in job_order(repository_def):
            keys = job.asset_layer.executable_asset_keys
            if keys <= done:
                continue
            for planned in runs_to_launch(repository_def, job, months, now, calendars):
                label = ", ".join(sorted(k.to_user_string() for k in keys))
                label += f" [{planned.label}]" if planned.label else ""
                started = time.perf_counter()
                run_id = launch_in_process(instance, repository, job, planned.partition_key,
                                           {**run_config, **planned.run_config}, planned.tags)
                if instance.get_run_by_id(run_id).status != dg.DagsterRunStatus.SUCCESS:
                    raise RuntimeError(f"materializing {label} failed; see run {run_id} in the UI")
                checks = [record.dagster_event.asset_check_evaluation_data for record in instance.all_logs(
                    run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
                failed = tuple(_failed_check(check, descriptions) for check in checks if not check.passed)
                runs.append(DemoRun(label, time.perf_counter() - started, failed, run_id))
                on_run(runs[-1])
            done |= keys
    graph = defs.resolve_asset_graph()  # the app's own tables and views (external assets) are no job's to build
    data_assets = {key for key in graph.materializable_asset_keys if graph.get(key).group_name != MAINTENANCE_GROUP}
    if data_assets - done:
        raise RuntimeError(f"no job materializes {sorted(k.to_user_string() for k in data_assets - done)}")
    return runs


def table_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return reads.exact_row_counts(conn)


@dataclasses.dataclass
class DemoReport:
    database_url: str
    loaded: dict[str, int] | None
    load_seconds: float
    runs: list[DemoRun]
    counts: dict[str, int]

    def render(self, runs_shown: bool = False) -> str:
        """The report; with `runs_shown`, less the lines of the runs (printed as they ended)."""
        lines = [] if runs_shown else [*self.header(), "materialized:", *(run.line() for run in self.runs)]
        if self.runs:
            lines.append(f"materialized {len(self.runs)} run(s) in {sum(run.seconds for run in self.runs):.0f} s")
        failed = [(run, check) for run in self.runs for check in run.failed_checks]
        if failed:
            lines.append(f"{len(failed)} check(s) failed without blocking (the assets were written; a check says what a "
                         "person would look at):")
        for run, check in failed:
            lines.append(f"  {check.name} [{run.label}]")
            lines += [f"    what it checks: {check.checks}"] if check.checks else []
            lines += [f"    what it found: {check.found}"] if check.found else []
            lines.append(f"    where to look: {UI_URL}/runs/{run.run_id} (the run's log), and the asset's Checks tab")
        lines.append("rows per table:")
        lines += [f"  {name:<28} {count:>10,}" for name, count in self.counts.items()]
        lines.append(f"next: `make dev`, then open {UI_URL}: the runs are on Overview's timeline and each job's "
                     "page; the graph, from the app's writes to the views it reads, under Lineage in the sidebar")
        return "\n".join(lines)

    def header(self) -> list[str]:
        return [f"warehouse: {shown_url(self.database_url)}",
                "simulated learners already present: load skipped (make clean-demo to start over)"
                if self.loaded is None else f"loaded simulated platform in {self.load_seconds:.1f} s"]


UI_URL = "http://127.0.0.1:3000"  # where `make dev` serves the UI


def run_demo(n_learners: int, seed: int, materialize: bool = True,
             on_run: Callable[[DemoRun], None] = lambda run: None,
             on_loaded: Callable[[DemoReport], None] = lambda report: None) -> DemoReport:
    """Loads the simulated platform unless it is there, then (`materialize`) runs every job; `on_loaded` is told once
    the data is in (the report so far), `on_run` of each run as it ends."""
    from learning_pipelines.definitions import defs as load_defs

    url = resolve_database_url()
    engine = get_engine(url)
    loaded, load_seconds = None, 0.0
    if simulated_learner_count(engine) == 0:
        started = time.perf_counter()
        loaded = load_platform(engine, simulate_platform(n_learners=n_learners, seed=seed))
        load_seconds = time.perf_counter() - started
    runs = []
    on_loaded(DemoReport(url, loaded, load_seconds, runs, {}))
    if materialize:
        defs = load_defs()
        with dg.DagsterInstance.from_config(str(dagster_home().resolve())) as instance:  # as `make dev` reads it
            runs = materialize_all(defs, instance, review_months(engine), on_run)
    return DemoReport(url, loaded, load_seconds, runs, table_counts(engine))
