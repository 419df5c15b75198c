"""FSRS-6 weights: the global ones fitted on a sample of learners, and one learner shard's own weights switched in
with the memory states they change."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable

import pandas as pd
import sqlalchemy as sa

from learning_pipelines import pause_points
from learning_pipelines.db import fsrs_params, learner_locks, memory_state_reads, reads
from learning_pipelines.domain import fsrs_training
from learning_pipelines.domain.memory_states import LearnerWeights
from learning_pipelines.flows.learner_states import rewrite_learner_states
from learning_pipelines.flows.refusals import Refused
from learning_pipelines.flows.summaries import preview

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class GlobalFitSummary:
    fit: fsrs_training.GlobalFit
    version: int  # the fsrs_global_params version it wrote
    weight_vectors_out_of_bounds: int
    seconds: float

    def metadata(self) -> dict:
        return {
            "dagster/row_count": 1,
            "version": self.version,
            "global_logloss": float(self.fit.logloss),
            "n_reviews_fitted": self.fit.n_reviews,
            "n_learners_sampled": self.fit.n_learners,
            "global_weights": [round(float(w), 4) for w in self.fit.weights],
            "seconds": self.seconds,
        }


def fit_global(engine: sa.Engine, config: fsrs_training.TrainingConfig, log: Log) -> GlobalFitSummary:
    """A new fsrs_global_params version fitted on a sample of learners (read in one transaction, written in
    another: the fit in between holds no transaction open)."""
    started = time.perf_counter()
    with engine.begin() as conn:
        sample = fsrs_params.global_training_sample(conn, config.global_fit_max_reviews)
    if sample.empty:
        raise Refused("review_logs holds no review: import reviews first "
                      "(learning-pipelines import FILE).")
    fit = fsrs_training.fit_global(sample, dt.datetime.now(dt.timezone.utc), config, log=log)
    out_of_bounds = fsrs_training.weight_vectors_out_of_bounds(LearnerWeights(fit.weights, "", {}, {}))
    with engine.begin() as conn:
        version = fsrs_params.record_global_fit(conn, fit)
    return GlobalFitSummary(fit, version, out_of_bounds, time.perf_counter() - started)


@dataclasses.dataclass(frozen=True)
class ShardFitSummary:
    trained: fsrs_training.LearnerTraining
    n_learners: int
    n_learners_replayed: int
    weight_vectors_out_of_bounds: int  # of the latest global weights and the shard's own, as stored
    seconds: float

    def metadata(self) -> dict:
        params = self.trained.user_params
        trained = params.loc[params["user_id"].isin(self.trained.decisions.index)]
        decided = trained.join(self.trained.decisions["decision"], on="user_id")
        return {
            "dagster/row_count": len(params),
            "preview": preview(decided, ["user_id", "n_reviews", "logloss_before", "logloss_after", "decision"]),
            "n_learners": self.n_learners,
            "n_learners_with_reviews": len(params),
            "n_learners_trained": self.trained.n_trained,
            "n_learners_new_weights": self.trained.n_replaced,
            # Why the other trained learners keep the weights they use (fsrs_selection's reasons).
            "weights_kept": self.trained.kept_reasons,
            "n_learners_with_own_weights": self.trained.n_learners_with_own_weights,
            "learners_replayed": self.n_learners_replayed,
            "holdout_logloss_own": float(self.trained.holdout_logloss_own),
            "holdout_logloss_global": float(self.trained.holdout_logloss_global),
            "seconds": self.seconds,
        }


def fit_shard(engine: sa.Engine, shard: str, config: fsrs_training.TrainingConfig, learner_chunk: int,
              log: Log) -> ShardFitSummary:
    """The eligible learners of one learner shard fitted from the latest global weights (read in one transaction),
    then, in one more, the shard's srs_user_params rows replaced and the memory states of its learners now on other
    weights replayed (`learner_chunk` learners per read), so a re-run replaces exactly the shard's rows."""
    started = time.perf_counter()
    with engine.begin() as conn:
        learners = reads.shard_learners(conn, shard)
        global_weights = fsrs_params.latest_global_weights(conn)
        inputs = fsrs_params.training_inputs(conn, learners)
    if global_weights is None:
        raise Refused("no global FSRS weights yet: materialize fsrs_global_parameters first (fsrs_global_job).")
    trained = fsrs_training.train_learners(inputs.reviews, inputs.previous, global_weights,
                                           dt.datetime.now(dt.timezone.utc), config, log=log)
    pause_points.reached("fsrs_parameters.fitted")
    with engine.begin() as conn:
        # In db/learner_locks' order: the learners that still exist (locked against `learners forget` until
        # commit), then card_memory_states' shared lock.
        existing = learner_locks.lock_existing(conn, learners)
        learner_locks.share_memory_states_lock(conn)
        fsrs_params.replace_learner_params(conn, learners, _of_learners(trained.user_params, existing))
        pause_points.reached("fsrs_parameters.weights_written")
        weights = memory_state_reads.current_weights(conn, existing).weights
        stale = memory_state_reads.learners_on_other_weights(conn, weights, existing)
        rewrite_learner_states(conn, stale, weights, learner_chunk)
        pause_points.reached("fsrs_parameters.before_commit")
    return ShardFitSummary(trained, len(learners), len(stale), fsrs_training.weight_vectors_out_of_bounds(weights),
                           time.perf_counter() - started)


def _of_learners(rows: pd.DataFrame, user_ids) -> pd.DataFrame:
    return rows.loc[rows["user_id"].isin(user_ids)]
