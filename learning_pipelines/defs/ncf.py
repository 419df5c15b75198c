"""NCF: NeuMF trained on every interaction, its check, its job, retrained when interactions grow."""

import dataclasses

import dagster as dg
from pydantic import Field

from learning_pipelines import settings
from learning_pipelines.db import ncf_store
from learning_pipelines.defs.recipe_steps import recipe_step
from learning_pipelines.defs.resources import ModelStore, Warehouse
from learning_pipelines.defs.table_metadata import shown, written_table
from learning_pipelines.domain.ncf_config import MIN_POSITIVES, NcfConfig
from learning_pipelines.flows.ncf_training import NcfTrainingSummary, train_ncf
from learning_pipelines.observability.structured_logs import asset_logger

RETRAIN_GROWTH = 0.2  # retrain when interactions grew by more than this fraction since the last model
_DEFAULT = NcfConfig()


class NcfTrainingConfig(dg.Config):
    """By default NeuMF's sizes, negatives, learning rate, weight decay and epochs are chosen on validation inside
    the training data (domain.ncf_search); with choose_by_validation off, the fixed settings below train it
    (defaults: domain.ncf_config.NcfConfig's)."""

    choose_by_validation: bool = Field(
        default=True, description="choose the configuration on each learner's second-latest interaction (the "
                                  "settings below then only give the seed); off: train the settings below")
    gmf_factors: int = Field(default=_DEFAULT.gmf_factors, description="GMF embedding size")
    mlp_layers: list[int] = Field(default=list(_DEFAULT.mlp_layers),
                                  description="MLP widths, input first (even: half user, half item embedding)")
    negatives_per_positive: int = Field(default=_DEFAULT.negatives_per_positive,
                                        description="negatives sampled per positive, fresh every epoch")
    epochs: int = Field(default=_DEFAULT.epochs,
                        description="passes over the training interactions, or rounds of round_positives when set "
                                    "(a chosen configuration counts rounds of half a pass)")
    batch_size: int = Field(default=_DEFAULT.batch_size, description="examples per optimizer step")
    learning_rate: float = Field(default=_DEFAULT.learning_rate, description="Adam's learning rate")
    weight_decay: float = Field(default=_DEFAULT.weight_decay, description="Adam's L2 penalty")
    seed: int = Field(default=_DEFAULT.seed, description="seeds initialisation, sampling and the held-out split")
    round_positives: int = Field(default=_DEFAULT.round_positives,
                                 description="0: an epoch is a whole pass; else this many positives at a time")
    history_length: int = Field(default=_DEFAULT.history_length,
                                description="0: plain NeuMF; else a learner also counts as a recency-weighted "
                                            "average of history embeddings over the resources they used last, "
                                            "this many")

    def to_ncf_config(self) -> NcfConfig:
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(NcfConfig)}
        return NcfConfig(**values | {"mlp_layers": tuple(self.mlp_layers)})


@dg.asset(
    group_name="recommendations",
    kinds={"torch", "sql"},
    pool="ncf_training",
    owners=["team:learning-intelligence"],
    metadata=written_table("ncf_models", "ncf_user_embeddings", "ncf_item_embeddings"),
    check_specs=[dg.AssetCheckSpec("ncf_beats_popularity", asset="ncf_model",
                                   description="On the held-out latest interaction per learner, NCF's HR@10 "
                                               "beats the popularity baseline's. A model that fails is recorded "
                                               "but never serves: recommendations keep the latest model that "
                                               "passed, or the content + graph fallback.")],
)
@recipe_step
def ncf_model(context: dg.AssetExecutionContext, config: NcfTrainingConfig, warehouse: Warehouse,
              model_store: ModelStore) -> dg.MaterializeResult:
    """NeuMF trained on every learner's interactions but the latest (held out to score HR@10 and NDCG@10
    against popularity), its configuration chosen on each learner's second-latest (the choice is in the metadata);
    checkpoint in the ModelStore and a row in ncf_models whatever its scores. Only a model that beats popularity
    becomes the serving one: its embeddings replace ncf_user_embeddings and ncf_item_embeddings. With fewer than
    10 positive interactions it records why and writes nothing."""
    trained = train_ncf(warehouse.engine, model_store, None if config.choose_by_validation else config.to_ncf_config(),
                        seed=config.seed)
    if trained.skipped or not trained.serves:
        message, fields = trained.warning()
        asset_logger(context).warning(message, **fields)
    return dg.MaterializeResult(metadata=shown(trained.metadata()), check_results=[_beats_popularity(trained)])


def _beats_popularity(trained: NcfTrainingSummary) -> dg.AssetCheckResult:
    if trained.skipped:
        return dg.AssetCheckResult(check_name="ncf_beats_popularity", passed=True, metadata={"skipped": trained.skipped})
    return dg.AssetCheckResult(check_name="ncf_beats_popularity", passed=trained.serves, metadata={
        "hr_at_10": trained.scores.hr_at_10, "popularity_hr_at_10": trained.scores.popularity_hr_at_10,
        "serving_model_id": trained.serving_model_id if trained.serving_model_id is not None else -1})


ncf_job = dg.define_asset_job(
    "ncf_job", selection=[ncf_model],
    tags={"dagster/max_runtime": str(2 * 3600)},
    description="Retrains NeuMF on every interaction; every learner shard's recommendations follow "
                "(recommendations_after_ncf_model).")


@dg.sensor(job=ncf_job, minimum_interval_seconds=3600, default_status=settings.DEFAULT_SENSOR_STATUS,
           description="Retrains NCF when interactions grew by more than 20 % since the latest model (or when there is "
                       "none and enough interactions exist). One request per model it replaces: the run key names that "
                       "model.")
def ncf_retraining_sensor(context: dg.SensorEvaluationContext, warehouse: Warehouse) -> dg.SensorResult:
    with warehouse.begin() as conn:
        n_interactions = ncf_store.interaction_count(conn)
        latest = ncf_store.latest_model(conn)
    base_id, base_count = (latest.model_id, latest.n_interactions) if latest else (0, 0)
    grew = n_interactions >= MIN_POSITIVES and n_interactions > base_count * (1 + RETRAIN_GROWTH)
    step = f"after_model_{base_id}"
    if not grew:
        return dg.SensorResult(skip_reason=f"{n_interactions} interactions; the latest model saw {base_count}",
                               cursor=context.cursor)
    if context.cursor == step:
        return dg.SensorResult(skip_reason=f"retraining after model {base_id} already requested", cursor=step)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"ncf_retrain:{step}",
                                                       tags={"ncf/interactions": str(n_interactions)})], cursor=step)
