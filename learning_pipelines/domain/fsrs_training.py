"""The weekly FSRS optimization and the daily shadow evaluation, as computations on frames.

Training: each learner's latest reviews are held out (fsrs_policy.HOLDOUT_SHARE); global weights are
fitted once on a sample of learners' other reviews pooled (sampled by whole cards); then, shard by
shard, eligible learners (fsrs_policy.eligible_learners) get new weights fitted from the weights they use,
kept only where they beat those and the defaults on a validation split of the training reviews
(fsrs_selection), and the weights each learner ends with are scored against the global ones on the held-out
reviews, giving the shard's srs_user_params rows.

Shadow evaluation: one day's reviews predicted with the weights each A/B group is served, scored
per group (domain.metrics).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from learning_pipelines.domain import fsrs, fsrs_policy
from learning_pipelines.domain.fsrs_optimizer import FitConfig, fit_pooled
from learning_pipelines.domain.fsrs_replay import predict_reviews
from learning_pipelines.domain.fsrs_selection import REPLACED, fit_or_keep_reviews
from learning_pipelines.domain.memory_states import LearnerWeights
from learning_pipelines.domain.metrics import calibration_table, recall_metrics, review_log_losses
from learning_pipelines.domain.review_history import with_learner_days

# The pooled (global) fit sees at most this many reviews, sampled by whole cards: beyond it
# the global weights stop moving and the fit only gets slower.
GLOBAL_FIT_MAX_REVIEWS = 100_000
_PREDICTION_COLUMNS = ["row", "user_id", "retrievability", "recalled", "elapsed_days", "review_number",
                       "lapses_before"]


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    global_fit_max_reviews: int = GLOBAL_FIT_MAX_REVIEWS
    global_fit: FitConfig = FitConfig()  # the pooled fit of the global weights
    own_fit: FitConfig = FitConfig()  # every eligible learner's fit, started from the global weights


@dataclasses.dataclass(frozen=True)
class GlobalFit:
    """The pooled fit: the weights every learner without own weights is scheduled with."""

    weights: np.ndarray  # (21,)
    logloss: float  # the pooled fit's training logloss
    n_reviews: int  # reviews the pooled fit scored
    n_learners: int  # learners whose reviews (outside the holdout) the fit drew from
    trained_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class LearnerTraining:
    """Own weights for the eligible learners among some learners (a shard, or everyone)."""

    user_params: pd.DataFrame  # the new srs_user_params rows, one per learner with reviews (weights as JSON)
    n_trained: int  # learners fitted in this run (their new weights stored or not)
    holdout_scores: pd.DataFrame  # per trained learner (index user_id): held-out logloss own, global; n reviews
    trained_at: dt.datetime
    # Per trained learner (index user_id): decision (fsrs_selection: replaced, or why the weights in use stay),
    # n_validation and validation_logloss_new / _current / _defaults.
    decisions: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=["decision"]))

    @property
    def n_learners_with_own_weights(self) -> int:
        return int(self.user_params["weights"].notna().sum())

    @property
    def n_replaced(self) -> int:
        """Trained learners whose new weights were stored."""
        return int((self.decisions["decision"] == REPLACED).sum())

    @property
    def kept_reasons(self) -> dict[str, int]:
        """Why the other trained learners kept the weights they use: reason -> learners."""
        kept = self.decisions.loc[self.decisions["decision"] != REPLACED, "decision"]
        return {str(reason): int(count) for reason, count in kept.value_counts().items()}

    @property
    def n_holdout_reviews(self) -> int:
        return int(self.holdout_scores["n"].astype(float).sum())

    @property
    def holdout_logloss_own(self) -> float:
        """The trained learners' held-out logloss with their own weights (weighted by reviews; NaN: none scored)."""
        return self._holdout_mean("own")

    @property
    def holdout_logloss_global(self) -> float:
        """The same reviews' held-out logloss with the global weights."""
        return self._holdout_mean("global")

    @property
    def holdout_difference_se(self) -> float:
        """Standard error of the held-out logloss difference own - global, paired review by review: clustered by
        learner (a learner's reviews share their weights, so they are not independent draws), never below the
        standard error that takes each review alone (which a single learner's shard falls back to)."""
        scores = self.holdout_scores.astype(float)
        n_reviews = scores["n"].sum()
        if not n_reviews:
            return float("nan")
        difference = (scores["own"] - scores["global"]) * scores["n"]  # each learner's summed difference
        mean = difference.sum() / n_reviews
        clustered = np.sqrt(((difference - mean * scores["n"]) ** 2).sum()) / n_reviews
        by_review = np.sqrt(max(scores["squared_difference"].sum() / n_reviews - mean * mean, 0.0) / n_reviews)
        return float(max(clustered, by_review))

    @property
    def tuned_not_worse_than_global(self) -> bool:
        """Own weights are not worse than the global ones on the held-out reviews beyond the noise of that
        comparison (fsrs_policy.WORSE_THAN_GLOBAL_Z standard errors)."""
        if not self.n_holdout_reviews:
            return True
        excess = self.holdout_logloss_own - self.holdout_logloss_global
        return bool(excess <= fsrs_policy.WORSE_THAN_GLOBAL_Z * self.holdout_difference_se)

    def _holdout_mean(self, column: str) -> float:
        n = self.holdout_scores["n"].astype(float)
        return float(np.average(self.holdout_scores[column], weights=n)) if n.sum() else float("nan")


