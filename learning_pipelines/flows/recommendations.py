"""One learner shard's recommendations: the serving NCF model where it knows the learner, content and graph
everywhere, ranked and written in one transaction."""

from __future__ import annotations

import dataclasses

import pandas as pd
import sqlalchemy as sa

from learning_pipelines import pause_points
from learning_pipelines.db import learner_locks, ncf_store, reads
from learning_pipelines.domain import recommend
from learning_pipelines.domain.chunking import LEARNER_CHUNK
from learning_pipelines.flows.models import CheckpointStore
from learning_pipelines.flows.summaries import preview

RECOMMENDATIONS_PER_LEARNER = 10  # what a learner's page shows


@dataclasses.dataclass(frozen=True)
class RecommendationsSummary:
    ranked: pd.DataFrame  # the rows written
    n_written: int
    model_id: int | None  # the serving model (None: content and graph only)

    def metadata(self) -> dict:
        return {
            "dagster/row_count": self.n_written,
            "n_learners": int(self.ranked["user_id"].nunique()) if len(self.ranked) else 0,
            "learners_by_strategy": recommend.learners_by_strategy(self.ranked),
            "model_id": self.model_id if self.model_id is not None else -1,
            "preview": preview(self.ranked, ["user_id", "rank", "resource_id", "score", "strategy"]),
        }


def recommend_shard(engine: sa.Engine, shard: str, models: CheckpointStore,
                    now: pd.Timestamp) -> RecommendationsSummary:
    """The learners of `shard` and the catalogue read in one transaction; each learner's top resources ranked;
    then, in one more, the shard's user_recommendations replaced by those of the learners that still exist."""
    with engine.begin() as conn:
        serving = ncf_store.latest_model(conn, beating_popularity=True)
        user_ids = reads.shard_learners(conn, shard)
        inputs = ncf_store.recommendation_inputs(conn, user_ids)
    # torch loads only in the steps that train or score (flows/ncf_training.py says why).
    from learning_pipelines.domain.ncf_checkpoint import NcfCheckpoint

    checkpoint = NcfCheckpoint.from_bytes(models.load(serving.checkpoint_uri)) if serving else None
    ranked = recommend.recommend(inputs, checkpoint, now, k=RECOMMENDATIONS_PER_LEARNER,
                                 learners_per_chunk=LEARNER_CHUNK)
    pause_points.reached("recommendations.ranked")
    with engine.begin() as conn:
        # Only learners that still exist, locked against `learners forget` until commit (db/learner_locks).
        existing = learner_locks.lock_existing(conn, user_ids)
        if len(ranked):
            ranked = ranked.loc[ranked["user_id"].isin(existing)]
        written = ncf_store.replace_recommendations(conn, ranked, serving.model_id if serving else None, now,
                                                    user_ids)
        pause_points.reached("recommendations.before_commit")
    return RecommendationsSummary(ranked, written, serving.model_id if serving else None)
