"""A trained NeuMF as the model store keeps it: weights-only bytes (tensors, lists, numbers and strings), the ids
its codes stand for, and what serving asks of it (scores, embeddings, learners' latest items)."""

from __future__ import annotations

import dataclasses
import io
import pickle
import re

import numpy as np
import pandas as pd

from learning_pipelines.domain.ncf_config import NcfConfig
from learning_pipelines.domain.ncf_history import latest_items
from learning_pipelines.domain.ncf_model import NeuMF
from learning_pipelines.domain.ncf_results import NcfEmbeddings
from learning_pipelines.domain.ncf_torch import torch


class CheckpointRefused(ValueError):
    """Checkpoint bytes that are not tensors, lists and numbers only: refused, never unpickled."""


@dataclasses.dataclass(frozen=True)
class NcfCheckpoint:
    """A trained NeuMF and the ids its codes stand for: user code i is user_ids[i], item code j is
    resource_ids[j] (both sorted, as `ncf_protocol.leave_one_out` codes them)."""
    model: NeuMF
    config: NcfConfig
    user_ids: np.ndarray
    resource_ids: np.ndarray

    def to_bytes(self) -> bytes:
        """Tensors, lists, numbers and strings only: `torch.load(..., weights_only=True)` reads it back."""
        buffer = io.BytesIO()
        torch.save({"state": dict(self.model.state_dict()),
                    "config": dataclasses.asdict(self.config) | {"mlp_layers": list(self.config.mlp_layers)},
                    "user_ids": self.user_ids.tolist(), "resource_ids": self.resource_ids.tolist()}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes) -> NcfCheckpoint:
        """Reads `to_bytes`' output with torch's weights-only unpickler: a payload naming any other object
        (a pickle that would run code) is refused before anything in it runs."""
        try:
            saved = torch.load(io.BytesIO(payload), weights_only=True)
        except pickle.UnpicklingError as error:
            named = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
            raise CheckpointRefused("checkpoint refused: it is not a weights-only checkpoint of tensors, lists and "
                                    "numbers" + (f" (it names {named.group(1)})" if named else "")) from None
        config = NcfConfig(**{**saved["config"], "mlp_layers": tuple(saved["config"]["mlp_layers"])})
        model = NeuMF(len(saved["user_ids"]), len(saved["resource_ids"]), config)
        model.load_state_dict(saved["state"])
        model.eval()
        return cls(model, config, np.array(saved["user_ids"]), np.array(saved["resource_ids"]))

    def knows(self, user_ids: np.ndarray) -> np.ndarray:
        """Per user, whether the model was trained on them."""
        return pd.Index(self.user_ids).get_indexer(user_ids) >= 0

    def score(self, user_ids: np.ndarray, resource_ids: np.ndarray) -> np.ndarray:
        """(len(user_ids), len(resource_ids)) interaction probabilities: NaN rows for users the model never
        saw, 0 for resources it never saw."""
        user_code = pd.Index(self.user_ids).get_indexer(user_ids)
        item_code = pd.Index(self.resource_ids).get_indexer(resource_ids)
        self.model.eval()
        with torch.no_grad():
            users = torch.from_numpy(np.maximum(user_code, 0))
            items = torch.from_numpy(np.maximum(item_code, 0)).expand(len(user_ids), -1)
            probabilities = torch.sigmoid(self.model.score_rows(users, items)).numpy()
        probabilities[:, item_code < 0] = 0.0
        probabilities[user_code < 0] = np.nan
        return probabilities

    def remember_latest(self, interactions: pd.DataFrame) -> None:
        """A history model scores each user after the items they touched last: those become their latest items in
        `interactions` (user, item, time ids), for the users and items the model knows. Others keep theirs."""
        if self.model.history is None:
            return
        frame = pd.DataFrame({"user": pd.Index(self.user_ids).get_indexer(interactions["user"]),
                              "item": pd.Index(self.resource_ids).get_indexer(interactions["item"]),
                              "time": interactions["time"].to_numpy()})
        frame = frame.loc[(frame["user"] >= 0) & (frame["item"] >= 0)]
        frame = frame.sort_values(["user", "time", "item"], kind="stable").drop_duplicates(["user", "item"],
                                                                                           keep="last")
        users = frame["user"].to_numpy(np.int64)
        latest = latest_items(users, frame["item"].to_numpy(np.int64), len(self.user_ids),
                              self.config.history_length, self.model.n_items)
        known = np.unique(users)
        with torch.no_grad():
            self.model.recent_items[torch.from_numpy(known)] = torch.from_numpy(latest[known])

    def embeddings(self) -> NcfEmbeddings:
        model = self.model
        with torch.no_grad():
            users = torch.cat(model.user_vectors(torch.arange(len(self.user_ids))), dim=1).numpy()
            items = torch.cat([model.gmf_item.weight, model.mlp_item.weight], dim=1).numpy()
        return NcfEmbeddings(self.user_ids, users, self.resource_ids, items)