@dataclasses.dataclass(frozen=True)
class TrainingResult:
    global_fit: GlobalFit
    learners: LearnerTraining


def train(reviews: pd.DataFrame, previous: pd.DataFrame, now: dt.datetime, config: TrainingConfig = TrainingConfig(),
          log: Callable[[str], None] = lambda message: None) -> TrainingResult:
    """Global weights, then own weights for the learners eligible at `now`, all in one process: what
    the sharded optimization (fit_global once, train_learners per shard) computes, in one call.

    reviews: every review (id, user_id, concept_id, rating, reviewed_at, timezone, day_start_hour), in time order.
    previous: the stored srs_user_params rows; learners not trained now keep theirs.
    """
    global_fit = fit_global(reviews, now, config, log)
    return TrainingResult(global_fit, train_learners(reviews, previous, global_fit.weights, now, config, log))


def fit_global(reviews: pd.DataFrame, now: dt.datetime, config: TrainingConfig = TrainingConfig(),
               log: Callable[[str], None] = lambda message: None) -> GlobalFit:
    """The pooled fit over `reviews` (whole learners, with their calendar, in time order) outside each
    learner's holdout, sampled by whole cards down to config.global_fit_max_reviews."""
    started = time.perf_counter()
    reviews = with_learner_days(reviews)
    training = reviews.loc[~fsrs_policy.holdout_mask(reviews)]
    fit = fit_pooled(sample_cards(training, config.global_fit_max_reviews), config.global_fit)
    log(f"global weights fitted in {time.perf_counter() - started:.1f} s ({fit.iterations} iterations)")
    return GlobalFit(fit.weights[0], float(fit.logloss_after[0]), int(fit.n_reviews.sum()),
                     int(training["user_id"].nunique()), now)


def train_learners(reviews: pd.DataFrame, previous: pd.DataFrame, global_weights: np.ndarray, now: dt.datetime,
                   config: TrainingConfig = TrainingConfig(),
                   log: Callable[[str], None] = lambda message: None) -> LearnerTraining:
    """Own weights, fitted from `global_weights`, for the learners of `reviews` eligible at `now`, each
    scored against the global weights on their held-out latest reviews. A learner's result depends on
    their own reviews only, so any split of the learners gives the same rows.

    reviews: every review of these learners, with their calendar, in time order.
    previous: their stored srs_user_params rows; learners not trained now keep theirs.
    """
    reviews = with_learner_days(reviews)
    holdout = fsrs_policy.holdout_mask(reviews)
    training = reviews.loc[~holdout]
    learners = _learner_rows(reviews, previous)
    to_train = np.sort(fsrs_policy.eligible_learners(learners, now)["user_id"].to_numpy())
    log(f"{len(to_train)} learner(s) eligible for own weights, of {len(learners)}")
    if not len(to_train):
        return LearnerTraining(user_params=learners, n_trained=0, trained_at=now,
                               holdout_scores=pd.DataFrame(columns=["own", "global", "n", "squared_difference"]))
    fit_started = time.perf_counter()
    in_use = _weights_in_use(learners, to_train, global_weights)
    fitted, selection = fit_or_keep_reviews(training.loc[training["user_id"].isin(to_train)],
                                            current=np.vstack([in_use[u] for u in to_train]), config=config.own_fit)
    replaced = fitted["decision"] == REPLACED
    log(f"{len(to_train)} learners fitted in {time.perf_counter() - fit_started:.1f} s ({selection.iterations} "
        f"iterations); new weights kept for {int(replaced.sum())}, the weights in use for the others")
    new = {int(u): np.array(w) for u, w in zip(fitted.loc[replaced, "user_id"], fitted.loc[replaced, "weights"])}
    holdout_scores = _own_against_global(reviews.loc[reviews["user_id"].isin(to_train)], holdout, in_use | new,
                                         global_weights)
    return LearnerTraining(user_params=_with_fit_outcome(learners, to_train, new, holdout_scores, now),
                           n_trained=len(to_train), holdout_scores=holdout_scores, trained_at=now,
                           decisions=fitted.drop(columns=["weights"]).set_index("user_id"))


