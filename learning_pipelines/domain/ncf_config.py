"""NeuMF's settings, apart from the model: what the code location needs at import, without loading torch."""

from __future__ import annotations

import dataclasses

MIN_POSITIVES = 10  # platform rule: below this NCF cannot beat popularity; fall back to content/graph


@dataclasses.dataclass(frozen=True)
class NcfConfig:
    gmf_factors: int = 16
    mlp_layers: tuple[int, ...] = (64, 32, 16)
    negatives_per_positive: int = 4
    epochs: int = 20  # passes over the training positives, or rounds of `round_positives` when that is set
    batch_size: int = 1024
    learning_rate: float = 0.002
    weight_decay: float = 0.0
    seed: int = 7
    round_positives: int = 0  # 0: an epoch is a whole pass; else the next this many positives of the current pass
    history_length: int = 0  # 0: plain NeuMF; else a user is also the items they touched last, this many (NeuMF)
