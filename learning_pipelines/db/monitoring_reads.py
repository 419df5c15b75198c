"""What the Prometheus exporter reads of the warehouse, in one pass over one connection."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import partition_migration, reads, revision_queues, tables
from learning_pipelines.domain.revision import ALL_THEMES


@dataclasses.dataclass(frozen=True)
class WarehouseFigures:
    learners_optimized: int  # learners with their own FSRS weights
    reviews: int
    rejects: int
    queue_totals: pd.Series | None  # due_today, overdue on the latest day every shard built; None: no such day
    queue_generated_at: dt.datetime | None  # when that day's last queue was written
    shadow_logloss: list[tuple[str, float]]  # (ab_group, logloss) of the latest shadow-evaluated day
    migration: dict  # partition_migration.progress_report
    latest_model: sa.Row | None  # trained_at, hr_at_10, popularity_hr_at_10 of the latest NCF model


def warehouse_figures(conn: sa.Connection, shards: list[str]) -> WarehouseFigures:
    """The figures the exporter serves; `shards`: the current learner shard keys (only a day every one of them
    built counts: a night where some shards failed is not "built")."""
    params, shadow, models = tables.srs_user_params, tables.eval_metrics_daily, tables.ncf_models
    optimized = conn.execute(sa.select(sa.func.count()).select_from(params)
                             .where(params.c.weights.is_not(None))).scalar_one()
    totals, generated = None, None
    try:
        with conn.begin_nested():
            complete = revision_queues.latest_complete_day(conn, shards)
            if complete is not None:
                totals = revision_queues.day_totals(conn, complete[0], shards).set_index("theme_key").loc[ALL_THEMES]
                generated = complete[1]
    except sa.exc.SQLAlchemyError:
        pass  # a warehouse still before migration 0010 (a runbook stop): no queue figures, the rest stays
    shadow_day = conn.execute(sa.select(sa.func.max(shadow.c.day))).scalar()
    logloss = conn.execute(sa.select(shadow.c.ab_group, shadow.c.logloss).where(
        shadow.c.day == shadow_day, shadow.c.logloss.is_not(None))).all() if shadow_day else []
    latest_model = conn.execute(sa.select(models.c.trained_at, models.c.hr_at_10, models.c.popularity_hr_at_10)
                                .order_by(models.c.model_id.desc()).limit(1)).first()
    return WarehouseFigures(optimized, reads.row_count(conn, tables.review_logs),
                            reads.row_count(conn, tables.review_log_rejects), totals, generated,
                            [(group, float(value)) for group, value in logloss],
                            partition_migration.progress_report(conn), latest_model)
