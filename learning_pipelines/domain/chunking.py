"""How many learners one pass of a recipe handles at a time, and the one loop that cuts work into such parts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

Items = TypeVar("Items", bound=Sequence)

# Learners scored per chunk by recommendations: memory stays flat whatever the number of learners.
LEARNER_CHUNK = 200
# Learners whose card states a revision-queue shard reads and queues at a time: few reads per shard, memory bounded
# by the chunk.
QUEUE_LEARNER_CHUNK = 2000
# A replay of learners' states from their histories: learners whose reviews are counted per query (and most learners
# per read), and most reviews per read, so a replay holds a bounded history in memory whatever the largest learner
# (BENCHMARKS.md, "Memory states: one large learner").
REPLAY_LEARNER_CHUNK = 2000
REPLAY_REVIEWS_PER_READ = 250_000


def chunks(items: Items, size: int, at_least_one: bool = False) -> Iterator[Items]:
    """Consecutive slices of `items` (a list or an array) of at most `size` each; with `at_least_one`, an empty
    `items` gives one empty slice (for a query that must run once to give its empty result's columns)."""
    if at_least_one and len(items) == 0:
        yield items[:0]
    for start in range(0, len(items), size):
        yield items[start:start + size]
