"""Concept complexity (CDC) from the community's reviews and memory states."""

import datetime as dt
import time

import dagster as dg
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.domain.complexity import complexity_scores, concept_signals
from learning_pipelines.domain.revision import concept_theme_keys


@dg.asset(
    group_name="concepts",
    deps=["card_memory_states", "review_logs"],
    check_specs=[dg.AssetCheckSpec("scores_in_unit_interval", asset="concept_complexity", blocking=True,
                                   description="Every concept has a score in [0, 1].")],
)
def concept_complexity(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """A complexity score in [0, 1] per concept: first-review Again rate, mean FSRS difficulty and slow
    stability growth (percentiles), shrunk toward the theme's mean when few learners saw the concept,
    smoothed over the prerequisite graph. Its `seconds` metadata is the CDC calculation duration."""
    started = time.perf_counter()
    intervals, logs = tables.review_log_intervals, tables.review_logs
    with warehouse.begin() as conn:
        first_reviews = bulk.read_frame(conn, (
            sa.select(intervals.c.user_id, intervals.c.concept_id, logs.c.rating)
            .join(logs, sa.and_(logs.c.id == intervals.c.review_id, logs.c.reviewed_at == intervals.c.reviewed_at))
            .where(intervals.c.review_number == 1)))
        states = bulk.read_frame(conn, sa.select(tables.card_memory_states))
        concepts = bulk.read_frame(conn, sa.select(tables.concepts.c.concept_id))["concept_id"].to_numpy()
        theme_map = bulk.read_frame(conn, sa.select(tables.concept_theme_map))
        edges = bulk.read_frame(conn, sa.select(tables.concept_edges))
    first_reviews["recalled"] = (first_reviews["rating"] > 1).astype(float)
    signals = concept_signals(first_reviews, states)
    themes = concept_theme_keys(concepts, theme_map, edges).set_index("concept_id")["theme_key"]
    scores = complexity_scores(signals, themes, edges, concepts)
    scores["computed_at"] = dt.datetime.now(dt.timezone.utc)
    columns = [c.name for c in tables.concept_complexity.columns]
    with warehouse.begin() as conn:
        conn.execute(tables.concept_complexity.delete())
        bulk.bulk_insert(conn, tables.concept_complexity, scores[columns])
    seconds = time.perf_counter() - started
    in_range = scores["score"].between(0, 1).all()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(scores),
            "n_concepts_with_learners": int((scores["n_learners"] > 0).sum()),
            "mean_score": dg.MetadataValue.float(float(scores["score"].mean())),
            "seconds": dg.MetadataValue.float(seconds),
            "hardest": dg.MetadataValue.json(scores.nlargest(5, "score")[["concept_id", "score"]].to_dict("records")),
        },
        check_results=[dg.AssetCheckResult(check_name="scores_in_unit_interval", passed=bool(in_range),
                                           metadata={"n_outside": int((~scores["score"].between(0, 1)).sum())})],
    )
