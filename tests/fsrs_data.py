"""The shared real review file as our optimizer and fsrs-rs see it (days starting 10:00 UTC)."""

import numpy as np
import pandas as pd

REFERENCE_DAY_START_HOUR = 10  # the reference figures in ../shared/data/README.md use this


def real_reviews(path) -> pd.DataFrame:
    raw = pd.read_csv(path)
    reviewed_at = pd.to_datetime(raw["review_time"], utc=True, format="ISO8601")
    day = (reviewed_at - pd.Timedelta(hours=REFERENCE_DAY_START_HOUR) - pd.Timestamp("1970-01-01", tz="UTC")).dt.days
    frame = pd.DataFrame({"user_id": 1, "concept_id": raw["card_id"], "rating": raw["review_rating"],
                          "reviewed_at": reviewed_at, "learner_day": day})
    return frame.sort_values("reviewed_at", kind="stable").reset_index(drop=True)


def fsrs_rs_items(reviews: pd.DataFrame):
    """One fsrs-rs FSRSItem per card: its whole history, for memory_state."""
    import fsrs_rs_python as rs

    items = {}
    for concept_id, card in reviews.groupby("concept_id", sort=False):
        days = card["learner_day"].to_numpy()
        delta = np.diff(days, prepend=days[0])
        items[concept_id] = rs.FSRSItem([rs.FSRSReview(int(r), int(d)) for r, d in zip(card["rating"], delta)])
    return items
