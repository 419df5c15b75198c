"""How runs hand their steps to Celery workers (dagster-celery over RabbitMQ): one configuration for the
executor and the workers, which must agree on broker and queue."""

from __future__ import annotations

from typing import Any

import yaml

from learning_pipelines.settings import CELERY_BROKER_ENV

# dagster-celery's own app module: workers load it with `-A`, it registers the step task.
WORKER_APP = "dagster_celery.app"


def executor_config(queue: str) -> dict[str, Any]:
    return {
        "broker": {"env": CELERY_BROKER_ENV},
        "backend": "rpc://",
        "config_source": {
            # A step is acknowledged only once it has finished, and a worker that dies mid-step hands it back to
            # the queue (to either worker); without both a killed worker leaves its run STARTED forever. Every
            # step therefore replaces its own rows in one transaction. RabbitMQ redelivers a step still
            # unacknowledged after its consumer_timeout (30 minutes by default): shard steps stay well under it.
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "task_default_queue": queue,
            # Each run worker's reply queue (rpc:// results) expires an hour after its last use, not Celery's default
            # day: runs leave no queues behind on the broker for long. A shard step stays under 25 minutes.
            "result_expires": 3600,
            # One step at a time per worker process, taking no second one ahead: scale by adding workers.
            "worker_prefetch_multiplier": 1,
            "worker_concurrency": 1,
        },
    }


def worker_config_yaml(queue: str) -> str:
    """The file `dagster-celery worker start -y` reads: the same block a job's `execution` config holds."""
    return yaml.safe_dump({"execution": {"config": executor_config(queue)}}, sort_keys=False)
