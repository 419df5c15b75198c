"""Deployment settings read from the environment, in one place.

Required settings (the warehouse URL in production) are `dg.EnvVar`s on the resources in
`defs/resources.py`; this module holds the optional ones, each with its default. Asset modules
read these names, never `os.environ`.
"""

from __future__ import annotations

import os
import urllib.parse

import dagster as dg

# Time zone of the learner-night schedules (revision queues at 02:00).
SCHEDULE_TIMEZONE = os.environ.get("LEARNING_PIPELINES_SCHEDULE_TIMEZONE", "UTC")

# Where run failures are posted as JSON; unset: recorded in the warehouse only.
ALERT_WEBHOOK_ENV = "LEARNING_PIPELINES_ALERT_WEBHOOK"
# Anything else (file:, ftp:, data:) would read or write where no webhook lives.
ALERT_WEBHOOK_SCHEMES = ("http", "https")


def checked_webhook_url(url: str | None) -> str | None:
    """`url` when it is an http(s) URL naming a host, None when unset; else ValueError naming the variable
    and the scheme (never the URL, which may carry a token)."""
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ALERT_WEBHOOK_SCHEMES:
        scheme = f"{parts.scheme}:" if parts.scheme else "none"
        raise ValueError(f"${ALERT_WEBHOOK_ENV} must be an http:// or https:// URL, its scheme is {scheme}")
    if not parts.hostname:
        raise ValueError(f"${ALERT_WEBHOOK_ENV} must name a host ({parts.scheme}://HOST/...)")
    return url


# Checked at import, so a bad value stops the code location from loading: seen at deploy, not at the first
# failed run.
ALERT_WEBHOOK_URL = checked_webhook_url(os.environ.get(ALERT_WEBHOOK_ENV))

# Schedules and sensors start stopped in development (a newcomer's `make dev` must not fire nightly
# jobs at the demo warehouse); the production stack sets this to `on` to start them all.
AUTOMATION_ENV = "LEARNING_PIPELINES_AUTOMATION"
AUTOMATION_ON = os.environ.get(AUTOMATION_ENV, "off").strip().lower() in ("on", "1", "true", "yes")
DEFAULT_SCHEDULE_STATUS = dg.DefaultScheduleStatus.RUNNING if AUTOMATION_ON else dg.DefaultScheduleStatus.STOPPED
DEFAULT_SENSOR_STATUS = dg.DefaultSensorStatus.RUNNING if AUTOMATION_ON else dg.DefaultSensorStatus.STOPPED

# How many learner shards the per-learner work is split into (each shard is a partition: its own run).
# Keep a shard's step well under RabbitMQ's consumer_timeout (30 minutes by default) in the Celery stack.
LEARNER_SHARDS_ENV = "LEARNING_PIPELINES_LEARNER_SHARDS"


def checked_shard_count(value: str | None) -> int:
    if value is None or not value.strip():
        return 16
    if not value.strip().isdigit() or not 1 <= int(value) <= 4096:
        raise ValueError(f"${LEARNER_SHARDS_ENV} must be a whole number from 1 to 4096, not {value!r}")
    return int(value)


LEARNER_SHARDS = checked_shard_count(os.environ.get(LEARNER_SHARDS_ENV))

# `celery`: every job's steps go to Celery workers (dagster-celery over RabbitMQ), as in the production stack
# (`make stack`); unset: Dagster's default executor, in the run's own processes (development, tests).
EXECUTOR_ENV = "LEARNING_PIPELINES_EXECUTOR"
EXECUTORS = ("default", "celery")
EXECUTOR = os.environ.get(EXECUTOR_ENV, "default").strip().lower() or "default"
if EXECUTOR not in EXECUTORS:
    raise ValueError(f"${EXECUTOR_ENV} must be one of {', '.join(EXECUTORS)}, not {EXECUTOR!r}")
# The broker URL (it may hold a password) is read from this variable where it is used, never shown in a run's config.
CELERY_BROKER_ENV = "LEARNING_PIPELINES_CELERY_BROKER"
DEFAULT_CELERY_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
# The queue the steps go to and the workers listen on: its own per deployment (and per test run), since
# dagster-celery's default queue `dagster` is shared by everyone on a broker.
CELERY_QUEUE_ENV = "LEARNING_PIPELINES_CELERY_QUEUE"
CELERY_QUEUE = os.environ.get(CELERY_QUEUE_ENV, "").strip() or "learning_pipelines"
