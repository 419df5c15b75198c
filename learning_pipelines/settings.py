"""Plain switches read from the environment, in one place, each with its default.

Endpoints and secrets (the warehouse URL, the alert webhook) are not here: they are resource fields a deployment
sets with `dg.EnvVar` (`defs/resources.py`), so the UI shows the variable's name, never its value. Asset modules
read these names, never `os.environ`.
"""

from __future__ import annotations

import os

import dagster as dg

# Time zone of revision_queues' day partitions (the dates learners roll into) and of the daily complexity run
# (02:00). Learners' own days follow their own time zones (users.timezone), whatever this says.
SCHEDULE_TIMEZONE = os.environ.get("LEARNING_PIPELINES_SCHEDULE_TIMEZONE", "UTC")

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

# How many learner shards one run of a rollover window's queues builds together (consecutive shard keys). A window
# holds the learners of a few time zones: built in one run it costs one build and one run instead of one per shard.
# Set it lower (e.g. 4: four runs a window) where one window's learners are too many for one step.
WINDOW_RUN_SHARDS_ENV = "LEARNING_PIPELINES_WINDOW_RUN_SHARDS"


def checked_window_run_shards(value: str | None) -> int:
    if value is None or not value.strip():
        return LEARNER_SHARDS
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"${WINDOW_RUN_SHARDS_ENV} must be a whole number of at least 1, not {value!r}")
    return min(int(value), LEARNER_SHARDS)


WINDOW_RUN_SHARDS = checked_window_run_shards(os.environ.get(WINDOW_RUN_SHARDS_ENV))

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

# The TagQualityDebtHigh alert fires when tag-quality debt over the last 7 queue dates passes this share of the
# concepts due on them (monitoring/alerts.yml); the exporter serves it as tag_quality_debt_alert_share. The demo's
# simulated platform leaves 3 % of concepts without a theme; the content team is asked in above 5 %.
TAG_DEBT_ALERT_SHARE_ENV = "LEARNING_PIPELINES_TAG_DEBT_ALERT_SHARE"
DEFAULT_TAG_DEBT_ALERT_SHARE = 0.05


def tag_debt_alert_share(value: str | None = None) -> float:
    """The share from `value`, by default from $LEARNING_PIPELINES_TAG_DEBT_ALERT_SHARE (read at each call: only
    the exporter needs it, so a bad value stops the exporter, not the code location)."""
    value = os.environ.get(TAG_DEBT_ALERT_SHARE_ENV) if value is None else value
    if value is None or not value.strip():
        return DEFAULT_TAG_DEBT_ALERT_SHARE
    try:
        share = float(value)
    except ValueError:
        share = float("nan")
    if not 0 < share <= 1:
        raise ValueError(f"${TAG_DEBT_ALERT_SHARE_ENV} must be a share above 0 and at most 1 (0.05 is 5 %), "
                         f"not {value!r}")
    return share