def sample_cards(reviews: pd.DataFrame, max_reviews: int, seed: int = 0) -> pd.DataFrame:
    """Whole cards (all of a card's reviews), shuffled, until about `max_reviews` reviews."""
    if len(reviews) <= max_reviews:
        return reviews
    cards = reviews[["user_id", "concept_id"]].drop_duplicates().sample(frac=1.0, random_state=seed)
    sizes = reviews.groupby(["user_id", "concept_id"]).size().reindex(pd.MultiIndex.from_frame(cards)).to_numpy()
    keep = cards.iloc[: int(np.searchsorted(np.cumsum(sizes), max_reviews)) + 1]
    return reviews.merge(keep, on=["user_id", "concept_id"])


def _own_against_global(theirs: pd.DataFrame, holdout: pd.Series, own: dict[int, np.ndarray],
                        global_weights: np.ndarray) -> pd.DataFrame:
    """Per learner, on the held-out reviews of `theirs` (all their reviews): logloss with `own` and with the global
    weights, n, and the sum of the squared per-review differences (for the comparison's standard error)."""
    held_out = theirs.index[holdout[theirs.index]]
    scored = []
    for weights, default in ((own, global_weights), ({}, global_weights)):
        predictions = predict_reviews(theirs, weights, default).predictions
        predictions = predictions.loc[predictions["row"].isin(held_out) & (predictions["elapsed_days"] > 0)]
        scored.append(predictions.set_index("row").sort_index())
    own_scored, global_scored = scored
    own_loss = review_log_losses(own_scored["recalled"], own_scored["retrievability"])
    global_loss = review_log_losses(global_scored["recalled"], global_scored["retrievability"])
    per_review = pd.DataFrame({"own": own_loss, "global": global_loss, "n": 1,
                               "squared_difference": (own_loss - global_loss) ** 2},
                              index=pd.Index(own_scored["user_id"].to_numpy(), name="user_id"))
    scores = per_review.groupby(level="user_id").agg(own=("own", "mean"), global_=("global", "mean"), n=("n", "sum"),
                                                     squared_difference=("squared_difference", "sum"))
    return scores.rename(columns={"global_": "global"})


