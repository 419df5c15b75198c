"""Review histories as padded per-card sequences, longest card first, for batched replay.

Sorting cards by length lets every replay step work on a shrinking prefix of cards, so the
work done is proportional to the number of reviews, not cards x longest history.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd


@dataclasses.dataclass(frozen=True)
class ReviewSequences:
    elapsed_days: np.ndarray  # (T, N) whole learner-days since the card's previous review; 0 on the first
    ratings: np.ndarray  # (T, N) 1..4, 0 past a card's end
    lengths: np.ndarray  # (N,) reviews per card, descending
    card_learner: np.ndarray  # (N,) index into learner_ids
    learner_ids: np.ndarray  # (L,)
    card_keys: pd.DataFrame  # (N,) user_id, concept_id of each card
    row_of: np.ndarray  # (T, N) row of the input frame, -1 past a card's end

    @property
    def n_cards(self) -> int:
        return len(self.lengths)

    @property
    def n_learners(self) -> int:
        return len(self.learner_ids)

    @property
    def active_counts(self) -> np.ndarray:
        """Cards still reviewing at each step: those are always the first ones."""
        return (self.lengths[None, :] > np.arange(self.ratings.shape[0])[:, None]).sum(axis=1)

    def later_reviews(self) -> tuple[np.ndarray, np.ndarray]:
        """(step, card) of every review after a card's first, in replay order (step by step)."""
        counts = self.active_counts[1:]
        steps = np.repeat(np.arange(1, len(counts) + 1), counts)
        cards = np.concatenate([np.arange(n) for n in counts]) if len(counts) else np.zeros(0, dtype=int)
        return steps, cards


def build_sequences(reviews: pd.DataFrame) -> ReviewSequences:
    """reviews: user_id, concept_id, learner_day, rating, in time order within each card."""
    users, concepts = reviews["user_id"].to_numpy(), reviews["concept_id"].to_numpy()
    order = np.lexsort((np.arange(len(reviews)), concepts, users))
    users, concepts = users[order], concepts[order]
    starts_card = np.ones(len(order), dtype=bool)
    starts_card[1:] = (users[1:] != users[:-1]) | (concepts[1:] != concepts[:-1])
    card = np.cumsum(starts_card) - 1
    first_of_card = np.flatnonzero(starts_card)
    position = np.arange(len(order)) - first_of_card[card]
    lengths_by_card = np.bincount(card)
    longest_first = np.argsort(-lengths_by_card, kind="stable")
    rank = np.empty_like(lengths_by_card)
    rank[longest_first] = np.arange(len(lengths_by_card))
    column = rank[card]
    n_steps = int(lengths_by_card.max()) if len(card) else 0
    shape = (n_steps, len(lengths_by_card))
    days = np.zeros(shape, dtype=np.int64)
    ratings = np.zeros(shape, dtype=np.int64)
    row_of = np.full(shape, -1, dtype=np.int64)
    days[position, column] = reviews["learner_day"].to_numpy()[order]
    ratings[position, column] = reviews["rating"].to_numpy()[order]
    row_of[position, column] = order
    elapsed = np.zeros(shape, dtype=np.int64)
    elapsed[1:] = np.where(ratings[1:] > 0, days[1:] - days[:-1], 0)
    card_users, card_concepts = users[first_of_card][longest_first], concepts[first_of_card][longest_first]
    learner_ids, card_learner = np.unique(card_users, return_inverse=True)
    return ReviewSequences(
        elapsed_days=elapsed, ratings=ratings, lengths=lengths_by_card[longest_first], card_learner=card_learner,
        learner_ids=learner_ids, card_keys=pd.DataFrame({"user_id": card_users, "concept_id": card_concepts}),
        row_of=row_of,
    )
