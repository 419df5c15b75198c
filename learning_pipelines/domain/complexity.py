"""Concept complexity (CDC): how hard a concept is for the community, in [0, 1].

Three signals per concept, each turned into a percentile among concepts: how often learners
answer Again the first time they meet it, its cards' mean FSRS difficulty,
and how slowly their stability grows (per review). Their mean is the raw score; concepts few
learners have seen are shrunk toward their theme's mean (empirical Bayes), then scores are
smoothed over the prerequisite graph (a concept is pulled toward its neighbours).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Learners' worth of evidence the theme mean counts for: with this many learners a concept's
# own data and its theme weigh the same.
SHRINKAGE_LEARNERS = 20.0
# Share of a concept's score taken from the mean of its prerequisite-graph neighbours.
GRAPH_SMOOTHING = 0.2


def concept_signals(first_reviews: pd.DataFrame, states: pd.DataFrame) -> pd.DataFrame:
    """Per concept: first_review_lapse_rate, mean_difficulty, stability_growth, n_learners.

    first_reviews: user_id, concept_id, recalled — each card's very first review.
    states: user_id, concept_id, difficulty, stability_days, n_reviews.
    """
    lapse = first_reviews.groupby("concept_id")["recalled"].agg(lambda r: 1.0 - r.mean()) \
        .rename("first_review_lapse_rate")
    growth = np.log1p(states["stability_days"]) / states["n_reviews"].clip(lower=1)
    per_concept = states.assign(stability_growth=growth).groupby("concept_id").agg(
        mean_difficulty=("difficulty", "mean"), stability_growth=("stability_growth", "mean"),
        n_learners=("user_id", "nunique"))
    return per_concept.join(lapse, how="outer").fillna({"n_learners": 0})


def score_concepts(cards: pd.DataFrame, concept_themes: pd.Series, edges: pd.DataFrame,
                   all_concepts: np.ndarray) -> pd.DataFrame:
    """complexity_scores of every concept from its cards (user_id, concept_id, first_rating, difficulty,
    stability_days, n_reviews); a card whose first rating is unknown counts for the states' signals only."""
    first = cards.dropna(subset=["first_rating"])
    first_reviews = pd.DataFrame({"user_id": first["user_id"], "concept_id": first["concept_id"],
                                  "recalled": (first["first_rating"] > 1).astype(float)})
    return complexity_scores(concept_signals(first_reviews, cards), concept_themes, edges, all_concepts)


def complexity_scores(signals: pd.DataFrame, concept_themes: pd.Series, edges: pd.DataFrame,
                      all_concepts: np.ndarray) -> pd.DataFrame:
    """score, raw_score, confidence (+ the signals) for every concept of `all_concepts`.

    concept_themes: theme key per concept_id (one each); edges: prerequisite_id, concept_id.
    """
    frame = signals.reindex(pd.Index(all_concepts, name="concept_id"))
    frame["n_learners"] = frame["n_learners"].fillna(0)
    components = pd.DataFrame({
        "lapse": frame["first_review_lapse_rate"].rank(pct=True),
        "difficulty": frame["mean_difficulty"].rank(pct=True),
        "slow_growth": (-frame["stability_growth"]).rank(pct=True),
    })
    frame["raw_score"] = components.mean(axis=1, skipna=True)
    confidence = frame["n_learners"] / (frame["n_learners"] + SHRINKAGE_LEARNERS)
    theme = concept_themes.reindex(frame.index).fillna("UNMAPPED")
    overall = frame["raw_score"].mean() if frame["raw_score"].notna().any() else 0.5
    theme_mean = frame["raw_score"].groupby(theme).transform("mean").fillna(overall)
    shrunk = confidence * frame["raw_score"].fillna(theme_mean) + (1 - confidence) * theme_mean
    frame["score"] = _smooth_over_graph(shrunk, edges).clip(0.0, 1.0)
    frame["confidence"] = confidence
    return frame.reset_index()


def _smooth_over_graph(score: pd.Series, edges: pd.DataFrame) -> pd.Series:
    both_ways = pd.concat([
        pd.DataFrame({"node": edges["concept_id"].to_numpy(), "neighbour": edges["prerequisite_id"].to_numpy()}),
        pd.DataFrame({"node": edges["prerequisite_id"].to_numpy(), "neighbour": edges["concept_id"].to_numpy()}),
    ])
    both_ways = both_ways.loc[both_ways["node"].isin(score.index) & both_ways["neighbour"].isin(score.index)]
    neighbour_mean = both_ways.assign(value=score.reindex(both_ways["neighbour"]).to_numpy()) \
        .groupby("node")["value"].mean().reindex(score.index)
    return score.where(neighbour_mean.isna(), (1 - GRAPH_SMOOTHING) * score + GRAPH_SMOOTHING * neighbour_mean)
