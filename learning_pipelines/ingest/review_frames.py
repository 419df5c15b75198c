"""A review file read and validated into memory, without a warehouse (for `learning-pipelines fsrs`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from learning_pipelines.domain.review_history import learner_day_numbers
from learning_pipelines.ingest import validation
from learning_pipelines.ingest.readers import read_review_file

SINGLE_LEARNER_ID = 0  # files without a user_id column hold one learner's reviews


def read_valid_reviews(path: Path, day_start_hour: int, now: dt.datetime | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(good reviews with learner_day, rejects) of a review file; days start at `day_start_hour` UTC."""
    raw, _ = read_review_file(Path(path))
    validation.check_columns(raw.columns, str(path), has_default_user=True)
    raw, typed, reasons = validation.parse_file_rows(raw, default_user_id=SINGLE_LEARNER_ID)
    now = now or dt.datetime.now(dt.timezone.utc)
    reasons = validation.join_reasons(reasons, validation.review_rule_violations(typed, now))
    result = validation.split_valid(raw, typed, reasons)
    good = result.good.sort_values(["reviewed_at", "line_number"], kind="stable").reset_index(drop=True)
    for column in ("user_id", "concept_id", "rating"):
        good[column] = good[column].astype("int64")
    good["learner_day"] = learner_day_numbers(good["reviewed_at"], pd.Series("UTC", index=good.index),
                                              pd.Series(day_start_hour, index=good.index))
    return good, result.rejects
