"""What a recipe's errors mean for the asset step that called it."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable

import dagster as dg

from learning_pipelines.db.lost_races import lost_a_race
from learning_pipelines.flows.refusals import Refused

# A deadlock or serialization failure rolls back one side so that the other finishes: the same step run again
# a moment later succeeds. Any other error fails the step at once (the instance's run retries cover dead workers,
# not asset failures: bad data would only fail again).
LOST_RACE_RETRIES = 3


def recipe_step(asset_fn: Callable) -> Callable:
    """`asset_fn` as the step of a recipe: a refusal (flows.refusals.Refused) fails the step for good with its
    sentence; a transaction rolled back by a deadlock or a serialization failure (SQLSTATE 40P01 / 40001) retries
    it, up to LOST_RACE_RETRIES times after 1-5 s; every other error fails it as it is.

    Dagster's RetryPolicy would retry every failure; this raises dg.RetryRequested for those two errors only."""

    @functools.wraps(asset_fn)
    def step(*args, **kwargs):
        try:
            return asset_fn(*args, **kwargs)
        except Refused as refusal:
            raise dg.Failure(description=str(refusal), allow_retries=False) from None
        except Exception as error:
            if lost_a_race(error):
                # A jitter, not a secret: the random module is what it needs.
                wait = random.uniform(1, 5)  # nosec B311
                raise dg.RetryRequested(max_retries=LOST_RACE_RETRIES, seconds_to_wait=wait) from error
            raise

    step.retries_lost_races = True  # tests/assets/test_lost_race_retries.py finds it on every asset writing learners' rows
    return step
