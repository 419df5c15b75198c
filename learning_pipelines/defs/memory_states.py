"""Card memory states: every card's FSRS-6 state after its latest review, kept up to date incrementally."""

import time

import dagster as dg
import pandas as pd
from pydantic import Field

from learning_pipelines import pause_points
from learning_pipelines.db import memory_states as store
from learning_pipelines.defs.fsrs import fsrs_parameters
from learning_pipelines.defs.memory_state_replay import REPLAY_LEARNER_CHUNK, replay_learners
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.retries import retry_lost_races
from learning_pipelines.defs.review_logs import review_logs
from learning_pipelines.defs.table_metadata import preview, written_table
from learning_pipelines.domain import memory_states

# New reviews (reported by imports and the arrivals sensor) and new weights make the states stale: bring
# them up to date as soon as nothing upstream is running. Unlike plain eager(), an update of the states
# by another run (the nightly queue job) does not swallow a review report that came in the same tick;
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
@retry_lost_races
def card_memory_states(context: dg.AssetExecutionContext, config: MemoryStateConfig,
                       warehouse: Warehouse) -> dg.MaterializeResult:
    """Each card's stability, difficulty, last review and due time, carried forward by the reviews that
    reached the warehouse since the last run (O(new reviews)); a card that got a review older than its
    last one (or lost one to the rejects) is replayed from its history, a learner still on weights other than
    their current ones is replayed in full (normally their learner shard of fsrs_parameters has done that
    already: this covers the first run and a run between the global fit and the shards), and one whose preferences
    changed gets new due times. States and progress commit together."""
    started = time.perf_counter()
    with warehouse.begin() as conn:
        store.lock(conn)
        work = store.pending_work(conn)
        pause_points.reached("card_memory_states.work_read")
        replaying = work.learners_to_replay
        counts = store.review_counts(conn, memory_states.cards_to_count(work.new_reviews, work.stored, work.reread_upto))
        nightly = memory_states.update(work.stored, work.new_reviews, work.weights, counts, work.reread_upto,
                                       skip_learners=replaying)
        replay_cards = pd.concat([nightly.replay_cards, work.replay_requests[["user_id", "concept_id"]]])
        changed = memory_states.latest_per_card(
            store.states_of_learners(conn, work.learners_to_reschedule), nightly.advanced,
            memory_states.replay(store.card_histories(conn, replay_cards), work.weights))
        store.delete_keys(conn, store.states, work.replay_requests)  # a card may have no review left
        store.delete_keys(conn, store.replays_table, work.replay_requests)
        scheduled = memory_states.schedule(changed, *store.learner_settings(conn, changed["user_id"]))
        store.upsert_states(conn, scheduled)
        pause_points.reached("card_memory_states.states_written")
        replay_learners(conn, replaying, work.weights, config.learner_chunk)
        if len(replaying):
            store.refresh_statistics(conn)
        store.write_progress(conn, work.next_progress)
        pause_points.reached("card_memory_states.before_commit")
        n_states = store.count(conn)
    progress = work.next_progress
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n_states,
            "preview": preview(scheduled, ["user_id", "concept_id", "stability_days", "difficulty", "due_at"]),
            "new_reviews": nightly.n_new_reviews,
            "cards_advanced": len(nightly.advanced),
            "cards_replayed_late_review": len(nightly.replay_cards),
            "cards_replayed_on_request": len(work.replay_requests),
            "learners_rescheduled": len(work.learners_to_reschedule),
            "learners_replayed": len(replaying),
            "reviews_included_up_to": dg.MetadataValue.int(progress.applied_seq),
            "in_flight_transactions_from": work.in_flight_scope,
            "as_of": dg.MetadataValue.timestamp(progress.as_of),
            "seconds": dg.MetadataValue.float(time.perf_counter() - started),
        },
        data_version=dg.DataVersion(f"{progress.applied_seq}:{progress.global_version}:{progress.own_trained_at}"),
    )


card_memory_states_job = dg.define_asset_job(
    "card_memory_states_job", selection=[card_memory_states],
    # One step: a retry after its process died must run it again (from the failure there would be nothing to
    # retry once it had finished, and the nightly shards wait for this run's success).
    tags={"dagster/retry_strategy": "ALL_STEPS"},
    description="Brings card_memory_states up to date with every stored review (normally started by automation).")
