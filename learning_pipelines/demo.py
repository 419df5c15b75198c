"""`learning-pipelines demo`: simulated learners into the warehouse, then every asset materialized."""

from __future__ import annotations

import dataclasses
import time

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.db.engine import get_engine, resolve_database_url
from learning_pipelines.domain.simulate import SimulatedPlatform, simulate_platform

SIMULATED_REF_PREFIX = "sim:"
# Parents before children, so foreign keys hold while loading.
LOAD_ORDER = ("users", "themes", "concepts", "concept_theme_map", "concept_edges", "user_learning_prefs",
              "resources", "resource_concepts", "user_interactions", "review_logs")


def load_platform(engine: sa.Engine, platform: SimulatedPlatform) -> dict[str, int]:
    """Write a simulated platform into an empty warehouse in one transaction."""
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
        return conn.execute(sa.select(sa.func.count()).select_from(tables.users)
                            .where(tables.users.c.external_ref.like(f"{SIMULATED_REF_PREFIX}%"))).scalar_one()


def review_months(engine: sa.Engine) -> list[str]:
    """Partition keys (YYYY-MM-01) of the months that hold reviews."""
    with engine.connect() as conn:
        first, last = conn.execute(sa.select(sa.func.min(tables.review_logs.c.reviewed_at),
                                             sa.func.max(tables.review_logs.c.reviewed_at))).one()
    if first is None:
        return []
    return [p.strftime("%Y-%m-01") for p in pd.period_range(first.strftime("%Y-%m"), last.strftime("%Y-%m"), freq="M")]


# The code location's own jobs, in dependency order: the demo's runs look like production's in the UI
# and in the metrics. (job, which partitions: every month with data, the latest day, or none)
# Assets no job covers run in between, as one ad-hoc run.
MAINTENANCE_GROUP = "maintenance"
JOB_PLAN = (("review_logs_job", "months"), ("fsrs_optimization_job", None), ("ncf_job", None),
            ("revision_queues_job", "latest"), ("fsrs_shadow_evaluation_job", "latest"))


def materialize_all(defs: dg.Definitions, instance: dg.DagsterInstance, months: list[str]) -> list[tuple[str, float]]:
    """Every asset, through the code location's jobs where one covers it and an ad-hoc job otherwise;
    each run goes into `instance`, so the UI shows them. Returns (what, seconds) per run."""
    timings = []
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    repository = defs.get_repository_def()
    done: set = set()

    def run(job: dg.JobDefinition, partition_key=None):
        keys = sorted(job.asset_layer.executable_asset_keys, key=lambda k: k.to_user_string())
        label = ", ".join(k.to_user_string() for k in keys) + (f" [{partition_key}]" if partition_key else "")
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance, partition_key=partition_key, run_config=quiet,
                                        raise_on_error=False)
        if not result.success:
            raise RuntimeError(f"materializing {label} failed; see run {result.run_id} in the UI")
        done.update(keys)
        timings.append((label, time.perf_counter() - started))

    def latest_key(job):
        return job.partitions_def.get_last_partition_key() if job.partitions_def else None

    planned = {key for name, _ in JOB_PLAN for key in repository.get_job(name).asset_layer.executable_asset_keys}
    # Maintenance assets (review_logs_partitioned) only run during an online migration; the demo's
    # warehouse is partitioned from the start, so there is nothing for them to do.
    data_assets = [spec for spec in defs.resolve_all_asset_specs() if spec.group_name != MAINTENANCE_GROUP]
    leftovers = [spec.key for spec in data_assets if spec.key not in planned]
    for number, (name, partitions) in enumerate(JOB_PLAN):
        if number == 2 and leftovers:  # after the FSRS job, before the jobs that read what the leftovers write
            adhoc = dg.Definitions.merge(defs, dg.Definitions(jobs=[dg.define_asset_job("demo_assets",
                                                                                       selection=leftovers)]))
            run(adhoc.resolve_job_def("demo_assets"))
        job = repository.get_job(name)
        keys = months if partitions == "months" else [latest_key(job) if partitions == "latest" else None]
        for key in keys:
            run(job, key)
    missing = {spec.key for spec in data_assets} - done
    if missing:
        raise RuntimeError(f"the demo does not materialize {sorted(k.to_user_string() for k in missing)}")
    return timings


def table_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                for name, table in tables.metadata.tables.items()}


@dataclasses.dataclass
class DemoReport:
    database_url: str
    loaded: dict[str, int] | None
    load_seconds: float
    runs: list[tuple[str, float]]
    counts: dict[str, int]

    def render(self) -> str:
        lines = [f"warehouse: {self.database_url}"]
        if self.loaded is None:
            lines.append("simulated learners already present: load skipped (make clean-demo to start over)")
        else:
            lines.append(f"loaded simulated platform in {self.load_seconds:.1f} s")
        lines.append("materialized:")
        lines += [f"  {label:<48} {seconds:6.1f} s" for label, seconds in self.runs]
        lines.append("rows per table:")
        lines += [f"  {name:<28} {count:>10,}" for name, count in self.counts.items()]
        lines.append("next: `make dev`, then open http://127.0.0.1:3000 (lineage: Assets > View lineage; "
                     "runs: Runs)")
        return "\n".join(lines)


def run_demo(n_learners: int, seed: int, materialize: bool = True) -> DemoReport:
    from learning_pipelines.definitions import defs as load_defs

    url = resolve_database_url()
    engine = get_engine(url)
    loaded, load_seconds = None, 0.0
    if simulated_learner_count(engine) == 0:
        started = time.perf_counter()
        loaded = load_platform(engine, simulate_platform(n_learners=n_learners, seed=seed))
        load_seconds = time.perf_counter() - started
    runs = []
    if materialize:
        defs = load_defs()
        with dg.DagsterInstance.get() as instance:
            runs = materialize_all(defs, instance, review_months(engine))
    return DemoReport(url, loaded, load_seconds, runs, table_counts(engine))
