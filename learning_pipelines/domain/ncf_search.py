"""NeuMF's configuration chosen on validation inside the training data, never on the evaluation items.

Validation holds out each user's latest training item (`ncf_protocol.validation_split`; at most `VALIDATION_USERS`
users, drawn at random). Every candidate of `SEARCH_SPACE` trains `first_rung_epochs`; the best third (rounded up: 2
of 5) are resumed (not restarted) to `second_rung_epochs`; the best of those is resumed until its validation score
has not improved for `patience` epochs. The choice is that candidate with its best epoch count;
`ncf_fit.fit_and_evaluate` then trains it afresh on all the training data. The search counts in rounds, not passes:
a round is the next half pass over the positives (at most `ROUND_POSITIVES`), so short runs and early stopping see
the score move twice a pass and the chosen count is finer; the final training trains that many rounds of the same
size. Cost is counted in training examples (positives and sampled negatives): the choice costs `search_examples`,
against the final training's `config.epochs * (1 + negatives) * config.round_positives`. With five candidates, rungs
of 2 and 4 rounds (after half a pass every candidate still ranks about as popularity does) and a patience of 3, that
is about (best rounds + 13) rounds against the final's best rounds: within 3x once the best is 7 rounds or more.
`NcfScores.search_cost` reports the measured ratio (the benchmark's rounds and ratios: BENCHMARKS.md, "NCF on
MovieLens").
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

from learning_pipelines.domain.metrics import hit_rate_and_ndcg
from learning_pipelines.domain.ncf_config import NcfConfig
from learning_pipelines.domain.ncf_protocol import LeaveOneOut, validation_split
from learning_pipelines.domain.ncf_results import ConfigChoice, Trial
from learning_pipelines.domain.ncf_training import NeumfTraining, score_candidates

# What a long search is doing, at INFO: `ncf evaluate` shows it on stderr.
progress = logging.getLogger(__name__)

# Embedding sizes, negatives per positive, learning rate and history length: plain NeuMF near its published settings,
# and NeuMF with the last 3, 5 or 10 items a user touched (`ncf_model.NeuMF`), since which wins depends on the data:
# how much the order of a user's items says. Which each benchmark set chooses: BENCHMARKS.md, "NCF on MovieLens".
SEARCH_SPACE: tuple[dict, ...] = (
    {"gmf_factors": 16, "mlp_layers": (64, 32, 16), "negatives_per_positive": 4, "learning_rate": 0.004},
    {"gmf_factors": 64, "mlp_layers": (128, 64, 32), "negatives_per_positive": 8, "learning_rate": 0.003},
    {"gmf_factors": 64, "mlp_layers": (128, 64, 32), "negatives_per_positive": 8, "learning_rate": 0.003,
     "history_length": 3},
    {"gmf_factors": 64, "mlp_layers": (128, 64, 32), "negatives_per_positive": 8, "learning_rate": 0.003,
     "history_length": 5},
    {"gmf_factors": 64, "mlp_layers": (128, 64, 32), "negatives_per_positive": 8, "learning_rate": 0.003,
     "history_length": 10},
)
MAX_EPOCHS = 40
# Users whose held-out item scores each round: HR@10 within about +-0.02 (95 %) at this size; scoring every user's
# 100 candidates each round made a large set's search much slower (BENCHMARKS.md, "NCF: one-off measurements").
VALIDATION_USERS = 2_000
# A round is half a pass, and at most this many positives: on large sets one pass is already most of the training.
ROUND_POSITIVES = 200_000


def batch_size_for(n_positives: int) -> int:
    """About 25 positives per step, as a power of two between 256 and 16384: large sets train fast in big batches,
    small ones still take several optimizer steps an epoch."""
    return int(2 ** round(math.log2(min(max(n_positives / 25, 256), 16384))))


class _Candidate:
    def __init__(self, split: LeaveOneOut, config: NcfConfig, label: str):
        self.config = config
        self.training = NeumfTraining(split.train, split.n_users, split.n_items, config)
        self.best = (-1.0, 0, 0.0, 0.0)  # score, epoch, HR@10, NDCG@10
        self.label = label  # the search space's point: what this candidate changes

    def train_to(self, epochs: int, validation: LeaveOneOut) -> None:
        while self.training.epochs_done < epochs:
            self.training.epoch()
            hr, ndcg = hit_rate_and_ndcg(score_candidates(self.training.model, validation))
            progress.info("search: %s, epoch %d: validation HR@10 %.3f, NDCG@10 %.3f", self.label,
                          self.training.epochs_done, hr, ndcg)
            # HR@10 and NDCG@10 summed: the protocol's two figures; NDCG steadies HR's ties between close runs.
            if hr + ndcg > self.best[0]:
                self.best = (hr + ndcg, self.training.epochs_done, hr, ndcg)

    def epochs_since_best(self) -> int:
        return self.training.epochs_done - self.best[1]

    def trial(self) -> Trial:
        return Trial(self.config, self.training.epochs_done, self.best[1], self.best[2], self.best[3])


def choose_config(split: LeaveOneOut, space: tuple[dict, ...] = SEARCH_SPACE, seed: int = 7,
                  first_rung_epochs: int = 2, second_rung_epochs: int = 4, patience: int = 3,
                  max_epochs: int = MAX_EPOCHS) -> ConfigChoice:
    """The configuration of `space` with the best validation score on `split.train`'s own held-out items, and its
    best epoch count (see the module's docstring)."""
    started = time.perf_counter()
    validation = validation_split(split, seed=seed, max_users=VALIDATION_USERS)
    n_positives = len(validation.train)
    base = NcfConfig(batch_size=batch_size_for(n_positives), seed=seed,
                     round_positives=min(ROUND_POSITIVES, math.ceil(n_positives / 2)))
    candidates = [_Candidate(validation, dataclasses.replace(base, **point),
                             f"candidate {number} of {len(space)} ({', '.join(f'{k}={v}' for k, v in point.items())})")
                  for number, point in enumerate(space, start=1)]
    alive = candidates
    for rung_epochs, keep in ((first_rung_epochs, math.ceil(len(candidates) / 3)), (second_rung_epochs, 1)):
        for candidate in alive:
            candidate.train_to(rung_epochs, validation)
        alive = sorted(alive, key=lambda candidate: -candidate.best[0])[:keep]
    [winner] = alive
    while winner.training.epochs_done < max_epochs and winner.epochs_since_best() < patience:
        winner.train_to(winner.training.epochs_done + 1, validation)
    rest = [candidate.trial() for candidate in candidates if candidate is not winner]
    return ConfigChoice(dataclasses.replace(winner.config, epochs=winner.best[1]), (winner.trial(), *rest),
                        sum(candidate.training.examples_seen for candidate in candidates),
                        round(time.perf_counter() - started, 2))
