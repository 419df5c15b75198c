"""Nightly revision queues: each learner's due concepts by theme, ranked, for today."""

import datetime as dt
import os
import time

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.domain import fsrs_policy
from learning_pipelines.domain.revision import build_queues, concept_theme_keys, preference_problems

# The platform's night: queues for the day are built at 02:00 in this time zone.
SCHEDULE_TIMEZONE = os.environ.get("LEARNING_PIPELINES_SCHEDULE_TIMEZONE", "UTC")
LEARNER_CHUNK = 200  # learners per chunk: memory stays flat whatever the number of learners
QUEUE_TABLES = (tables.revision_queue_theme, tables.revision_queue_user_summary, tables.queue_stats_daily,
                tables.tag_quality_debt_log)

queue_days = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_offset=1)


def learners_with_preferences(conn: sa.Connection, log) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Learners with cards, with their calendar and valid preferences; rows of invalid preferences
    are reported and replaced by the defaults (second frame: the rejected rows and why)."""
    users, prefs, states = tables.users, tables.user_learning_prefs, tables.card_memory_states
    learners = bulk.read_frame(conn, sa.select(users.c.user_id, users.c.timezone, users.c.day_start_hour)
                               .where(users.c.user_id.in_(sa.select(states.c.user_id).distinct()))
                               .order_by(users.c.user_id))
    preferences = bulk.read_frame(conn, sa.select(prefs))
    problems = preference_problems(preferences)
    rejected = preferences.loc[problems != ""].assign(problem=problems[problems != ""])
    for row in rejected.itertuples():
        log.warning(f"user {row.user_id}: {row.problem}; using the defaults")
    valid = preferences.loc[problems == ""]
    learners = learners.merge(valid[["user_id", "spacing_multiplier", "retention_target_override",
                                     "revision_daily_target"]], on="user_id", how="left")
    learners["retention_target"] = learners["retention_target_override"].fillna(fsrs_policy.DEFAULT_RETENTION_TARGET)
    learners["spacing_multiplier"] = learners["spacing_multiplier"].fillna(1.0)
    learners["day_start_hour"] = learners["day_start_hour"].astype(int)
    return learners, rejected


@dg.asset(
    group_name="revision",
    deps=["card_memory_states"],
    partitions_def=queue_days,
    check_specs=[
        dg.AssetCheckSpec("every_due_concept_accounted_for", asset="revision_queues", blocking=True,
                          description="Every due card is in a mapped theme or logged in tag_quality_debt_log."),
        dg.AssetCheckSpec("summary_totals_match_theme_rows", asset="revision_queues", blocking=True,
                          description="Each learner's due/overdue totals equal the sum of their theme rows."),
    ],
)
def revision_queues(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """For the partition's day: per learner and theme, concepts due by the end of the learner's own day
    (overdue ones counted apart), themes ranked by due count then weaker mastery; a summary per learner
    with the recommended themes; a snapshot of the day's totals; fallbacks logged as tag-quality debt.
    Re-running a day replaces that day's rows. Learners are processed in chunks of 200."""
    started = time.perf_counter()
    day = dt.date.fromisoformat(context.partition_key)
    now = dt.datetime.now(dt.timezone.utc)
    states_table = tables.card_memory_states
    totals = {"learners": 0, "learners_with_due": 0, "due_today": 0, "overdue": 0, "debt": 0}
    theme_totals = []
    with warehouse.begin() as conn:
        for table in QUEUE_TABLES:
            conn.execute(table.delete().where(table.c.queue_date == day))
        learners, rejected = learners_with_preferences(conn, context.log)
        concept_ids = bulk.read_frame(conn, sa.select(tables.concepts.c.concept_id))["concept_id"].to_numpy()
        concept_themes = concept_theme_keys(concept_ids, bulk.read_frame(conn, sa.select(tables.concept_theme_map)),
                                            bulk.read_frame(conn, sa.select(tables.concept_edges)))
        for offset in range(0, len(learners), LEARNER_CHUNK):
            chunk = learners.iloc[offset:offset + LEARNER_CHUNK]
            states = bulk.read_frame(conn, sa.select(
                states_table.c.user_id, states_table.c.concept_id, states_table.c.stability_days,
                states_table.c.last_review_at, states_table.c.decay,
            ).where(states_table.c.user_id.in_(chunk["user_id"].tolist())))
            queues = build_queues(states, chunk, concept_themes, day)
            bulk.bulk_insert(conn, tables.revision_queue_theme, queues.themes.assign(queue_date=day))
            summaries = queues.summaries.merge(chunk[["user_id", "revision_daily_target"]], on="user_id")
            bulk.bulk_insert(conn, tables.revision_queue_user_summary,
                             summaries.assign(queue_date=day, generated_at=now))
            bulk.bulk_insert(conn, tables.tag_quality_debt_log, queues.debt.assign(queue_date=day))
            theme_totals.append(queues.themes.assign(has_due=queues.themes["due_today"] > 0)
                                .groupby("theme_key").agg(n_learners=("has_due", "sum"), due_today=("due_today", "sum"),
                                                          overdue=("overdue", "sum")))
            totals["learners"] += len(chunk)
            totals["due_today"] += int(queues.summaries["due_today_total"].sum())
            totals["overdue"] += int(queues.summaries["overdue_total"].sum())
            totals["debt"] += len(queues.debt)
            totals["learners_with_due"] += int((queues.summaries["due_today_total"] > 0).sum())
        by_theme = (pd.concat(theme_totals).groupby(level=0).sum() if theme_totals
                    else pd.DataFrame(columns=["n_learners", "due_today", "overdue"]))
        snapshot = by_theme.reset_index().rename(columns={"index": "theme_key"})
        snapshot.loc[len(snapshot)] = {"theme_key": "*", "n_learners": totals["learners_with_due"],
                                       "due_today": totals["due_today"], "overdue": totals["overdue"]}
        bulk.bulk_insert(conn, tables.queue_stats_daily, snapshot.assign(queue_date=day))
        mismatched, mapped_due = _stored_consistency(conn, day)

    accounted = mapped_due + totals["debt"] == totals["due_today"]
    return dg.MaterializeResult(
        metadata={
            "n_learners": totals["learners"],
            "due_today_total": totals["due_today"],
            "overdue_total": totals["overdue"],
            "n_tag_quality_debt": totals["debt"],
            "n_rejected_preferences": len(rejected),
            "seconds": dg.MetadataValue.float(time.perf_counter() - started),
        },
        check_results=[
            dg.AssetCheckResult(check_name="every_due_concept_accounted_for", passed=bool(accounted),
                                metadata={"due_in_mapped_themes": mapped_due, "logged_as_debt": totals["debt"],
                                          "due_today_total": totals["due_today"]}),
            dg.AssetCheckResult(check_name="summary_totals_match_theme_rows", passed=mismatched == 0,
                                metadata={"learners_mismatched": mismatched}),
        ],
    )


