"""The shared real review files as our optimizer and fsrs-rs see them (each learner's days starting at the UTC hour
../shared/data/README.md gives)."""

from pathlib import Path

import numpy as np
import pandas as pd

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "fsrs"
REFERENCE_DAY_START_HOUR = 10  # the reference figures in ../shared/data/README.md use this for the one-learner file
# ../shared/data/fsrs/anki/*.csv: each collection's day start (UTC hour), from ../shared/data/README.md's table.
ANKI_COLLECTION_DAY_START_HOURS = {
    "greniermath": 4, "lackmeier": 4, "illdepence": 4, "geovanne": 4, "superdrdood": 4, "sken2015": 19,
    "noaweboi": 12, "maxproft": 15, "asproson": 4, "grenieror": 4, "machtan": 4,
}


def real_collections() -> dict[str, tuple[Path, int]]:
    """Every real data set that is there: name -> (file, day start hour); the one-learner file first."""
    found = {"one_learner": (REAL_DATA / "anki_one_learner_revlog.csv", REFERENCE_DAY_START_HOUR)}
    found |= {name: (REAL_DATA / "anki" / f"{name}.csv", hour) for name, hour in ANKI_COLLECTION_DAY_START_HOURS.items()}
    return {name: entry for name, entry in found.items() if entry[0].exists()}


def real_reviews(path, day_start_hour: int = REFERENCE_DAY_START_HOUR) -> pd.DataFrame:
    raw = pd.read_csv(path)
    reviewed_at = pd.to_datetime(raw["review_time"], utc=True, format="ISO8601")
    day = (reviewed_at - pd.Timedelta(hours=day_start_hour) - pd.Timestamp("1970-01-01", tz="UTC")).dt.days
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


def small_collections(reviews: pd.DataFrame, seed: int,
                      sizes: tuple[int, ...] = (2000, 3000, 4000, 5000)) -> list[pd.DataFrame]:
    """The learner's cards, shuffled, split into collections of about `sizes` reviews in turn (whole
    cards; a last collection smaller than the smallest size is dropped): what a platform's many small
    learners look like, from one real learner."""
    per_card = reviews.groupby("concept_id").size()
    cards = per_card.index.to_numpy()[np.random.default_rng(seed).permutation(len(per_card))]
    collections, taken, total = [], [], 0
    for card in cards:
        taken.append(card)
        total += per_card[card]
        if total >= sizes[len(collections) % len(sizes)]:
            collections.append(taken)
            taken, total = [], 0
    if total >= min(sizes):
        collections.append(taken)
    return [reviews.loc[reviews["concept_id"].isin(chosen)].reset_index(drop=True) for chosen in collections]


def fsrs_rs_training_items(reviews: pd.DataFrame):
    """fsrs-rs's training items for one learner: every prefix of a card's history that ends in a review on a
    later day than the one before (the reviews that are scored; same-day ones as targets worsen its fit)."""
    import fsrs_rs_python as rs

    items = []
    for _, card in reviews.groupby("concept_id", sort=False):
        days = card["learner_day"].to_numpy()
        delta = np.diff(days, prepend=days[0])
        history = [rs.FSRSReview(int(r), int(d)) for r, d in zip(card["rating"], delta)]
        items += [rs.FSRSItem(history[: i + 1]) for i in range(1, len(history)) if delta[i] > 0]
    return items
