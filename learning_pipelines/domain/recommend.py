"""Hybrid resource recommendations: NCF where it can serve, content and graph signals always.

content: resources covering the learner's weak concepts (1 - retrievability now), weighted by how
well the resource's difficulty fits the concept's complexity. graph: resources covering the
prerequisites of the learner's weak concepts. Each signal is scaled to [0, 1] per learner.
A learner NCF knows gets the hybrid score; a cold learner, or everyone when no model exists,
gets the content + graph fallback. Resources the learner already used are never recommended.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from learning_pipelines.domain import fsrs
from learning_pipelines.domain.chunking import chunks

if TYPE_CHECKING:  # torch loads only where a model is scored
    from learning_pipelines.domain.ncf_checkpoint import NcfCheckpoint

HYBRID_WEIGHTS = {"ncf": 0.5, "content": 0.3, "graph": 0.2}
FALLBACK_WEIGHTS = {"content": 0.6, "graph": 0.4}
HYBRID, FALLBACK = "hybrid", "content_graph"


@dataclasses.dataclass(frozen=True)
class RecommendationInputs:
    """Everything recommendations read from the warehouse."""
    memory_states: pd.DataFrame  # user_id, concept_id, stability_days, decay, last_review_at
    resources: pd.DataFrame  # resource_id, difficulty
    resource_concepts: pd.DataFrame  # resource_id, concept_id
    complexity: pd.Series  # score in [0, 1] by concept_id
    edges: pd.DataFrame  # prerequisite_id, concept_id
    used: pd.DataFrame  # user_id, resource_id, last_used_at: resources each learner already used, and when last
    learner_ids: np.ndarray  # every learner


def _per_user_scaled(scores: pd.Series) -> pd.Series:
    peak = scores.groupby(level="user_id").transform("max")
    return (scores / peak.where(peak > 0, 1.0)).fillna(0.0)


def content_and_graph_scores(weakness: pd.DataFrame, resource_concepts: pd.DataFrame, resources: pd.DataFrame,
                             complexity: pd.Series, edges: pd.DataFrame) -> pd.DataFrame:
    """(user_id, resource_id) -> content, graph. weakness: user_id, concept_id, weakness in [0, 1]."""
    covered = resource_concepts.merge(resources[["resource_id", "difficulty"]], on="resource_id")
    covered["fit"] = 1.0 - (covered["difficulty"].fillna(0.5) - covered["concept_id"].map(complexity).fillna(0.5)).abs()
    n_concepts = covered.groupby("resource_id").size()
    content = weakness.merge(covered, on="concept_id")
    content = (content["weakness"] * content["fit"]).groupby([content["user_id"], content["resource_id"]]).sum()
    content = content / n_concepts.reindex(content.index.get_level_values("resource_id")).to_numpy()
    prerequisites = weakness.merge(edges, on="concept_id")[["user_id", "prerequisite_id", "weakness"]]
    graph = prerequisites.merge(covered, left_on="prerequisite_id", right_on="concept_id")
    graph = graph["weakness"].groupby([graph["user_id"], graph["resource_id"]]).sum()
    graph = graph / n_concepts.reindex(graph.index.get_level_values("resource_id")).to_numpy()
    both = pd.DataFrame({"content": _per_user_scaled(content.rename_axis(["user_id", "resource_id"])),
                         "graph": _per_user_scaled(graph.rename_axis(["user_id", "resource_id"]))})
    return both.fillna(0.0)


def rank_resources(user_ids: np.ndarray, resource_ids: np.ndarray, signals: pd.DataFrame, seen: pd.DataFrame,
                   ncf_scores: np.ndarray | None, warm: np.ndarray, k: int = 10) -> pd.DataFrame:
    """Top-k resources per learner with the strategy that served them.

    signals: content_and_graph_scores(); seen: user_id, resource_id already used; ncf_scores:
    (len(user_ids), len(resource_ids)) probabilities or None; warm: bool per learner, NCF knows them.
    """
    grid = pd.MultiIndex.from_product([user_ids, resource_ids], names=["user_id", "resource_id"])
    frame = signals.reindex(grid).fillna(0.0)
    ncf = ncf_scores.reshape(-1) if ncf_scores is not None else np.full(len(grid), np.nan)
    frame["ncf"] = ncf
    is_warm = np.repeat(warm if ncf_scores is not None else np.zeros(len(user_ids), dtype=bool), len(resource_ids))
    frame["score"] = np.where(
        is_warm,
        HYBRID_WEIGHTS["ncf"] * frame["ncf"].fillna(0.0) + HYBRID_WEIGHTS["content"] * frame["content"]
        + HYBRID_WEIGHTS["graph"] * frame["graph"],
        FALLBACK_WEIGHTS["content"] * frame["content"] + FALLBACK_WEIGHTS["graph"] * frame["graph"])
    frame["strategy"] = np.where(is_warm, HYBRID, FALLBACK)
    frame["ncf"] = frame["ncf"].where(is_warm)
    used = pd.MultiIndex.from_frame(seen[["user_id", "resource_id"]])
    frame = frame.loc[~frame.index.isin(used)].reset_index()
    frame = frame.sort_values(["user_id", "score", "resource_id"], ascending=[True, False, True])
    top = frame.groupby("user_id").head(k).copy()
    top["rank"] = top.groupby("user_id").cumcount() + 1
    return top.rename(columns={"ncf": "ncf_score", "content": "content_score", "graph": "graph_score"})[
        ["user_id", "rank", "resource_id", "score", "strategy", "ncf_score", "content_score", "graph_score"]]


def concept_weakness(memory_states: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
    """user_id, concept_id, weakness: 1 - retrievability at `now`."""
    elapsed_days = (now - memory_states["last_review_at"]).dt.total_seconds().to_numpy() / 86400
    recall = fsrs.retrievability(elapsed_days, memory_states["stability_days"].to_numpy(float),
                                 fsrs.decay_only_weights(memory_states["decay"]))
    return memory_states[["user_id", "concept_id"]].assign(weakness=1.0 - recall)


def recommend(inputs: RecommendationInputs, checkpoint: NcfCheckpoint | None, now: pd.Timestamp, k: int,
              learners_per_chunk: int) -> pd.DataFrame:
    """rank_resources() for every learner, `learners_per_chunk` at a time; NCF scores from `checkpoint`
    for the learners it knows (none when it is None)."""
    weakness = concept_weakness(inputs.memory_states, now)
    resource_ids = inputs.resources["resource_id"].to_numpy()
    if checkpoint is not None:  # a model with a history scores after what each learner used last, even since training
        checkpoint.remember_latest(inputs.used.rename(columns={"user_id": "user", "resource_id": "item",
                                                               "last_used_at": "time"}))
    pieces = []
    for chunk in chunks(inputs.learner_ids, learners_per_chunk):
        signals = content_and_graph_scores(weakness.loc[weakness["user_id"].isin(chunk)], inputs.resource_concepts,
                                           inputs.resources, inputs.complexity, inputs.edges)
        ncf_scores, warm = None, np.zeros(len(chunk), dtype=bool)
        if checkpoint is not None:
            ncf_scores, warm = checkpoint.score(chunk, resource_ids), checkpoint.knows(chunk)
        pieces.append(rank_resources(chunk, resource_ids, signals, inputs.used, ncf_scores, warm, k))
    return pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()


def learners_by_strategy(recommendations: pd.DataFrame) -> dict[str, int]:
    """How many learners each strategy served."""
    if recommendations.empty:
        return {}
    counts = recommendations.drop_duplicates("user_id")["strategy"].value_counts()
    return {str(strategy): int(n) for strategy, n in counts.items()}
