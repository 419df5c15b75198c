"""NeuMF trained on every interaction, scored on the held-out latest one against popularity, recorded whatever its
scores; the serving model's embeddings replaced only when it beats popularity."""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from learning_pipelines import pause_points
from learning_pipelines.db import learner_locks, ncf_store
from learning_pipelines.domain.ncf_config import MIN_POSITIVES, NcfConfig
from learning_pipelines.domain.ncf_results import ConfigChoice, NcfScores
from learning_pipelines.flows.models import CheckpointStore
from learning_pipelines.flows.summaries import Markdown


@dataclasses.dataclass(frozen=True)
class NcfTrainingSummary:
    n_models: int  # models in ncf_models after this run
    n_interactions: int
    n_positives: int  # distinct (learner, resource) pairs
    skipped: str | None = None  # why nothing was trained (too few positives)
    model_id: int | None = None
    serves: bool = False  # it beat popularity and is the serving model now
    serving_model_id: int | None = None  # the serving model after this run (None: content and graph fallback)
    scores: NcfScores | None = None
    config: NcfConfig | None = None
    choice: ConfigChoice | None = None  # how the configuration was chosen on validation, when it was
    checkpoint_uri: str | None = None

    def warning(self) -> tuple[str, dict]:
        """What the run's log should warn of, with its fields: a model not trained, or trained and not serving."""
        if self.skipped:
            return self.skipped, {"n_positives": self.n_positives}
        serving = f"model {self.serving_model_id}" if self.serving_model_id is not None else "content and graph fallback"
        return "model does not beat popularity: recorded, not serving", {
            "model_id": self.model_id, "hr_at_10": round(self.scores.hr_at_10, 4),
            "popularity_hr_at_10": round(self.scores.popularity_hr_at_10, 4), "serving": serving}

    def metadata(self) -> dict:
        if self.skipped:
            return {"dagster/row_count": self.n_models, "trained": False, "reason": self.skipped,
                    "n_interactions": self.n_interactions}
        scores = self.scores
        return {
            "dagster/row_count": self.n_models, "trained": True, "model_id": self.model_id, "serving": self.serves,
            "hr_at_10": float(scores.hr_at_10), "ndcg_at_10": float(scores.ndcg_at_10),
            "popularity_hr_at_10": float(scores.popularity_hr_at_10),
            "popularity_ndcg_at_10": float(scores.popularity_ndcg_at_10),
            "scores": Markdown(
                "Leave-one-out on each learner's latest interaction\n\n| ranking | HR@10 | NDCG@10 |\n|---|---:|---:|\n"
                f"| NeuMF (model {self.model_id}) | {scores.hr_at_10:.4f} | {scores.ndcg_at_10:.4f} |\n"
                f"| popularity | {scores.popularity_hr_at_10:.4f} | {scores.popularity_ndcg_at_10:.4f} |"),
            "epochs": self.config.epochs,
            "config": dataclasses.asdict(self.config),
            "chosen_by_validation": self.choice is not None,
            **(_search_metadata(self.choice, scores) if self.choice else {}),
            "seconds": float(scores.train_seconds), "n_users": scores.n_users, "n_items": scores.n_items,
            "checkpoint": self.checkpoint_uri,
        }


def _search_metadata(choice: ConfigChoice, scores: NcfScores) -> dict:
    """The validation search behind the chosen configuration: its cost and every candidate's run."""
    rows = "\n".join(
        f"| {t.config.gmf_factors} | {'-'.join(map(str, t.config.mlp_layers))} | {t.config.negatives_per_positive} "
        f"| {t.config.learning_rate:g} | {t.config.weight_decay:g} | {t.config.history_length or '-'} "
        f"| {t.epochs_trained} | {t.best_epoch} "
        f"| {t.validation_hr_at_10:.4f} | {t.validation_ndcg_at_10:.4f} |" for t in choice.trials)
    return {"search_seconds": float(scores.search_seconds), "search_cost": float(scores.search_cost),
            "search": Markdown(
                f"Candidates on validation (the chosen one first; a round: {choice.config.round_positives:,} "
                "interactions and their negatives)\n\n| GMF | MLP | negatives | lr | weight decay "
                "| history | rounds trained | best round | HR@10 | NDCG@10 |\n"
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n" + rows)}


def train_ncf(engine: sa.Engine, models: CheckpointStore, config: NcfConfig | None, seed: int) -> NcfTrainingSummary:
    """Interactions read in one transaction; NeuMF trained with `config` (None: chosen on validation, `seed`
    seeding the choice) and its checkpoint saved; then, in one more transaction, the model recorded in ncf_models
    and, when it beats popularity, its embeddings of the learners that still exist made the serving ones. With
    fewer than MIN_POSITIVES positive interactions nothing is trained, and the summary says why."""
    with engine.begin() as conn:
        interactions = ncf_store.interactions(conn)
        n_models = ncf_store.n_models(conn)
    n_positives = len(interactions.drop_duplicates(["user", "item"]))
    if n_positives < MIN_POSITIVES:
        return NcfTrainingSummary(n_models, len(interactions), n_positives, skipped=(
            f"only {n_positives} positive interaction(s); NCF needs at least {MIN_POSITIVES}: "
            "recommendations use the content and graph fallback"))
    # torch loads only in the steps that train or score: imported with the code location it would add about 2 s
    # to the start of every run worker and Celery step process.
    from learning_pipelines.domain.ncf_fit import fit_and_evaluate

    trained = fit_and_evaluate(interactions, config, seed=seed)
    serves = ncf_store.beats_popularity(trained.scores)
    now = dt.datetime.now(dt.timezone.utc)
    uri = models.save(f"ncf/{now:%Y%m%dT%H%M%S}.pt", trained.checkpoint.to_bytes())
    pause_points.reached("ncf_model.trained")
    with engine.begin() as conn:
        if serves:  # only learners that still exist, locked against `learners forget` until commit
            embeddings = trained.checkpoint.embeddings()
            embeddings = embeddings.of_learners(learner_locks.lock_existing(conn, embeddings.user_ids))
        model_id = ncf_store.record_model(conn, trained_at=now, checkpoint_uri=uri, n_interactions=len(interactions),
                                          scores=trained.scores, epochs=trained.checkpoint.config.epochs)
        if serves:
            ncf_store.replace_embeddings(conn, model_id, embeddings)
        serving = ncf_store.latest_model(conn, beating_popularity=True)
        pause_points.reached("ncf_model.before_commit")
    return NcfTrainingSummary(n_models + 1, len(interactions), n_positives, model_id=model_id, serves=serves,
                              serving_model_id=serving.model_id if serving else None, scores=trained.scores,
                              config=trained.checkpoint.config, choice=trained.choice, checkpoint_uri=uri)
