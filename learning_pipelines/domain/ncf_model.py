"""Neural collaborative filtering for implicit feedback: NeuMF (GMF + MLP, He et al. 2017), and its variant that
also reads each user's latest items in time order."""

from __future__ import annotations

from learning_pipelines.domain.ncf_config import NcfConfig
from learning_pipelines.domain.ncf_torch import nn, torch


class NeuMF(nn.Module):
    """NeuMF; with `config.history_length` L, each user's GMF and MLP vectors also add an average of history
    embeddings over the L items they touched last before the one scored, weighted by how recent each is (weights
    learned per position; SVD++/FISM's idea, in time order): learners move through related resources, and the
    latest ones say more about the next than the whole history does. Scoring without an explicit history uses
    `recent_items`: each user's last L items of the training data, or later ones (`NcfCheckpoint.remember_latest`)."""

    def __init__(self, n_users: int, n_items: int, config: NcfConfig):
        super().__init__()
        half = config.mlp_layers[0] // 2
        self.n_items, self.gmf_factors = n_items, config.gmf_factors
        self.gmf_user = nn.Embedding(n_users, config.gmf_factors)
        self.gmf_item = nn.Embedding(n_items, config.gmf_factors)
        self.mlp_user = nn.Embedding(n_users, half)
        self.mlp_item = nn.Embedding(n_items, half)
        layers = []
        for width_in, width_out in zip(config.mlp_layers[:-1], config.mlp_layers[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.output = nn.Linear(config.gmf_factors + config.mlp_layers[-1], 1)
        for embedding in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(embedding.weight, std=0.01)
        self.history = None
        if config.history_length:
            # Code n_items pads a history shorter than L: its row stays zero and is never trained.
            self.history = nn.EmbeddingBag(n_items + 1, config.gmf_factors + half, mode="sum", padding_idx=n_items)
            nn.init.normal_(self.history.weight, std=0.01)
            with torch.no_grad():
                self.history.weight[n_items].zero_()
            self.recency = nn.Parameter(torch.ones(config.history_length))
            self.register_buffer("recent_items", torch.full((n_users, config.history_length), n_items))

    def user_vectors(self, users: torch.Tensor,
                     history: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(GMF, MLP) user vectors; `history`: (len(users), L) item codes, n_items where there is none."""
        gmf, mlp = self.gmf_user(users), self.mlp_user(users)
        if self.history is None:
            return gmf, mlp
        history = self.recent_items[users] if history is None else history
        present = (history < self.n_items).sum(dim=1, keepdim=True).clamp(min=1)
        recent = self.history(history, per_sample_weights=self.recency.expand(len(history), -1)) / present
        return gmf + recent[:, :self.gmf_factors], mlp + recent[:, self.gmf_factors:]

    def score_rows(self, users: torch.Tensor, items: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """(len(users), k) logits: each user against their own row of `items` (len(users), k), the user's vectors
        computed once for the row."""
        gmf_user, mlp_user = self.user_vectors(users, history)
        gmf = gmf_user.unsqueeze(1) * self.gmf_item(items)
        mlp = self._mlp_rows(mlp_user, self.mlp_item(items))
        # The output layer on [GMF, MLP], without building the concatenation.
        weight = self.output.weight[0]
        return gmf @ weight[:self.gmf_factors] + mlp @ weight[self.gmf_factors:] + self.output.bias

    def _mlp_rows(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The MLP on [user, item] for each item of a row, (b, k, width): the first layer is W_user u + W_item i, so
        its user half is computed once per row and [user, item] is never built (what building it cost a training
        step: BENCHMARKS.md, "NCF: one-off measurements")."""
        if not len(self.mlp):
            return torch.cat([user.unsqueeze(1).expand(-1, items.shape[1], -1), items], dim=2)
        first, half = self.mlp[0], user.shape[1]
        hidden = (nn.functional.linear(items, first.weight[:, half:])
                  + nn.functional.linear(user, first.weight[:, :half], first.bias).unsqueeze(1))
        return self.mlp[1:](hidden)

    def forward(self, users: torch.Tensor, items: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """One logit per (user, item) pair."""
        return self.score_rows(users, items.unsqueeze(1), history).squeeze(1)