def _stored_consistency(conn: sa.Connection, day: dt.date) -> tuple[int, int]:
    """(learners whose summary differs from their theme rows, due cards in mapped themes), as stored."""
    theme, summary = tables.revision_queue_theme, tables.revision_queue_user_summary
    sums = (sa.select(theme.c.user_id, sa.func.sum(theme.c.due_today).label("due"),
                      sa.func.sum(theme.c.overdue).label("overdue"))
            .where(theme.c.queue_date == day).group_by(theme.c.user_id).subquery())
    mismatched = conn.execute(
        sa.select(sa.func.count()).select_from(summary.outerjoin(sums, sums.c.user_id == summary.c.user_id))
        .where(summary.c.queue_date == day,
               sa.or_(sa.func.coalesce(sums.c.due, 0) != summary.c.due_today_total,
                      sa.func.coalesce(sums.c.overdue, 0) != summary.c.overdue_total))).scalar_one()
    mapped_due = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(theme.c.due_today), 0))
        .where(theme.c.queue_date == day, ~theme.c.theme_key.like("THEME::%"), theme.c.theme_key != "UNMAPPED")
    ).scalar_one()
    return int(mismatched), int(mapped_due)


revision_queues_job = dg.define_asset_job("revision_queues_job", selection=["revision_queues"],
                                          tags={"dagster/max_runtime": str(2 * 60 * 60)})


@dg.schedule(cron_schedule="0 2 * * *", job=revision_queues_job, execution_timezone=SCHEDULE_TIMEZONE,
             default_status=dg.DefaultScheduleStatus.RUNNING)
def revision_queues_nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Today's queues at 02:00 (LEARNING_PIPELINES_SCHEDULE_TIMEZONE, default UTC)."""
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"revision_queues:{day}", partition_key=day)
