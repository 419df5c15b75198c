"""Card memory states carried forward review by review.

FSRS is a recurrence: a card's (stability, difficulty) after a review depends only on its state
before it and the review. So a card stored after its latest review advances by its new reviews
alone, and a full replay is the same walk started from no state. Both go through `advance`, so the
nightly update and the weekly replay agree to the last bit of the arithmetic.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from learning_pipelines.domain import fsrs
from learning_pipelines.domain.review_history import with_learner_days
from learning_pipelines.domain.review_sequences import build_sequences
from learning_pipelines.domain.revision import due_times, effective_preferences, to_utc_ns

CARD = ["user_id", "concept_id"]
CARD_DTYPES = {"user_id": "int64", "concept_id": "int64"}
# A card's state as stored, and the part of it a card's next review continues from.
STATE_DTYPES = {**CARD_DTYPES, "stability_days": "float64", "difficulty": "float64", "n_reviews": "int64",
                "first_rating": "int64", "last_review_at": "datetime64[ns, UTC]", "decay": "float64",
                "weights_source": "object", "weights_version": "object"}
STATE_COLUMNS = list(STATE_DTYPES)
PRIOR_DTYPES = {**CARD_DTYPES, "stability_days": "float64", "difficulty": "float64", "n_reviews": "int64",
                "first_rating": "float64", "last_learner_day": "float64"}


@dataclasses.dataclass(frozen=True)
class LearnerWeights:
    """The FSRS-6 weights each learner's cards are computed with, and a name for them, so a state
    records which weights produced it: own weights where the learner has them, else the global ones."""

    global_weights: np.ndarray
    global_version: str
    own: dict[int, np.ndarray]
    own_versions: dict[int, str]

    def version_of(self, user_ids) -> np.ndarray:
        return np.array([self.own_versions.get(int(u), self.global_version) for u in user_ids], dtype=object)

    def matrix(self, user_ids) -> np.ndarray:
        """(n, 21): the weights of each learner in `user_ids`."""
        if len(user_ids) == 0:
            return np.zeros((0, fsrs.N_WEIGHTS))
        return np.array([self.own.get(int(u), self.global_weights) for u in user_ids], dtype=float)


def advance(prior: pd.DataFrame, reviews: pd.DataFrame, weights: LearnerWeights) -> pd.DataFrame:
    """The state of every card in `reviews` after its last one (STATE_COLUMNS).

    prior: the stored state of cards that have one (user_id, concept_id, stability_days, difficulty,
    n_reviews, first_rating, last_learner_day); reviews of cards absent from it start from nothing.
    reviews: user_id, concept_id, reviewed_at, rating, learner_day, each card's in time order and all
    later than its stored last review.
    """
    if reviews.empty:
        return _empty(STATE_DTYPES)
    seqs = build_sequences(reviews)
    cards = seqs.card_keys.merge(prior, on=CARD, how="left")
    learner_weights = weights.matrix(seqs.learner_ids)
    card_weights = learner_weights[seqs.card_learner]
    stability = cards["stability_days"].to_numpy(float, na_value=np.nan, copy=True)
    difficulty = cards["difficulty"].to_numpy(float, na_value=np.nan, copy=True)
    days = reviews["learner_day"].to_numpy()
    ratings = seqs.ratings
    # The first new review's distance is from the stored last review; later ones come with seqs.
    elapsed_first = days[seqs.row_of[0]] - cards["last_learner_day"].to_numpy(float, na_value=0.0)
    for step, n in enumerate(seqs.active_counts):
        n = int(n)
        elapsed = elapsed_first[:n] if step == 0 else seqs.elapsed_days[step, :n]
        stability[:n], difficulty[:n] = fsrs.next_state(stability[:n], difficulty[:n], elapsed, ratings[step, :n],
                                                        card_weights[:n])
    last_row = seqs.row_of[seqs.lengths - 1, np.arange(seqs.n_cards)]
    first_rating = cards["first_rating"].to_numpy(float, na_value=np.nan)
    first_rating = np.where(np.isnan(first_rating), ratings[0], first_rating).astype(np.int64)
    return pd.DataFrame({
        "user_id": seqs.card_keys["user_id"].to_numpy(),
        "concept_id": seqs.card_keys["concept_id"].to_numpy(),
        "stability_days": stability,
        "difficulty": difficulty,
        "n_reviews": cards["n_reviews"].fillna(0).to_numpy(np.int64) + seqs.lengths,
        "first_rating": first_rating,
        "last_review_at": reviews["reviewed_at"].to_numpy()[last_row],
        "decay": card_weights[:, 20],
        "weights_source": np.where(np.isin(seqs.learner_ids, list(weights.own)), "own", "global")[seqs.card_learner],
        "weights_version": weights.version_of(seqs.learner_ids)[seqs.card_learner],
    })


def states_from_histories(history: pd.DataFrame, weights: LearnerWeights) -> pd.DataFrame:
    """States of every card in `history` (all of each card's reviews, with the learner's calendar:
    timezone, day_start_hour) from the first review on."""
    return advance(_empty(PRIOR_DTYPES), with_learner_days(history), weights)


@dataclasses.dataclass(frozen=True)
class Update:
    advanced: pd.DataFrame  # STATE_COLUMNS of the cards carried forward
    replay_cards: pd.DataFrame  # user_id, concept_id of cards to recompute from their history
    n_new_reviews: int


def update(stored: pd.DataFrame, new_reviews: pd.DataFrame, weights: LearnerWeights, review_counts=None,
           reread_upto: int | None = None, skip_learners=()) -> Update:
    """The nightly step: states advanced by their new reviews, and the cards to replay instead.

    stored and new_reviews come with each learner's calendar (timezone, day_start_hour); learners in
    `skip_learners` are left out (they are replayed in full). See split_pending for the rest."""
    stored, new_reviews = (frame.loc[~frame["user_id"].isin(skip_learners)] for frame in (stored, new_reviews))
    pending = split_pending(new_reviews, stored, review_counts, reread_upto)
    stored = with_learner_days(stored, "last_review_at", "last_learner_day") if len(stored) else \
        stored.assign(last_learner_day=pd.Series(dtype=float))
    return Update(advance(stored, with_learner_days(pending.append), weights), pending.replay_cards, pending.n_new)


def latest_per_card(*frames: pd.DataFrame) -> pd.DataFrame:
    """The frames' states together, a card in several taking its state from the last frame holding it."""
    frames = [frame[STATE_COLUMNS] for frame in frames if len(frame)]
    if not frames:
        return _empty(STATE_DTYPES)
    return pd.concat(frames, ignore_index=True).drop_duplicates(CARD, keep="last").reset_index(drop=True)


