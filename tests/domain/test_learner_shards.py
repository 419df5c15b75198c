import numpy as np
import pytest

from learning_pipelines.domain.learner_shards import learners_in, parse_shard_key, shard_keys, shard_of


def test_every_learner_is_in_exactly_one_shard_and_stays_there():
    user_ids = np.arange(1, 20_001)
    keys = shard_keys(16)
    members = [learners_in(user_ids, key) for key in keys]
    assert sorted(np.concatenate(members).tolist()) == user_ids.tolist()
    sizes = np.array([len(m) for m in members])
    assert sizes.min() > 0.9 * 20_000 / 16 and sizes.max() < 1.1 * 20_000 / 16, "a hash, not id ranges"
    assert np.array_equal(shard_of(user_ids, 16), shard_of(user_ids.copy(), 16))


def test_shard_keys_name_their_count_and_parse_back():
    assert shard_keys(3) == ["00-of-03", "01-of-03", "02-of-03"]
    assert parse_shard_key("07-of-16") == (7, 16)
    for bad in ("16-of-16", "shard-1", "a-of-b"):
        with pytest.raises(ValueError, match="not a learner shard key"):
            parse_shard_key(bad)
    with pytest.raises(ValueError):
        shard_keys(0)
