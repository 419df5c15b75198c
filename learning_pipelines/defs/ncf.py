"""NCF embeddings and hybrid recommendations, retrained when interactions grow."""

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd
from pydantic import Field

from learning_pipelines import pause_points, settings
from learning_pipelines.db import learner_locks, ncf_store, reads
from learning_pipelines.defs.learner_shards import learner_shards
from learning_pipelines.defs.resources import ModelStore, Warehouse
from learning_pipelines.defs.retries import retry_lost_races
from learning_pipelines.defs.table_metadata import preview, written_table
from learning_pipelines.domain import recommend
from learning_pipelines.domain.chunking import LEARNER_CHUNK
from learning_pipelines.domain.ncf_config import MIN_POSITIVES, NcfConfig
from learning_pipelines.observability.structured_logs import asset_logger

if TYPE_CHECKING:  # torch loads only in the steps that train or score
    from learning_pipelines.domain.ncf import NcfScores
    from learning_pipelines.domain.ncf_search import ConfigChoice

RETRAIN_GROWTH = 0.2  # retrain when interactions grew by more than this fraction since the last model
RECOMMENDATIONS_PER_LEARNER = 10  # what a learner's page shows
_DEFAULT = NcfConfig()


class NcfTrainingConfig(dg.Config):
    """By default NeuMF's sizes, negatives, learning rate, weight decay and epochs are chosen on validation inside
    the training data (domain.ncf_search); with choose_by_validation off, the fixed settings below train it
    (defaults: domain.ncf.NcfConfig's)."""

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
@retry_lost_races
def ncf_model(context: dg.AssetExecutionContext, config: NcfTrainingConfig, warehouse: Warehouse,
              model_store: ModelStore) -> dg.MaterializeResult:
    """NeuMF trained on every learner's interactions but the latest (held out to score HR@10 and NDCG@10
    against popularity), its configuration chosen on each learner's second-latest (the choice is in the metadata);
    checkpoint in the ModelStore and a row in ncf_models whatever its scores. Only a model that beats popularity
    becomes the serving one: its embeddings replace ncf_user_embeddings and ncf_item_embeddings. With fewer than
    10 positive interactions it records why and writes nothing."""
    log = asset_logger(context)
    with warehouse.begin() as conn:
        interactions = ncf_store.interactions(conn)
        n_models = ncf_store.n_models(conn)
    n_positives = len(interactions.drop_duplicates(["user", "item"]))
    if n_positives < MIN_POSITIVES:
        reason = (f"only {n_positives} positive interaction(s); NCF needs at least {MIN_POSITIVES}: "
                  "recommendations use the content and graph fallback")
        log.warning(reason, n_positives=n_positives)
        return dg.MaterializeResult(
            metadata={"dagster/row_count": n_models, "trained": False, "reason": reason,
                      "n_interactions": len(interactions)},
            check_results=[dg.AssetCheckResult(check_name="ncf_beats_popularity", passed=True,
                                               metadata={"skipped": reason})])
    # torch loads only in the steps that train or score: imported with the code location it would add about 2 s
    # to the start of every run worker and Celery step process.
    from learning_pipelines.domain.ncf import fit_and_evaluate

    trained = fit_and_evaluate(interactions, None if config.choose_by_validation else config.to_ncf_config(),
                               seed=config.seed)
    scores, chosen = trained.scores, trained.checkpoint.config
    serves = ncf_store.beats_popularity(scores)
    now = dt.datetime.now(dt.timezone.utc)
    uri = model_store.save(f"ncf/{now:%Y%m%dT%H%M%S}.pt", trained.checkpoint.to_bytes())
    pause_points.reached("ncf_model.trained")
    with warehouse.begin() as conn:
        if serves:  # only learners that still exist, locked against `learners forget` until commit
            embeddings = trained.checkpoint.embeddings()
            embeddings = embeddings.of_learners(learner_locks.lock_existing(conn, embeddings.user_ids))
        model_id = ncf_store.record_model(conn, trained_at=now, checkpoint_uri=uri, n_interactions=len(interactions),
                                          scores=scores, epochs=chosen.epochs)
        if serves:
            ncf_store.replace_embeddings(conn, model_id, embeddings)
        serving = ncf_store.latest_model(conn, beating_popularity=True)
        pause_points.reached("ncf_model.before_commit")
    if not serves:
        log.warning("model does not beat popularity: recorded, not serving", model_id=model_id,
                    hr_at_10=round(scores.hr_at_10, 4), popularity_hr_at_10=round(scores.popularity_hr_at_10, 4),
                    serving=f"model {serving.model_id}" if serving else "content and graph fallback")
    return dg.MaterializeResult(
        metadata={"dagster/row_count": n_models + 1, "trained": True, "model_id": model_id, "serving": serves,
                  "hr_at_10": dg.MetadataValue.float(scores.hr_at_10),
                  "ndcg_at_10": dg.MetadataValue.float(scores.ndcg_at_10),
                  "popularity_hr_at_10": dg.MetadataValue.float(scores.popularity_hr_at_10),
                  "popularity_ndcg_at_10": dg.MetadataValue.float(scores.popularity_ndcg_at_10),
                  "scores": dg.MetadataValue.md(
                      "Leave-one-out on each learner's latest interaction\n\n| ranking | HR@10 | NDCG@10 |\n|---|---:|---:|\n"
                      f"| NeuMF (model {model_id}) | {scores.hr_at_10:.4f} | {scores.ndcg_at_10:.4f} |\n"
                      f"| popularity | {scores.popularity_hr_at_10:.4f} | {scores.popularity_ndcg_at_10:.4f} |"),
                  "epochs": chosen.epochs,
                  "config": dg.MetadataValue.json(dataclasses.asdict(chosen)),
                  "chosen_by_validation": trained.choice is not None,
                  **(_search_metadata(trained.choice, scores) if trained.choice else {}),
                  "seconds": dg.MetadataValue.float(scores.train_seconds), "n_users": scores.n_users,
                  "n_items": scores.n_items, "checkpoint": uri},
        check_results=[dg.AssetCheckResult(
            check_name="ncf_beats_popularity", passed=serves,
            metadata={"hr_at_10": scores.hr_at_10, "popularity_hr_at_10": scores.popularity_hr_at_10,
                      "serving_model_id": serving.model_id if serving else -1})])


