"""Where every job's steps run: Celery workers in the production stack, the run's own processes otherwise."""

import dagster as dg
from dagster_celery import celery_executor

from learning_pipelines.deploy.celery_steps import executor_config
from learning_pipelines.settings import CELERY_QUEUE, EXECUTOR


@dg.definitions
def executor() -> dg.Definitions:
    if EXECUTOR == "celery":
        return dg.Definitions(executor=celery_executor.configured(executor_config(CELERY_QUEUE)))
    return dg.Definitions()
