"""The daily shadow evaluation: one day's reviews predicted with the weights in use, scored per A/B group."""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from learning_pipelines.db import fsrs_params
from learning_pipelines.domain import fsrs_training
from learning_pipelines.flows.summaries import Markdown


@dataclasses.dataclass(frozen=True)
class ShadowSummary:
    scores: fsrs_training.ShadowScores

    def metadata(self) -> dict:
        return {
            **fsrs_training.shadow_summary(self.scores.metrics),
            "dagster/row_count": len(self.scores.metrics),
            "calibration": Markdown(
                "Predicted against observed recall of the day's reviews, in 10 bins of the prediction, per A/B "
                "group\n\n" + self.scores.calibration.to_markdown(index=False, floatfmt=".3f")),
        }


def evaluate_day(engine: sa.Engine, day: dt.date, start: dt.datetime, end: dt.datetime) -> ShadowSummary:
    """The reviews in [start, end) (the UTC bounds of `day`) predicted and scored; `day`'s eval_metrics_daily rows
    replaced by one row per A/B group."""
    with engine.begin() as conn:
        inputs = fsrs_params.shadow_inputs(conn, start, end)
    scores = fsrs_training.shadow_metrics(inputs.history, inputs.weights, start)
    with engine.begin() as conn:
        fsrs_params.replace_shadow_day(conn, day, scores.metrics, dt.datetime.now(dt.timezone.utc))
    return ShadowSummary(scores)
