"""`learning-pipelines deploy verify`: is this deployment whole, and fast enough to serve?

Eight checks, in this order, each ok or failed with what to do about it (each module of deploy/checks/ says what
its checks look at):

1. warehouse        the warehouse answers and its schema is at the Alembic head of this code; it says whose open
                    transactions card_memory_states waits for: this database's where its role is a superuser or
                    a member of pg_read_all_stats, else every database's on the server (with the GRANT to fix it).
2. dagster_storage  Dagster's run, event log and schedule storage answer and are migrated (read only).
3. month_partitions review_logs has its month partitions for this month and the next (PostgreSQL; UTC months).
4. daemons          the scheduler, sensor, run monitoring and run queue daemons wrote a heartbeat lately.
5. code_location    the gRPC code server answers and loaded the code location without an error.
6. celery_workers   enough Celery workers answer on the broker, listening on the deployment's queue.
7. metrics          the metrics exporter answers with learning_pipelines_ metrics and reaches the warehouse.
8. smoke_ingest     10,000 synthetic reviews imported into a throw-away schema, the revision queues built from them,
                    one learner's queue read fast enough.

What to verify comes from deploy/targets.py; passwords never appear in what is printed (deploy/redaction.py).
"""

from __future__ import annotations

from learning_pipelines.db.engine import DATABASE_URL_ENV
from learning_pipelines.deploy.checks.celery_workers import check_celery_workers
from learning_pipelines.deploy.checks.code_server import check_code_location
from learning_pipelines.deploy.checks.dagster_instance import check_daemons, check_dagster_storage
from learning_pipelines.deploy.checks.metrics_endpoint import check_metrics
from learning_pipelines.deploy.checks.session import Check, Outcome, Session
from learning_pipelines.deploy.checks.smoke_ingest import check_smoke_ingest
from learning_pipelines.deploy.checks.warehouse import check_month_partitions, check_warehouse
from learning_pipelines.deploy.report import CheckResult, Report
from learning_pipelines.deploy.targets import Target

CHECKS = (
    Check("warehouse", check_warehouse,
          f"`learning-pipelines db upgrade` with {DATABASE_URL_ENV} set to this warehouse"),
    Check("dagster_storage", check_dagster_storage,
          "check DAGSTER_HOME and its dagster.yaml; `DAGSTER_HOME=<instance dir> dagster instance migrate` migrates "
          "the storage"),
    Check("month_partitions", check_month_partitions,
          "learning_pipelines.db.partitions.create_month_partitions for this month and the next"),
    Check("daemons", check_daemons, "start or restart dagster-daemon, and read its log"),
    Check("code_location", check_code_location, "restart the code server and read its log"),
    Check("celery_workers", check_celery_workers,
          "start the workers: `make stack` or `dagster-celery worker start`"),
    Check("metrics", check_metrics, "start the exporter: `learning-pipelines metrics`"),
    Check("smoke_ingest", check_smoke_ingest, "read the detail, fix, and run `deploy verify` again"),
)


def verify(target: Target, checks: tuple[Check, ...] = CHECKS) -> Report:
    """Every check in order; a check that raises is a failed check with the error's first line, never a traceback."""
    session = Session(target)
    results = []
    try:
        for check in checks:
            try:
                outcome = check.run(session)
            except Exception as error:  # noqa: BLE001 - a check that breaks is a failed check, reported, not a crash
                outcome = Outcome(False, f"{type(error).__name__}: {session.reason(error)}")
            results.append(CheckResult(check.name, outcome.ok, outcome.detail,
                                       "" if outcome.ok else (outcome.remedy or check.remedy)))
    finally:
        session.close()
    return Report(target, results)
