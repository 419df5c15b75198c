"""Where each review sits in its card's history, counted in the learner's own days."""

from __future__ import annotations

import numpy as np
import pandas as pd

from learning_pipelines.domain import learner_calendar


def learner_day_numbers(reviewed_at: pd.Series, timezone: pd.Series, day_start_hour: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 on the learner's calendar, whose day starts at `day_start_hour` local time, exact on
    daylight-saving changes (domain/learner_calendar.py), so a learner's day number never goes backwards.

    A review at 02:00 with days starting at 04:00 belongs to the previous day, as in Anki.
    """
    instants_ns = pd.DatetimeIndex(reviewed_at).as_unit("ns").asi8
    return learner_calendar.day_numbers(instants_ns, timezone.to_numpy(), day_start_hour.to_numpy())


def with_learner_days(reviews: pd.DataFrame, time_column: str = "reviewed_at",
                      day_column: str = "learner_day") -> pd.DataFrame:
    """The frame with `day_column`: learner_day_numbers of `time_column`, timezone, day_start_hour."""
    return reviews.assign(**{day_column: learner_day_numbers(reviews[time_column], reviews["timezone"],
                                                             reviews["day_start_hour"])})


def card_intervals(reviews: pd.DataFrame, prior: pd.DataFrame) -> pd.DataFrame:
    """Each review's number within its card (learner x concept) and learner-days since the previous one.

    reviews: review_id, user_id, concept_id, reviewed_at, learner_day.
    prior: per card seen before these reviews: user_id, concept_id, n_prior_reviews, last_learner_day.
    """
    ordered = reviews.sort_values(["user_id", "concept_id", "reviewed_at"], kind="stable")
    ordered = ordered.merge(prior, on=["user_id", "concept_id"], how="left")
    card = ordered.groupby(["user_id", "concept_id"], sort=False)
    previous_day = card["learner_day"].shift(1).fillna(ordered["last_learner_day"])
    n_prior = ordered["n_prior_reviews"].fillna(0).astype("int64")
    return pd.DataFrame({
        "review_id": ordered["review_id"].to_numpy(),
        "reviewed_at": ordered["reviewed_at"].to_numpy(),
        "user_id": ordered["user_id"].to_numpy(),
        "concept_id": ordered["concept_id"].to_numpy(),
        "review_number": (card.cumcount() + 1 + n_prior).to_numpy(),
        "elapsed_days": pd.array(ordered["learner_day"] - previous_day, dtype="Int64"),
    })
