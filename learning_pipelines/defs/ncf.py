"""NCF embeddings and hybrid recommendations, retrained when interactions grow."""

import dataclasses
import datetime as dt
import io
import json

import dagster as dg
import numpy as np
import pandas as pd
import sqlalchemy as sa
import torch

from learning_pipelines.db import bulk, tables
from learning_pipelines.defs.resources import ModelStore, Warehouse, to_bytes
from learning_pipelines.domain import fsrs
from learning_pipelines.domain.ncf import MIN_POSITIVES, NcfConfig, NeuMF, fit_and_evaluate
from learning_pipelines.domain.recommend import content_and_graph_scores, rank_resources

RETRAIN_GROWTH = 0.2  # retrain when interactions grew by more than this fraction since the last model
RECOMMENDATIONS_PER_LEARNER = 10
LEARNER_CHUNK = 200


def _interactions(conn: sa.Connection) -> pd.DataFrame:
    ui = tables.user_interactions
    frame = bulk.read_frame(conn, sa.select(ui.c.user_id, ui.c.resource_id, ui.c.occurred_at))
    return frame.rename(columns={"user_id": "user", "resource_id": "item", "occurred_at": "time"})


@dg.asset(
    group_name="recommendations",
    kinds={"torch"},
    check_specs=[dg.AssetCheckSpec("ncf_beats_popularity", asset="ncf_model", blocking=True,
                                   description="On the held-out latest interaction per learner, NCF's HR@10 "
                                               "beats the popularity baseline's.")],
)
def ncf_model(context: dg.AssetExecutionContext, warehouse: Warehouse, model_store: ModelStore) -> dg.MaterializeResult:
    """NeuMF trained on every learner's interactions but the latest (held out to score HR@10 and NDCG@10
    against popularity); checkpoint in the ModelStore, embeddings in ncf_user_embeddings and
    ncf_item_embeddings. With fewer than 10 positive interactions it records why and writes nothing."""
    with warehouse.begin() as conn:
        interactions = _interactions(conn)
    positives = interactions.drop_duplicates(["user", "item"])
    if len(positives) < MIN_POSITIVES:
        reason = (f"only {len(positives)} positive interaction(s); NCF needs at least {MIN_POSITIVES}: "
                  "recommendations use the content and graph fallback")
        context.log.warning(reason)
        return dg.MaterializeResult(
            metadata={"trained": False, "reason": reason, "n_interactions": len(interactions)},
            check_results=[dg.AssetCheckResult(check_name="ncf_beats_popularity", passed=True,
                                               metadata={"skipped": reason})])
    config = NcfConfig()
    model, scores = fit_and_evaluate(interactions, config)
    hr, ndcg, pop_hr, seconds = (scores["hr_at_10"], scores["ndcg_at_10"], scores["popularity_hr_at_10"],
                                 scores["train_seconds"])
    user_ids = np.sort(interactions["user"].unique())
    resource_ids = np.sort(interactions["item"].unique())
    now = dt.datetime.now(dt.timezone.utc)
    checkpoint = to_bytes(lambda buffer: torch.save({
        "state": model.state_dict(), "config": dataclasses.asdict(config),
        "user_ids": user_ids.tolist(), "resource_ids": resource_ids.tolist()}, buffer))
    uri = model_store.save(f"ncf/{now:%Y%m%dT%H%M%S}.pt", checkpoint)
    with warehouse.begin() as conn:
        model_id = conn.execute(tables.ncf_models.insert().values(
            trained_at=now, checkpoint_uri=uri, n_interactions=len(interactions), n_users=scores["n_users"],
            n_items=scores["n_items"], hr_at_10=hr, ndcg_at_10=ndcg, popularity_hr_at_10=pop_hr, epochs=config.epochs,
            train_seconds=seconds).returning(tables.ncf_models.c.model_id)).scalar_one()
        for table, key, ids, parts in (
            (tables.ncf_user_embeddings, "user_id", user_ids, (model.gmf_user, model.mlp_user)),
            (tables.ncf_item_embeddings, "resource_id", resource_ids, (model.gmf_item, model.mlp_item)),
        ):
            vectors = torch.cat([p.weight.detach() for p in parts], dim=1).numpy()
            conn.execute(table.delete())
            bulk.bulk_insert(conn, table, pd.DataFrame({
                key: ids, "model_id": model_id, "embedding": [json.dumps(np.round(v, 6).tolist()) for v in vectors]}))
    return dg.MaterializeResult(
        metadata={"trained": True, "model_id": int(model_id), "hr_at_10": dg.MetadataValue.float(hr),
                  "ndcg_at_10": dg.MetadataValue.float(ndcg), "popularity_hr_at_10": dg.MetadataValue.float(pop_hr),
                  "epochs": config.epochs, "seconds": dg.MetadataValue.float(seconds), "n_users": scores["n_users"],
                  "n_items": scores["n_items"], "checkpoint": uri},
        check_results=[dg.AssetCheckResult(check_name="ncf_beats_popularity", passed=hr > pop_hr,
                                           metadata={"hr_at_10": hr, "popularity_hr_at_10": pop_hr})])


