"""Learner shards: every learner belongs to one of a fixed number of shards, by a stable hash of user_id,
so per-learner work (own FSRS weights and the replay of their memory states) splits into independent
pieces that any worker can take. Shard keys name the count too ("03-of-16"): changing the count gives
new keys instead of silently moving learners between old ones."""

from __future__ import annotations

import numpy as np

from learning_pipelines.domain.stable_hash import salted_hash

# Changing it moves every learner to another shard: harmless (shards hold no state of their own),
# but it turns the shards' history in the UI meaningless.
_SHARD_SALT = 0x5_4A2D


def shard_keys(n_shards: int) -> list[str]:
    if n_shards < 1:
        raise ValueError(f"the number of learner shards must be at least 1, not {n_shards}")
    return [f"{index:02d}-of-{n_shards:02d}" for index in range(n_shards)]


def parse_shard_key(key: str) -> tuple[int, int]:
    """(index, n_shards) of a key made by shard_keys."""
    index, _, n_shards = key.partition("-of-")
    if not (index.isdigit() and n_shards.isdigit()) or not int(index) < int(n_shards):
        raise ValueError(f"{key!r} is not a learner shard key (like '03-of-16')")
    return int(index), int(n_shards)


def shard_of(user_ids, n_shards: int) -> np.ndarray:
    """The shard index of each learner (the same learner always lands in the same shard)."""
    return (salted_hash(user_ids, _SHARD_SALT) % n_shards).astype(np.int64)


def learners_in(user_ids, key: str) -> np.ndarray:
    """The learners of `user_ids` that belong to the shard `key`."""
    return learners_in_any(user_ids, [key])


def learners_in_any(user_ids, keys: list[str]) -> np.ndarray:
    """The learners of `user_ids` that belong to one of the shards `keys` (keys of one shard count)."""
    ids = np.asarray(user_ids, dtype=np.int64)
    indexes, n_shards = _of_one_count(keys)
    return ids[np.isin(shard_of(ids, n_shards), indexes)]


def shard_keys_of(user_ids, keys: list[str]) -> np.ndarray:
    """The key of each learner's shard, for learners of the shards `keys` (keys of one shard count)."""
    _, n_shards = _of_one_count(keys)
    return np.asarray(shard_keys(n_shards), dtype=object)[shard_of(np.asarray(user_ids, dtype=np.int64), n_shards)]


def _of_one_count(keys: list[str]) -> tuple[list[int], int]:
    parsed = [parse_shard_key(key) for key in keys]
    counts = {n_shards for _, n_shards in parsed}
    if len(counts) != 1:
        raise ValueError(f"learner shard keys of one shard count expected, not {sorted(keys)}")
    return [index for index, _ in parsed], counts.pop()
