"""Where every job's steps run: Celery workers in the production stack, the run's own processes otherwise."""

from typing import Any

import dagster as dg
from dagster_celery import celery_executor

from learning_pipelines.settings import CELERY_BROKER_ENV, CELERY_QUEUE, EXECUTOR


def celery_executor_config(queue: str) -> dict[str, Any]:
    """dagster-celery's executor config; the stack's workers read the same block (deploy/stack_setup.py), since the
    executor and the workers must agree on broker and queue."""
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


@dg.definitions
def executor() -> dg.Definitions:
    if EXECUTOR == "celery":
        return dg.Definitions(executor=celery_executor.configured(celery_executor_config(CELERY_QUEUE)))
    return dg.Definitions()