def load_latest_model(conn: sa.Connection, store: ModelStore):
    """(model, user_ids, resource_ids, model_id) of the latest NCF model that beat popularity, or None."""
    models = tables.ncf_models
    latest = conn.execute(sa.select(models).where(models.c.hr_at_10 > models.c.popularity_hr_at_10)
                          .order_by(models.c.model_id.desc()).limit(1)).first()
    if latest is None:
        return None
    saved = torch.load(io.BytesIO(store.load(latest.checkpoint_uri)), weights_only=False)
    config = NcfConfig(**{**saved["config"], "mlp_layers": tuple(saved["config"]["mlp_layers"])})
    model = NeuMF(len(saved["user_ids"]), len(saved["resource_ids"]), config)
    model.load_state_dict(saved["state"])
    model.eval()
    return model, np.array(saved["user_ids"]), np.array(saved["resource_ids"]), latest.model_id


@dg.asset(group_name="recommendations", deps=["ncf_model", "concept_complexity", "card_memory_states"])
def recommendations(context: dg.AssetExecutionContext, warehouse: Warehouse,
                    model_store: ModelStore) -> dg.MaterializeResult:
    """Top 10 resources per learner: NCF + content (resources on weak concepts at a fitting complexity) +
    graph (prerequisites of weak concepts) for learners NCF knows; content + graph for cold learners or when
    no model exists. Each row says which strategy served it (user_recommendations)."""
    now = pd.Timestamp.now(tz="UTC")
    with warehouse.begin() as conn:
        loaded = load_latest_model(conn, model_store)
        states = bulk.read_frame(conn, sa.select(tables.card_memory_states))
        resources = bulk.read_frame(conn, sa.select(tables.resources))
        resource_concepts = bulk.read_frame(conn, sa.select(tables.resource_concepts))
        complexity = bulk.read_frame(conn, sa.select(tables.concept_complexity.c.concept_id,
                                                     tables.concept_complexity.c.score))
        edges = bulk.read_frame(conn, sa.select(tables.concept_edges))
        seen = bulk.read_frame(conn, sa.select(tables.user_interactions.c.user_id,
                                               tables.user_interactions.c.resource_id).distinct())
        learners = bulk.read_frame(conn, sa.select(tables.users.c.user_id))["user_id"].to_numpy()
    elapsed = (now - states["last_review_at"]).dt.total_seconds() / 86400
    weights = fsrs.decay_only_weights(states["decay"])
    states["weakness"] = 1.0 - fsrs.retrievability(elapsed.to_numpy(), states["stability_days"].to_numpy(float), weights)
    complexity_by_concept = complexity.set_index("concept_id")["score"]
    resource_ids = resources["resource_id"].to_numpy()
    pieces = []
    for offset in range(0, len(learners), LEARNER_CHUNK):
        chunk = learners[offset:offset + LEARNER_CHUNK]
        signals = content_and_graph_scores(states.loc[states["user_id"].isin(chunk), ["user_id", "concept_id", "weakness"]],
                                           resource_concepts, resources, complexity_by_concept, edges)
        ncf_scores, warm = None, np.zeros(len(chunk), dtype=bool)
        if loaded is not None:
            model, known_users, known_items, _ = loaded
            user_code = pd.Index(known_users).get_indexer(chunk)
            item_code = pd.Index(known_items).get_indexer(resource_ids)
            warm = user_code >= 0
            with torch.no_grad():
                users = torch.from_numpy(np.repeat(np.maximum(user_code, 0), len(resource_ids)))
                items = torch.from_numpy(np.tile(np.maximum(item_code, 0), len(chunk)))
                ncf_scores = torch.sigmoid(model(users, items)).numpy().reshape(len(chunk), len(resource_ids))
            ncf_scores[:, item_code < 0] = 0.0  # resources the model never saw
        pieces.append(rank_resources(chunk, resource_ids, signals, seen, ncf_scores, warm, RECOMMENDATIONS_PER_LEARNER))
    table = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()
    table["model_id"] = loaded[3] if loaded is not None else None
    table["generated_at"] = now
    with warehouse.begin() as conn:
        conn.execute(tables.user_recommendations.delete())
        bulk.bulk_insert(conn, tables.user_recommendations, table)
    by_strategy = table.drop_duplicates("user_id")["strategy"].value_counts().to_dict() if len(table) else {}
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(table), "n_learners": int(table["user_id"].nunique()) if len(table) else 0,
        "learners_by_strategy": dg.MetadataValue.json({k: int(v) for k, v in by_strategy.items()}),
        "model_id": int(loaded[3]) if loaded is not None else -1,
    })


ncf_job = dg.define_asset_job("ncf_job", selection=["ncf_model", "recommendations"],
                              tags={"learning_pipelines/exclusive": "ncf_training", "dagster/max_runtime": str(2 * 3600)})


@dg.sensor(job=ncf_job, minimum_interval_seconds=3600, default_status=dg.DefaultSensorStatus.RUNNING)
def ncf_retraining_sensor(context: dg.SensorEvaluationContext, warehouse: Warehouse) -> dg.SensorResult:
    """Retrains NCF when interactions grew by more than 20 % since the latest model (or when there is
    none and enough interactions exist). One request per model it replaces: the run key names that model."""
    with warehouse.begin() as conn:
        n_interactions = conn.execute(sa.select(sa.func.count()).select_from(tables.user_interactions)).scalar_one()
        latest = conn.execute(sa.select(tables.ncf_models.c.model_id, tables.ncf_models.c.n_interactions)
                              .order_by(tables.ncf_models.c.model_id.desc()).limit(1)).first()
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
