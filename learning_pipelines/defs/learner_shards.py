"""The learner shards every per-learner asset is partitioned by (LEARNING_PIPELINES_LEARNER_SHARDS of them,
16 unless set): each shard is its own run that any worker takes, and a backfill over them fans out."""

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from learning_pipelines import settings
from learning_pipelines.domain.learner_shards import shard_keys

learner_shards = dg.StaticPartitionsDefinition(shard_keys(settings.LEARNER_SHARDS))

# The tags of a job whose run is one learner shard. Its step stays well under RabbitMQ's consumer_timeout (30
# minutes by default): with late acks, a step still running then is delivered again. Past 25 minutes, use more
# shards (for a rollover window's queues, fewer shards a run: LEARNING_PIPELINES_WINDOW_RUN_SHARDS).
SHARD_STEP_TAGS = {"dagster/max_runtime": str(25 * 60)}


def every_shard(run_key: str, tags: dict[str, str] | None = None, partition_key=lambda shard: shard,
                run_config: dict | None = None) -> list[dg.RunRequest]:
    """One run request per learner shard, keyed `<run_key>:<shard>` so that a tick evaluated again launches none
    twice; `partition_key` makes the shard's partition key (e.g. a day x shard key)."""
    return shard_groups(run_key, 1, partition_key, tags or {}, run_config or {})


# Dagster's run tags for a run of a range of partitions: one step over the keys between them (for day x shard keys,
# each dimension's own range: a range within one day is that day's shards from the first to the last).
PARTITION_RANGE_START_TAG, PARTITION_RANGE_END_TAG = ASSET_PARTITION_RANGE_START_TAG, ASSET_PARTITION_RANGE_END_TAG


def shard_groups(run_key: str, group_size: int, partition_key, tags: dict[str, str],
                 run_config: dict) -> list[dg.RunRequest]:
    """One run request per group of `group_size` consecutive learner shards (the last group may be smaller), each
    run building its shards together: a group of one is that shard's partition (`partition_key(shard)`), a larger
    one the range of their partitions. Keyed `<run_key>:<first shard>..<last shard>`, so that a tick evaluated again
    launches none twice."""
    shards = learner_shards.get_partition_keys()
    requests = []
    for begin in range(0, len(shards), group_size):
        group = shards[begin:begin + group_size]
        if len(group) == 1:
            requests.append(dg.RunRequest(run_key=f"{run_key}:{group[0]}", partition_key=partition_key(group[0]),
                                          tags=tags, run_config=run_config))
            continue
        requests.append(dg.RunRequest(run_key=f"{run_key}:{group[0]}..{group[-1]}", run_config=run_config, tags={
            **tags, PARTITION_RANGE_START_TAG: str(partition_key(group[0])),
            PARTITION_RANGE_END_TAG: str(partition_key(group[-1]))}))
    return requests
