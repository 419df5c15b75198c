"""The learner shards every per-learner asset is partitioned by (LEARNING_PIPELINES_LEARNER_SHARDS of them,
16 unless set): each shard is its own run that any worker takes, and a backfill over them fans out."""

import dagster as dg

from learning_pipelines import settings
from learning_pipelines.domain.learner_shards import shard_keys

learner_shards = dg.StaticPartitionsDefinition(shard_keys(settings.LEARNER_SHARDS))
