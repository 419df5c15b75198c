"""Recommendations per learner shard, from the serving NCF model, content and graph, after every training."""

import dagster as dg
import pandas as pd

from learning_pipelines import settings
from learning_pipelines.defs.learner_shards import SHARD_STEP_TAGS, every_shard, learner_shards
from learning_pipelines.defs.ncf import ncf_model
from learning_pipelines.defs.recipe_steps import recipe_step
from learning_pipelines.defs.resources import ModelStore, Warehouse
from learning_pipelines.defs.table_metadata import shown, written_table
from learning_pipelines.flows.recommendations import recommend_shard


@dg.asset(group_name="recommendations", kinds={"torch", "sql"}, owners=["team:learning-intelligence"],
          metadata=written_table("user_recommendations"),
          partitions_def=learner_shards,
          deps=[ncf_model, dg.AssetKey("concept_complexity"), dg.AssetKey("card_memory_states")])
@recipe_step
def recommendations(context: dg.AssetExecutionContext, warehouse: Warehouse,
                    model_store: ModelStore) -> dg.MaterializeResult:
    """For the learners of one learner shard, top 10 resources each: NCF + content (resources on weak concepts
    at a fitting complexity) + graph (prerequisites of weak concepts) for learners the serving model (the latest
    that beat popularity) knows; content + graph for cold learners or when no model beat popularity. Each row
    says which strategy served it (user_recommendations); the shard's rows are replaced in one transaction."""
    ranked = recommend_shard(warehouse.engine, context.partition_key, model_store, pd.Timestamp.now(tz="UTC"))
    return dg.MaterializeResult(metadata=shown(ranked.metadata()))


recommendations_job = dg.define_asset_job(
    "recommendations_job", selection=[recommendations], tags=SHARD_STEP_TAGS,
    description="One learner shard's recommendations from the serving NCF model, content and graph. Launch every "
                "shard as a backfill.")


@dg.asset_sensor(asset_key=ncf_model.key, job=recommendations_job, minimum_interval_seconds=30,
                 default_status=settings.DEFAULT_SENSOR_STATUS,
                 description="After each ncf_model run (a new serving model or not), launches every learner shard of "
                             "recommendations: one run each, keyed by that run, so a shard scores once per training.")
def recommendations_after_ncf_model(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    return every_shard(f"recommendations:{asset_event.run_id}")
