"""Concept complexity (CDC) from the community's memory states."""

import datetime as dt
import time

import dagster as dg

from learning_pipelines import settings
from learning_pipelines.db import complexity as store
from learning_pipelines.db.reads import concept_graph
from learning_pipelines.defs.memory_states import card_memory_states
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.table_metadata import written_table
from learning_pipelines.domain.complexity import score_concepts
from learning_pipelines.domain.revision import concept_theme_keys

# Once a night, after the night's memory states (the revision queue job brings them up to date at
# 02:00): complexity moves slowly, and it reads every card's state.
COMPLEXITY_AUTOMATION = dg.AutomationCondition.on_cron("0 2 * * *", settings.SCHEDULE_TIMEZONE)


@dg.asset(group_name="concepts", deps=[card_memory_states], kinds={"python", "sql"},
          automation_condition=COMPLEXITY_AUTOMATION, owners=["team:learning-intelligence"],
          metadata=written_table("concept_complexity"))
def concept_complexity(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """A complexity score in [0, 1] per concept: first-review Again rate, mean FSRS difficulty and slow
    stability growth (percentiles), shrunk toward the theme's mean when few learners saw the concept,
    smoothed over the prerequisite graph. Its `seconds` metadata is the CDC calculation duration."""
    started = time.perf_counter()
    with warehouse.begin() as conn:
        cards = store.card_signals(conn)
        concepts, theme_map, edges = concept_graph(conn)
    concept_ids = concepts["concept_id"].to_numpy()
    themes = concept_theme_keys(concept_ids, theme_map, edges).set_index("concept_id")["theme_key"]
    scores = score_concepts(cards, themes, edges, concept_ids).assign(computed_at=dt.datetime.now(dt.timezone.utc))
    with warehouse.begin() as conn:
        written = store.replace_scores(conn, scores)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": written,
        "n_concepts_with_learners": int((scores["n_learners"] > 0).sum()),
        "mean_score": dg.MetadataValue.float(float(scores["score"].mean())),
        "seconds": dg.MetadataValue.float(time.perf_counter() - started),
        "hardest": dg.MetadataValue.md(scores.nlargest(5, "score")[["concept_id", "score", "n_learners"]]
                                       .to_markdown(index=False)),
    })


@dg.asset_check(asset=concept_complexity, blocking=True, description="Every concept has a score in [0, 1].")
def scores_in_unit_interval(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.begin() as conn:
        n_scores, n_outside = store.scores_outside_unit_interval(conn)
    return dg.AssetCheckResult(passed=n_outside == 0, metadata={"n_scores": int(n_scores), "n_outside": int(n_outside)})


concept_complexity_job = dg.define_asset_job(
    "concept_complexity_job", selection=[concept_complexity],
    description="Scores every concept's complexity from the current memory states (nightly by automation).")
