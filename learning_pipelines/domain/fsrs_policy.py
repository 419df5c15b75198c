"""The platform's rules for who gets own FSRS weights (README: FSRS rules)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from learning_pipelines.domain.stable_hash import salted_hash

# Fewer reviews than this give weights noisier than the global ones (platform rule).
MIN_REVIEWS_FOR_OPTIMIZATION = 300
# A learner is re-optimized at most weekly: fits move little faster than that (platform rule).
TRAINING_COOLDOWN = dt.timedelta(days=7)
# Each learner's latest reviews kept out of training, to check tuned beats global on them.
HOLDOUT_SHARE = 0.1
# Own weights fail that check when worse than global by more than this many standard errors of the paired
# held-out difference (one-sided 95 %): on a shard's few hundred held-out reviews a plain comparison failed
# shards whose own weights were better in expectation (README: FSRS rules).
WORSE_THAN_GLOBAL_Z = 1.645
BASELINE_GLOBAL = "BASELINE_GLOBAL"
TUNED_ELIGIBLE = "TUNED_ELIGIBLE"
_AB_SALT = 0x5EED_AB  # changing it reshuffles every learner: never do it mid-experiment


def ab_group(user_ids) -> np.ndarray:
    """Stable 50/50 split by a hash of user_id: the same learner always lands in the same group."""
    return np.where(salted_hash(user_ids, _AB_SALT) % 2 == 0, BASELINE_GLOBAL, TUNED_ELIGIBLE)


def eligible_for_optimization(n_reviews: pd.Series, cooldown_until: pd.Series, now: dt.datetime) -> pd.Series:
    """Enough reviews and no cooldown running."""
    cooling = pd.to_datetime(cooldown_until, utc=True) > pd.Timestamp(now)
    return (n_reviews >= MIN_REVIEWS_FOR_OPTIMIZATION) & ~cooling.fillna(False)


def eligible_learners(learners: pd.DataFrame, now: dt.datetime) -> pd.DataFrame:
    """The rows of `learners` (user_id, n_reviews, training_cooldown_until) who get own weights if the
    optimization runs at `now`: in the TUNED_ELIGIBLE group, enough reviews, no cooldown running."""
    tuned = ab_group(learners["user_id"]) == TUNED_ELIGIBLE
    ready = eligible_for_optimization(learners["n_reviews"], learners["training_cooldown_until"], now)
    return learners.loc[tuned & ready.to_numpy()]


def holdout_mask(reviews: pd.DataFrame, share: float = HOLDOUT_SHARE) -> pd.Series:
    """Each learner's latest `share` of reviews (by reviewed_at)."""
    rank = reviews.groupby("user_id")["reviewed_at"].rank(method="first", ascending=False)
    size = reviews.groupby("user_id")["reviewed_at"].transform("size")
    return rank <= np.floor(size * share)
