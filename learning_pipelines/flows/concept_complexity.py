"""Every concept's complexity scored from the community's memory states and written in one transaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import complexity, reads
from learning_pipelines.domain.complexity import score_concepts
from learning_pipelines.domain.revision import concept_theme_keys
from learning_pipelines.flows.summaries import Markdown


@dataclasses.dataclass(frozen=True)
class ComplexitySummary:
    scores: pd.DataFrame  # one row per concept, as written to concept_complexity
    n_written: int
    seconds: float  # the CDC calculation's duration, reads and writes included

    def metadata(self) -> dict:
        return {
            "dagster/row_count": self.n_written,
            "n_concepts_with_learners": int((self.scores["n_learners"] > 0).sum()),
            "mean_score": float(self.scores["score"].mean()),
            "seconds": self.seconds,
            "hardest": Markdown(self.scores.nlargest(5, "score")[["concept_id", "score", "n_learners"]]
                                .to_markdown(index=False)),
        }


def score_every_concept(engine: sa.Engine) -> ComplexitySummary:
    """Reads every card's signals and the concept graph, scores the concepts, replaces concept_complexity."""
    started = time.perf_counter()
    with engine.begin() as conn:
        cards = complexity.card_signals(conn)
        concepts, theme_map, edges = reads.concept_graph(conn)
    concept_ids = concepts["concept_id"].to_numpy()
    themes = concept_theme_keys(concept_ids, theme_map, edges).set_index("concept_id")["theme_key"]
    scores = score_concepts(cards, themes, edges, concept_ids).assign(computed_at=dt.datetime.now(dt.timezone.utc))
    with engine.begin() as conn:
        written = complexity.replace_scores(conn, scores)
    return ComplexitySummary(scores, written, time.perf_counter() - started)