def _learner_rows(reviews: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
    """One srs_user_params row per learner with reviews: review count and A/B group now, the rest as stored."""
    learners = reviews.groupby("user_id").size().rename("n_reviews").reset_index()
    learners["ab_group"] = fsrs_policy.ab_group(learners["user_id"])
    learners = learners.merge(previous.drop(columns=["n_reviews", "ab_group"]), on="user_id", how="left")
    for column in ("trained_at", "training_cooldown_until"):
        learners[column] = pd.to_datetime(learners[column], utc=True).astype("datetime64[us, UTC]")
    learners["weights"] = learners["weights"].astype(object)
    return learners


def _weights_in_use(learners: pd.DataFrame, user_ids: np.ndarray, global_weights: np.ndarray) -> dict[int, np.ndarray]:
    """The weights each of `user_ids` is scheduled with now: their stored own weights, else the global ones."""
    stored = learners.set_index("user_id").loc[user_ids, "weights"]
    return {int(u): (np.array(json.loads(w), dtype=float) if isinstance(w, str) else np.asarray(global_weights))
            for u, w in stored.items()}


def _with_fit_outcome(learners: pd.DataFrame, trained_ids: np.ndarray, new: dict[int, np.ndarray],
                      holdout_scores: pd.DataFrame, now: dt.datetime) -> pd.DataFrame:
    """`learners` with the new weights where they replace the weights in use; every trained learner with the
    training time, cooldown and held-out scores of the weights they end with."""
    learners = learners.copy()
    replaced = learners["user_id"].isin(new)
    learners.loc[replaced, "weights"] = learners.loc[replaced, "user_id"].map(lambda u: json.dumps(new[u].tolist()))
    trained = learners["user_id"].isin(trained_ids)
    user_ids = learners.loc[trained, "user_id"]
    learners.loc[trained, "trained_at"] = pd.Timestamp(now)
    learners.loc[trained, "training_cooldown_until"] = pd.Timestamp(now + fsrs_policy.TRAINING_COOLDOWN)
    learners.loc[trained, "logloss_before"] = user_ids.map(holdout_scores["global"])
    learners.loc[trained, "logloss_after"] = user_ids.map(holdout_scores["own"])
    learners.loc[trained, "n_holdout_reviews"] = user_ids.map(holdout_scores["n"])
    return learners


def weight_vectors_out_of_bounds(weights: LearnerWeights) -> int:
    """How many of the global and own weight vectors hold a weight outside fsrs.WEIGHT_BOUNDS."""
    matrix = np.vstack([weights.global_weights, *weights.own.values()])
    outside = (matrix < fsrs.WEIGHT_BOUNDS[:, 0] - 1e-9) | (matrix > fsrs.WEIGHT_BOUNDS[:, 1] + 1e-9)
    return int(outside.any(axis=1).sum())


@dataclasses.dataclass(frozen=True)
class ShadowScores:
    metrics: pd.DataFrame  # one row per A/B group: eval_metrics_daily's columns but day and evaluated_at
    calibration: pd.DataFrame  # ab_group, then metrics.calibration_table's columns: 10 bins per group


def shadow_metrics(history: pd.DataFrame, weights: LearnerWeights, day_start: dt.datetime) -> ShadowScores:
    """Predicted against actual recall of the reviews from `day_start` on, per A/B group:
    BASELINE_GLOBAL learners scored with the global weights, TUNED_ELIGIBLE with their own (global
    until they have them).

    history: every review of the day's learners up to the day's end, with their calendar, in time order.
    """
    history = with_learner_days(history)
    user_ids = history["user_id"].unique().tolist()
    groups = dict(zip(user_ids, fsrs_policy.ab_group(user_ids))) if user_ids else {}
    tuned = {u: w for u, w in weights.own.items() if groups.get(u) == fsrs_policy.TUNED_ELIGIBLE}
    predictions = (predict_reviews(history, tuned, weights.global_weights).predictions if len(history)
                   else pd.DataFrame(columns=_PREDICTION_COLUMNS))
    on_day = predictions.loc[history.loc[predictions["row"], "reviewed_at"].to_numpy() >= day_start] \
        if len(predictions) else predictions
    on_day = on_day.assign(ab_group=on_day["user_id"].map(groups))
    rows, calibration = [], []
    for group in (fsrs_policy.BASELINE_GLOBAL, fsrs_policy.TUNED_ELIGIBLE):
        scored = on_day.loc[(on_day["ab_group"] == group) & (on_day["elapsed_days"] > 0)]
        metrics = recall_metrics(scored) if len(scored) else {"n_reviews": 0}
        rows.append({"ab_group": group, "n_reviews": len(scored), "n_learners": int(scored["user_id"].nunique()),
                     "logloss": metrics.get("logloss"), "brier": metrics.get("brier"), "ece": metrics.get("ece"),
                     "rmse_bins": metrics.get("rmse_bins"),
                     "mean_predicted": float(scored["retrievability"].mean()) if len(scored) else None,
                     "mean_recalled": float(scored["recalled"].mean()) if len(scored) else None})
        calibration.append(calibration_table(scored["recalled"], scored["retrievability"]).assign(ab_group=group))
    calibration = pd.concat(calibration, ignore_index=True)
    return ShadowScores(pd.DataFrame(rows), calibration[["ab_group", *calibration.columns[:-1]]])


def shadow_summary(metrics: pd.DataFrame) -> dict[str, int | float]:
    """Per group of shadow_metrics: n_reviews_<group>, and logloss_<group>, rmse_bins_<group> where scored."""
    summary: dict[str, int | float] = {}
    for row in metrics.itertuples():
        summary[f"n_reviews_{row.ab_group}"] = int(row.n_reviews)
        summary |= {f"{name}_{row.ab_group}": float(getattr(row, name)) for name in ("logloss", "rmse_bins")
                    if pd.notna(getattr(row, name))}
    return summary
