"""Deployment settings read from the environment, in one place.

Required settings (the warehouse URL in production) are `dg.EnvVar`s on the resources in
`defs/resources.py`; this module holds the optional ones, each with its default. Asset modules
read these names, never `os.environ`.
"""

from __future__ import annotations

import os

import dagster as dg

# Time zone of the learner-night schedules (revision queues at 02:00).
SCHEDULE_TIMEZONE = os.environ.get("LEARNING_PIPELINES_SCHEDULE_TIMEZONE", "UTC")

# Where run failures are posted as JSON; unset: recorded in the warehouse only.
ALERT_WEBHOOK_ENV = "LEARNING_PIPELINES_ALERT_WEBHOOK"
ALERT_WEBHOOK_URL = os.environ.get(ALERT_WEBHOOK_ENV) or None

# Schedules and sensors start stopped in development (a newcomer's `make dev` must not fire nightly
# jobs at the demo warehouse); the production stack sets this to `on` to start them all.
AUTOMATION_ENV = "LEARNING_PIPELINES_AUTOMATION"
AUTOMATION_ON = os.environ.get(AUTOMATION_ENV, "off").strip().lower() in ("on", "1", "true", "yes")
DEFAULT_SCHEDULE_STATUS = dg.DefaultScheduleStatus.RUNNING if AUTOMATION_ON else dg.DefaultScheduleStatus.STOPPED
DEFAULT_SENSOR_STATUS = dg.DefaultSensorStatus.RUNNING if AUTOMATION_ON else dg.DefaultSensorStatus.STOPPED
