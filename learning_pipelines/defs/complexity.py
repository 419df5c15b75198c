"""Concept complexity (CDC) from the community's memory states."""

import dagster as dg

from learning_pipelines import settings
from learning_pipelines.db.complexity import scores_outside_unit_interval
from learning_pipelines.defs.card_memory_states import card_memory_states
from learning_pipelines.defs.recipe_steps import recipe_step
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.table_metadata import shown, written_table
from learning_pipelines.flows.concept_complexity import score_every_concept

# Once a day at 02:00 (LEARNING_PIPELINES_SCHEDULE_TIMEZONE), from the memory states as they are then (rollover
# windows refresh them around the clock): complexity moves slowly, and it reads every card's state.
COMPLEXITY_AUTOMATION = dg.AutomationCondition.on_cron("0 2 * * *", settings.SCHEDULE_TIMEZONE)


@dg.asset(group_name="concepts", deps=[card_memory_states], kinds={"python", "sql"},
          automation_condition=COMPLEXITY_AUTOMATION, owners=["team:learning-intelligence"],
          metadata=written_table("concept_complexity"))
@recipe_step
def concept_complexity(warehouse: Warehouse) -> dg.MaterializeResult:
    """A complexity score in [0, 1] per concept: first-review Again rate, mean FSRS difficulty and slow
    stability growth (percentiles), shrunk toward the theme's mean when few learners saw the concept,
    smoothed over the prerequisite graph. Its `seconds` metadata is the CDC calculation duration."""
    return dg.MaterializeResult(metadata=shown(score_every_concept(warehouse.engine).metadata()))


@dg.asset_check(asset=concept_complexity, blocking=True, description="Every concept has a score in [0, 1].")
def scores_in_unit_interval(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.begin() as conn:
        n_scores, n_outside = scores_outside_unit_interval(conn)
    return dg.AssetCheckResult(passed=n_outside == 0, metadata={"n_scores": int(n_scores), "n_outside": int(n_outside)})


concept_complexity_job = dg.define_asset_job(
    "concept_complexity_job", selection=[concept_complexity],
    description="Scores every concept's complexity from the current memory states (daily at 02:00 by automation).")
