"""FSRS-6 weights: the global ones fitted once, own ones per learner shard, their checks and jobs."""

import dagster as dg
from pydantic import Field

from learning_pipelines.defs.learner_shards import SHARD_STEP_TAGS, learner_shards
from learning_pipelines.defs.recipe_steps import recipe_step
from learning_pipelines.defs.resources import Warehouse
from learning_pipelines.defs.review_logs import review_logs
from learning_pipelines.defs.table_metadata import shown, written_table
from learning_pipelines.domain import fsrs_training
from learning_pipelines.domain.chunking import REPLAY_LEARNER_CHUNK
from learning_pipelines.domain.fsrs_optimizer import FitConfig
from learning_pipelines.flows.fsrs_weights import ShardFitSummary, fit_global, fit_shard
from learning_pipelines.observability.structured_logs import asset_logger


class GlobalFitConfig(dg.Config):
    """How far the pooled fit goes (defaults: domain.fsrs_training's and fsrs_optimizer.FitConfig's)."""

    global_fit_iterations: int = Field(FitConfig.max_iterations, description="most Levenberg-Marquardt iterations "
                                       "of the pooled global fit")
    global_fit_max_reviews: int = Field(fsrs_training.GLOBAL_FIT_MAX_REVIEWS, description="most reviews the "
                                        "pooled fit sees, sampled by whole learners, then whole cards")

    def to_training_config(self) -> fsrs_training.TrainingConfig:
        return fsrs_training.TrainingConfig(self.global_fit_max_reviews,
                                            global_fit=FitConfig(max_iterations=self.global_fit_iterations))


class ShardFitConfig(dg.Config):
    """How far one learner shard's fits go, and how many learners its replay reads at once."""

    own_fit_iterations: int = Field(FitConfig.max_iterations, description="most Levenberg-Marquardt iterations of "
                                    "each eligible learner's own fit")
    learner_chunk: int = Field(REPLAY_LEARNER_CHUNK, description="learners whose memory states are replayed per "
                               "read after their weights changed")

    def to_training_config(self) -> fsrs_training.TrainingConfig:
        return fsrs_training.TrainingConfig(own_fit=FitConfig(max_iterations=self.own_fit_iterations))


@dg.asset(
    group_name="fsrs",
    deps=[review_logs],
    kinds={"python", "sql"},
    pool="fsrs_optimization",
    owners=["team:learning-intelligence"],
    metadata=written_table("fsrs_global_params"),
    check_specs=[dg.AssetCheckSpec("weights_within_bounds", asset="fsrs_global_parameters", blocking=True,
                                   description="The new global weights lie inside the FSRS-6 clamping bounds.")],
)
@recipe_step
def fsrs_global_parameters(context: dg.AssetExecutionContext, config: GlobalFitConfig,
                           warehouse: Warehouse) -> dg.MaterializeResult:
    """Global FSRS-6 weights, fitted once on a sample of learners' reviews (outside each learner's held-out
    latest 10 %): a new fsrs_global_params version, the weights of every learner without own ones and the
    start of every own fit. Each run is followed by every learner shard of fsrs_parameters."""
    summary = fit_global(warehouse.engine, config.to_training_config(), log=asset_logger(context).info)
    return dg.MaterializeResult(metadata=shown(summary.metadata()), data_version=dg.DataVersion(str(summary.version)),
                                check_results=[_within_bounds(summary.weight_vectors_out_of_bounds)])


@dg.asset(
    group_name="fsrs",
    deps=[dg.AssetDep(review_logs, partition_mapping=dg.AllPartitionMapping()), fsrs_global_parameters],
    partitions_def=learner_shards,
    kinds={"python", "sql"},
    owners=["team:learning-intelligence"],
    metadata=written_table("srs_user_params", "card_memory_states"),
    check_specs=[dg.AssetCheckSpec("tuned_not_worse_than_global", asset="fsrs_parameters",
                                   description="On the shard's trained learners' held-out latest reviews, the "
                                               "weights they end with score a logloss no worse than the global "
                                               "weights beyond the noise of that comparison (one-sided 95 %)."),
                 # In the asset's own step, on what it has just stored: one Celery task per shard, not two.
                 dg.AssetCheckSpec("weights_within_bounds", asset="fsrs_parameters", blocking=True,
                                   description="The latest global weights and the shard's learners' own weights, as "
                                               "stored, lie inside the FSRS-6 clamping bounds.")],
)
@recipe_step
def fsrs_parameters(context: dg.AssetExecutionContext, config: ShardFitConfig,
                    warehouse: Warehouse) -> dg.MaterializeResult:
    """One learner shard's own FSRS-6 weights: eligible TUNED_ELIGIBLE learners (at least 300 reviews,
    7-day cooldown passed) are fitted from the weights they use (the latest global ones until they have own),
    and the new weights are stored only where they beat those and the defaults on the latest quarter of
    the training reviews (metadata `weights_kept` says why the others stay); then each learner is scored against
    the global weights on their held-out latest 10 % of reviews. The shard's srs_user_params rows and the
    memory states of its learners now on other weights (replayed in full) switch together in one
    transaction, so a re-run or a redelivered step replaces exactly the shard's rows."""
    summary = fit_shard(warehouse.engine, context.partition_key, config.to_training_config(), config.learner_chunk,
                        log=asset_logger(context).info)
    return dg.MaterializeResult(metadata=shown(summary.metadata()), check_results=_shard_checks(summary))


def _shard_checks(summary: ShardFitSummary) -> list[dg.AssetCheckResult]:
    trained = summary.trained
    own, global_ = trained.holdout_logloss_own, trained.holdout_logloss_global
    return [dg.AssetCheckResult(check_name="tuned_not_worse_than_global", passed=trained.tuned_not_worse_than_global,
                                metadata={"holdout_logloss_own": own, "holdout_logloss_global": global_,
                                          "holdout_difference_se": trained.holdout_difference_se,
                                          "n_holdout_reviews": trained.n_holdout_reviews,
                                          "n_learners": len(trained.holdout_scores)}),
            _within_bounds(summary.weight_vectors_out_of_bounds)]


def _within_bounds(weight_vectors_out_of_bounds: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name="weights_within_bounds", passed=weight_vectors_out_of_bounds == 0,
                               metadata={"weight_vectors_out_of_bounds": weight_vectors_out_of_bounds})


fsrs_global_job = dg.define_asset_job(
    "fsrs_global_job", selection=[fsrs_global_parameters], tags={"dagster/max_runtime": str(60 * 60)},
    description="Fits the global FSRS weights on a sample of learners; every learner shard follows "
                "(fsrs_shards_after_global).")
fsrs_optimization_job = dg.define_asset_job(
    "fsrs_optimization_job", selection=[fsrs_parameters], tags=SHARD_STEP_TAGS,
    description="One learner shard: fits its eligible learners' own FSRS weights from the global ones and "
                "replays its learners' memory states on their new weights. Launch every shard as a backfill.")