def _empty(dtypes: dict[str, str]) -> pd.DataFrame:
    """No rows, with these columns and dtypes (what a later concat or merge with real rows expects)."""
    return pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in dtypes.items()})


def schedule(states: pd.DataFrame, calendars: pd.DataFrame, preferences: pd.DataFrame) -> pd.DataFrame:
    """`states` with due_at: when each card's recall falls to its learner's retention target."""
    learners, _ = effective_preferences(calendars[["user_id"]].drop_duplicates(), preferences)
    at = pd.Index(learners["user_id"]).get_indexer(states["user_id"])
    due_ns = due_times(to_utc_ns(states["last_review_at"]), states["stability_days"], states["decay"],
                       learners["retention_target"].to_numpy(float)[at], learners["spacing_multiplier"].to_numpy(float)[at])
    return states.assign(due_at=pd.to_datetime(due_ns, utc=True))


@dataclasses.dataclass(frozen=True)
class PendingReviews:
    """What the new reviews do to stored cards: `append` ones carry a card forward, cards in
    `replay_cards` got a review older than their stored last one and are recomputed from their history."""

    append: pd.DataFrame
    replay_cards: pd.DataFrame
    n_new: int  # reviews not in the stored states before (a re-read window repeats some)


def _older_than_last(new_reviews: pd.DataFrame, stored: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    reviews = new_reviews.merge(stored[CARD + ["n_reviews", "last_review_at"]], on=CARD, how="left")
    return reviews, reviews["last_review_at"].notna() & (reviews["reviewed_at"] <= reviews["last_review_at"])


def cards_to_count(new_reviews: pd.DataFrame, stored: pd.DataFrame, reread_upto: int | None) -> pd.DataFrame:
    """Cards whose review count tells whether a review is new: those with a review no later than their
    stored last one that a run may already have taken in (numbered up to `reread_upto`, the re-read
    window after transactions were in flight). Outside it such a review is simply late."""
    if reread_upto is None or new_reviews.empty:
        return _empty(CARD_DTYPES)
    reviews, older = _older_than_last(new_reviews, stored)
    return reviews.loc[older & (reviews["ingest_seq"] <= reread_upto), CARD].drop_duplicates().reset_index(drop=True)


def split_pending(new_reviews: pd.DataFrame, stored: pd.DataFrame, review_counts: pd.DataFrame | None = None,
                  reread_upto: int | None = None) -> PendingReviews:
    """Sort new reviews into appends and cards to replay.

    new_reviews: reviews that reached the warehouse since the last final number (with reviewed_at, and
    ingest_seq when a re-read window exists). stored: the touched cards' stored states (n_reviews,
    last_review_at). A review later than its card's last one is new: it is appended. One no later than
    it is new and late (the card is replayed) unless it lies in the re-read window, where the card's
    review count decides: review_counts (user_id, concept_id, n_stored_reviews: every review held now
    for each card of cards_to_count) against the stored count plus the card's newer reviews.
    """
    reviews, older = _older_than_last(new_reviews, stored)
    maybe_seen = older & (reviews["ingest_seq"] <= reread_upto) if reread_upto is not None else older & False
    late = older & ~maybe_seen
    per_card = reviews.assign(newer=~older, late=late).groupby(CARD).agg(
        n_newer=("newer", "sum"), n_late=("late", "sum"), n_reviews=("n_reviews", "first")).reset_index()
    # For a counted card, held - (stored + newer + late) is what no run has seen (or, below 0, lost).
    surplus = pd.Series(0.0, index=per_card.index)
    if review_counts is not None and len(review_counts):
        per_card = per_card.merge(review_counts, on=CARD, how="left")
        surplus = (per_card["n_stored_reviews"] - per_card["n_reviews"].fillna(0) - per_card["n_newer"]
                   - per_card["n_late"]).fillna(0)
    unseen = surplus.clip(lower=0)
    to_replay = per_card.loc[(per_card["n_late"] > 0) | (surplus != 0), CARD].reset_index(drop=True)
    replayed = reviews.set_index(CARD).index.isin(pd.MultiIndex.from_frame(to_replay)) if len(to_replay) \
        else np.zeros(len(reviews), dtype=bool)
    append = reviews.loc[~older & ~replayed].drop(columns=["n_reviews", "last_review_at"])
    n_new = int(per_card["n_newer"].sum() + per_card["n_late"].sum() + unseen.sum())
    return PendingReviews(append=append.reset_index(drop=True), replay_cards=to_replay, n_new=n_new)


@dataclasses.dataclass(frozen=True)
class ReplayRead:
    """One read of a replay: every card of `user_ids`, or, for one learner too large for a read, their cards with
    concept_id in [concept_from, concept_to) (None: open on that side)."""

    user_ids: np.ndarray
    concept_from: int | None = None
    concept_to: int | None = None


def replay_reads(user_ids, learner_counts: pd.DataFrame, card_counts: pd.DataFrame,
                 reviews_per_read: int) -> list[ReplayRead]:
    """Reads that cover every card of `user_ids` once, each of at most `reviews_per_read` reviews (a card with
    more alone): learners together while they fit, a larger learner's cards cut into concept_id ranges, the
    first and last open so that a card without reviews (its state to delete) falls in one too.

    learner_counts: user_id, n_reviews (a learner absent has none); card_counts: user_id, concept_id, n_reviews
    of at least the learners with more than `reviews_per_read`."""
    n_reviews = learner_counts.set_index("user_id")["n_reviews"].reindex(np.asarray(user_ids), fill_value=0)
    reads, together, n_together = [], [], 0
    for user_id, n in zip(n_reviews.index, n_reviews.to_numpy()):
        if n > reviews_per_read:
            reads += _card_ranges(int(user_id), card_counts.loc[card_counts["user_id"] == user_id], reviews_per_read)
            continue
        if together and n_together + n > reviews_per_read:
            reads.append(ReplayRead(np.array(together, dtype=np.int64)))
            together, n_together = [], 0
        together.append(user_id)
        n_together += n
    if together:
        reads.append(ReplayRead(np.array(together, dtype=np.int64)))
    return reads


def _card_ranges(user_id: int, card_counts: pd.DataFrame, reviews_per_read: int) -> list[ReplayRead]:
    cards = card_counts.sort_values("concept_id")
    starts, n_range = [], 0
    for concept_id, n in zip(cards["concept_id"].to_numpy(), cards["n_reviews"].to_numpy()):
        if n_range and n_range + n > reviews_per_read:
            starts.append(int(concept_id))
            n_range = 0
        n_range += n
    bounds = [None, *starts, None]
    user = np.array([user_id], dtype=np.int64)
    return [ReplayRead(user, concept_from, concept_to) for concept_from, concept_to in zip(bounds[:-1], bounds[1:])]