def _search_metadata(choice: "ConfigChoice", scores: "NcfScores") -> dict:
    """The validation search behind the chosen configuration: its cost and every candidate's run."""
    rows = "\n".join(
        f"| {t.config.gmf_factors} | {'-'.join(map(str, t.config.mlp_layers))} | {t.config.negatives_per_positive} "
        f"| {t.config.learning_rate:g} | {t.config.weight_decay:g} | {t.config.history_length or '-'} "
        f"| {t.epochs_trained} | {t.best_epoch} "
        f"| {t.validation_hr_at_10:.4f} | {t.validation_ndcg_at_10:.4f} |" for t in choice.trials)
    return {"search_seconds": dg.MetadataValue.float(scores.search_seconds),
            "search_cost": dg.MetadataValue.float(scores.search_cost),
            "search": dg.MetadataValue.md(
                f"Candidates on validation (the chosen one first; a round: {choice.config.round_positives:,} "
                "interactions and their negatives)\n\n| GMF | MLP | negatives | lr | weight decay "
                "| history | rounds trained | best round | HR@10 | NDCG@10 |\n"
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
                + rows)}


@dg.asset(group_name="recommendations", kinds={"torch", "sql"}, owners=["team:learning-intelligence"],
          metadata=written_table("user_recommendations"),
          partitions_def=learner_shards,
          deps=[ncf_model, dg.AssetKey("concept_complexity"), dg.AssetKey("card_memory_states")])
@retry_lost_races
def recommendations(context: dg.AssetExecutionContext, warehouse: Warehouse,
                    model_store: ModelStore) -> dg.MaterializeResult:
    """For the learners of one learner shard, top 10 resources each: NCF + content (resources on weak concepts
    at a fitting complexity) + graph (prerequisites of weak concepts) for learners the serving model (the latest
    that beat popularity) knows; content + graph for cold learners or when no model beat popularity. Each row
    says which strategy served it (user_recommendations); the shard's rows are replaced in one transaction."""
    now = pd.Timestamp.now(tz="UTC")
    with warehouse.begin() as conn:
        serving = ncf_store.latest_model(conn, beating_popularity=True)
        user_ids = reads.shard_learners(conn, context.partition_key)
        inputs = ncf_store.recommendation_inputs(conn, user_ids)
    from learning_pipelines.domain.ncf import NcfCheckpoint  # torch: see ncf_model

    checkpoint = NcfCheckpoint.from_bytes(model_store.load(serving.checkpoint_uri)) if serving else None
    ranked = recommend.recommend(inputs, checkpoint, now, k=RECOMMENDATIONS_PER_LEARNER,
                                 learners_per_chunk=LEARNER_CHUNK)
    pause_points.reached("recommendations.ranked")
    with warehouse.begin() as conn:
        # Only learners that still exist, locked against `learners forget` until commit (db/learner_locks).
        existing = learner_locks.lock_existing(conn, user_ids)
        if len(ranked):
            ranked = ranked.loc[ranked["user_id"].isin(existing)]
        written = ncf_store.replace_recommendations(conn, ranked, serving.model_id if serving else None, now,
                                                    user_ids)
        pause_points.reached("recommendations.before_commit")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": written, "n_learners": int(ranked["user_id"].nunique()) if len(ranked) else 0,
        "learners_by_strategy": dg.MetadataValue.json(recommend.learners_by_strategy(ranked)),
        "model_id": serving.model_id if serving else -1,
        "preview": preview(ranked, ["user_id", "rank", "resource_id", "score", "strategy"]),
    })


ncf_job = dg.define_asset_job(
    "ncf_job", selection=[ncf_model],
    tags={"dagster/max_runtime": str(2 * 3600)},
    description="Retrains NeuMF on every interaction; every learner shard's recommendations follow "
                "(recommendations_after_ncf_model).")
# A shard's step stays well under RabbitMQ's consumer_timeout (30 minutes by default), as fsrs_optimization_job's.
recommendations_job = dg.define_asset_job(
    "recommendations_job", selection=[recommendations], tags={"dagster/max_runtime": str(25 * 60)},
    description="One learner shard's recommendations from the serving NCF model, content and graph. Launch every "
                "shard as a backfill.")


@dg.asset_sensor(asset_key=ncf_model.key, job=recommendations_job, minimum_interval_seconds=30,
                 default_status=settings.DEFAULT_SENSOR_STATUS,
                 description="After each ncf_model run (a new serving model or not), launches every learner shard of "
                             "recommendations: one run each, keyed by that run, so a shard scores once per training.")
def recommendations_after_ncf_model(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    return [dg.RunRequest(run_key=f"recommendations:{asset_event.run_id}:{shard}", partition_key=shard)
            for shard in learner_shards.get_partition_keys()]


@dg.sensor(job=ncf_job, minimum_interval_seconds=3600, default_status=settings.DEFAULT_SENSOR_STATUS,
             description=("Retrains NCF when interactions grew by more than 20 % since the latest model (or when there is none "
                          "and enough interactions exist). One request per model it replaces: the run key names that model."))
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
