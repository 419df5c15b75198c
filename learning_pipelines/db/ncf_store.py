"""NCF's reads and writes: interactions in, the model registry (ncf_models), embeddings, recommendations."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, tables
from learning_pipelines.domain.ncf_results import NcfEmbeddings, NcfScores
from learning_pipelines.domain.recommend import RecommendationInputs


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """One row of ncf_models: where its checkpoint lives and how many interactions it saw."""
    model_id: int
    checkpoint_uri: str
    n_interactions: int


def interactions(conn: sa.Connection) -> pd.DataFrame:
    """Every interaction as user, item, time (the columns domain/ncf_fit trains on)."""
    ui = tables.user_interactions
    frame = bulk.read_frame(conn, sa.select(ui.c.user_id, ui.c.resource_id, ui.c.occurred_at))
    return frame.rename(columns={"user_id": "user", "resource_id": "item", "occurred_at": "time"})


def interaction_count(conn: sa.Connection) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(tables.user_interactions)).scalar_one()


def beats_popularity(scores: NcfScores) -> bool:
    """Whether a model may serve: its held-out HR@10 above popularity's, the rule `latest_model` applies to the
    scores ncf_models records."""
    return scores.hr_at_10 > scores.popularity_hr_at_10


def n_models(conn: sa.Connection) -> int:
    """Models recorded in ncf_models, serving or not."""
    return conn.execute(sa.select(sa.func.count()).select_from(tables.ncf_models)).scalar_one()


def latest_model(conn: sa.Connection, beating_popularity: bool = False) -> ModelRecord | None:
    """The latest model recorded, or with `beating_popularity` the serving one: the latest whose HR@10 beat
    popularity's. None when there is none."""
    models = tables.ncf_models
    query = sa.select(models.c.model_id, models.c.checkpoint_uri, models.c.n_interactions)
    if beating_popularity:
        query = query.where(models.c.hr_at_10 > models.c.popularity_hr_at_10)
    row = conn.execute(query.order_by(models.c.model_id.desc()).limit(1)).first()
    return ModelRecord(int(row.model_id), row.checkpoint_uri, int(row.n_interactions)) if row else None


def record_model(conn: sa.Connection, *, trained_at: dt.datetime, checkpoint_uri: str, n_interactions: int,
                 scores: NcfScores, epochs: int) -> int:
    """Add a trained model to ncf_models (whatever its scores); its model_id."""
    models = tables.ncf_models
    return int(conn.execute(models.insert().values(
        trained_at=trained_at, checkpoint_uri=checkpoint_uri, n_interactions=n_interactions, n_users=scores.n_users,
        n_items=scores.n_items, hr_at_10=scores.hr_at_10, ndcg_at_10=scores.ndcg_at_10,
        popularity_hr_at_10=scores.popularity_hr_at_10, epochs=epochs, train_seconds=scores.train_seconds,
    ).returning(models.c.model_id)).scalar_one())


def _as_json(vectors: np.ndarray) -> list[str]:
    return [json.dumps(np.round(vector, 6).tolist()) for vector in vectors]


def replace_embeddings(conn: sa.Connection, model_id: int, embeddings: NcfEmbeddings) -> int:
    """ncf_user_embeddings and ncf_item_embeddings hold this model's vectors only; rows written."""
    written = 0
    for table, key, ids, vectors in (
        (tables.ncf_user_embeddings, "user_id", embeddings.user_ids, embeddings.user_vectors),
        (tables.ncf_item_embeddings, "resource_id", embeddings.resource_ids, embeddings.resource_vectors),
    ):
        conn.execute(table.delete())
        written += bulk.bulk_insert(conn, table, pd.DataFrame({key: ids, "model_id": model_id,
                                                               "embedding": _as_json(vectors)}))
    return written


def recommendation_inputs(conn: sa.Connection, user_ids) -> RecommendationInputs:
    """What recommending to the learners `user_ids` (a learner shard) reads: their memory states and used
    resources, and the catalogue every learner shares."""
    states, resources, complexity = tables.card_memory_states, tables.resources, tables.concept_complexity
    edges, used = tables.concept_edges, tables.user_interactions
    return RecommendationInputs(
        memory_states=bulk.read_frame_with_ids(
            conn, sa.select(states.c.user_id, states.c.concept_id, states.c.stability_days, states.c.decay,
                            states.c.last_review_at), states.c.user_id, user_ids),
        resources=bulk.read_frame(conn, sa.select(resources.c.resource_id, resources.c.difficulty)),
        resource_concepts=bulk.read_frame(conn, sa.select(tables.resource_concepts)),
        complexity=bulk.read_frame(conn, sa.select(complexity.c.concept_id, complexity.c.score))
        .set_index("concept_id")["score"],
        edges=bulk.read_frame(conn, sa.select(edges.c.prerequisite_id, edges.c.concept_id)),
        used=bulk.read_frame_with_ids(
            conn, sa.select(used.c.user_id, used.c.resource_id, sa.func.max(used.c.occurred_at).label("last_used_at"))
            .group_by(used.c.user_id, used.c.resource_id), used.c.user_id, user_ids),
        learner_ids=np.sort(np.asarray(user_ids, dtype=np.int64)),
    )


def replace_recommendations(conn: sa.Connection, ranked: pd.DataFrame, model_id: int | None,
                            generated_at: dt.datetime, user_ids) -> int:
    """The learners `user_ids` (a learner shard) have exactly the `ranked` rows (recommend.rank_resources rows),
    stamped with the model that served them (None: no model) and when; other learners' rows stay. Rows written."""
    bulk.delete_with_ids(conn, tables.user_recommendations, tables.user_recommendations.c.user_id, user_ids)
    return bulk.bulk_insert(conn, tables.user_recommendations,
                            ranked.assign(model_id=model_id, generated_at=generated_at))


def learner_recommendations(conn: sa.Connection, user_id: int) -> pd.DataFrame:
    """One learner's recommendations in rank order, with each resource's title and kind."""
    recs, resources = tables.user_recommendations, tables.resources
    return bulk.read_frame(conn, sa.select(recs.c.rank, recs.c.resource_id, resources.c.title, resources.c.kind,
                                           recs.c.score, recs.c.strategy, recs.c.ncf_score, recs.c.content_score,
                                           recs.c.graph_score)
                           .join(resources, resources.c.resource_id == recs.c.resource_id)
                           .where(recs.c.user_id == user_id).order_by(recs.c.rank))
