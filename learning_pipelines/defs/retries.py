"""Step retries of the assets that write learners' rows: only for a transaction that lost a race."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable

import dagster as dg

from learning_pipelines.db.lost_races import lost_a_race

# A deadlock or serialization failure rolls back one side so that the other finishes: the same step run again
# a moment later succeeds. Any other error fails the step at once (the instance's run retries cover dead workers,
# not asset failures: bad data would only fail again).
LOST_RACE_RETRIES = 3


def retry_lost_races(asset_fn: Callable) -> Callable:
    """`asset_fn` whose step is retried (up to LOST_RACE_RETRIES times, after 1-5 s) when its transaction was
    rolled back by a deadlock or a serialization failure (SQLSTATE 40P01 / 40001), and only then.

    Dagster's RetryPolicy would retry every failure; this raises dg.RetryRequested for those two errors only, and
    lets every other error fail the step as it is."""

    @functools.wraps(asset_fn)
    def retried(*args, **kwargs):
        try:
            return asset_fn(*args, **kwargs)
        except Exception as error:
            if lost_a_race(error):
                # A jitter, not a secret: the random module is what it needs.
                wait = random.uniform(1, 5)  # nosec B311
                raise dg.RetryRequested(max_retries=LOST_RACE_RETRIES, seconds_to_wait=wait) from error
            raise

    retried.retries_lost_races = True  # what tests/test_lost_race_retries.py looks for on every such asset
    return retried
