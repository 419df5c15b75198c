"""What training an NCF yields, as plain numbers and arrays: its scores under the protocol, how its configuration
was chosen, its learned vectors. No torch here, so the warehouse and the assets name these without loading it."""

from __future__ import annotations

import dataclasses

import numpy as np

from learning_pipelines.domain.ncf_config import NcfConfig


@dataclasses.dataclass(frozen=True)
class NcfScores:
    """Leave-one-out scores of one training run, beside the popularity baseline's."""
    hr_at_10: float
    ndcg_at_10: float
    popularity_hr_at_10: float
    popularity_ndcg_at_10: float
    train_seconds: float  # the final training's
    n_users: int
    n_items: int
    search_seconds: float = 0.0  # choosing the configuration on validation, when it was chosen
    search_cost: float = 0.0  # the choice's training examples per example of the final training


@dataclasses.dataclass(frozen=True)
class Trial:
    """One candidate's run in the search: how far it trained and its best validation epoch."""
    config: NcfConfig
    epochs_trained: int
    best_epoch: int
    validation_hr_at_10: float
    validation_ndcg_at_10: float

    def as_dict(self) -> dict:
        return {"gmf_factors": self.config.gmf_factors, "mlp_layers": list(self.config.mlp_layers),
                "negatives_per_positive": self.config.negatives_per_positive,
                "learning_rate": self.config.learning_rate, "weight_decay": self.config.weight_decay,
                "history_length": self.config.history_length,
                "epochs_trained": self.epochs_trained, "best_epoch": self.best_epoch,
                "validation_hr_at_10": round(self.validation_hr_at_10, 4),
                "validation_ndcg_at_10": round(self.validation_ndcg_at_10, 4)}


@dataclasses.dataclass(frozen=True)
class ConfigChoice:
    config: NcfConfig  # the winner, epochs = its best validation epoch
    trials: tuple[Trial, ...]  # every candidate, the winner first
    search_examples: int
    search_seconds: float


@dataclasses.dataclass(frozen=True)
class NcfEmbeddings:
    """Each id's learned vector: GMF factors then MLP embedding (gmf_factors + mlp_layers[0] // 2 floats); a
    user's includes the recency-weighted average history embedding of their latest items when the model has one."""
    user_ids: np.ndarray
    user_vectors: np.ndarray  # (len(user_ids), width)
    resource_ids: np.ndarray
    resource_vectors: np.ndarray  # (len(resource_ids), width)

    def of_learners(self, user_ids: np.ndarray) -> NcfEmbeddings:
        """The same embeddings with only these users' vectors (every resource's kept)."""
        kept = np.isin(self.user_ids, user_ids)
        return dataclasses.replace(self, user_ids=self.user_ids[kept], user_vectors=self.user_vectors[kept])
