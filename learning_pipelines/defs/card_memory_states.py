"""Card memory states: every card's FSRS-6 state after its latest review, kept up to date incrementally."""

import dagster as dg
from pydantic import Field

from learning_pipelines.defs.fsrs import fsrs_parameters
from learning_pipelines.defs.learner_calendars import warn_of_calendar_fallbacks
from learning_pipelines.defs.recipe_steps import recipe_step
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.review_logs import review_logs
from learning_pipelines.defs.table_metadata import shown, written_table
from learning_pipelines.domain.chunking import REPLAY_LEARNER_CHUNK
from learning_pipelines.flows.card_memory_states import bring_up_to_date

# New reviews (reported by imports and the arrivals sensor) and new weights make the states stale: bring
# them up to date as soon as nothing upstream is running. Unlike plain eager(), an update of the states
# by another run (a rollover window's refresh) does not swallow a review report that came in the same tick;
# at worst that costs one run with nothing new. Missing review_logs months are the norm (partitions
# start in 2000), so they do not hold the update back.
MEMORY_STATES_AUTOMATION = (
    dg.AutomationCondition.eager()
    .without(~dg.AutomationCondition.any_deps_missing())
    .replace("handled", dg.AutomationCondition.newly_requested() | dg.AutomationCondition.initial_evaluation())
    .with_label("eager: new reviews or new weights")
)


class MemoryStateConfig(dg.Config):
    learner_chunk: int = Field(default=REPLAY_LEARNER_CHUNK, description="learners replayed per read when their "
                               "weights changed: memory stays flat whatever the number of learners")


@dg.asset(
    group_name="fsrs",
    deps=[review_logs, fsrs_parameters],
    kinds={"python", "sql"},
    automation_condition=MEMORY_STATES_AUTOMATION,
    pool="card_memory_states",
    owners=["team:learning-intelligence"],
    metadata=written_table("card_memory_states", "card_memory_state_progress"),
)
@recipe_step
def card_memory_states(context: dg.AssetExecutionContext, config: MemoryStateConfig,
                       warehouse: Warehouse) -> dg.MaterializeResult:
    """Each card's stability, difficulty, last review and due time, carried forward by the reviews that
    reached the warehouse since the last run (O(new reviews)); a card that got a review older than its
    last one (or lost one to the rejects) is replayed from its history, a learner still on weights other than
    their current ones is replayed in full (normally their learner shard of fsrs_parameters has done that
    already: this covers the first run and a run between the global fit and the shards), and one whose preferences
    changed gets new due times. States and progress commit together. A learner whose time zone is not a key of
    tzdata is scheduled on UTC days, with a warning."""
    with warehouse.begin() as conn:
        summary = bring_up_to_date(conn, config.learner_chunk)
    warn_of_calendar_fallbacks(context, summary.calendar_fallbacks)
    return dg.MaterializeResult(metadata=shown(summary.metadata()), data_version=dg.DataVersion(summary.data_version()))


card_memory_states_job = dg.define_asset_job(
    "card_memory_states_job", selection=[card_memory_states],
    # One step: a retry after its process died must run it again (from the failure there would be nothing to
    # retry once it had finished, and a rollover window's shards wait for this run's success).
    tags={"dagster/retry_strategy": "ALL_STEPS"},
    description="Brings card_memory_states up to date with every stored review (normally started by automation).")
