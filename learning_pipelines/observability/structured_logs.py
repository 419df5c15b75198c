"""Structured log lines: JSON in production, readable lines in a terminal, and the run's Dagster log too.

LEARNING_PIPELINES_LOG_FORMAT=json|console picks the renderer of the lines written to stderr (unset: console
when stderr is a terminal, else json). A line written through `asset_logger` carries the run id, job, asset,
partition and learner shard of its step, and the same event goes to `context.log` at the same level, so the
Dagster UI's run log shows it as well.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import dagster as dg
import structlog
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG, PARTITION_NAME_TAG
from structlog.typing import FilteringBoundLogger

from learning_pipelines import settings
from learning_pipelines.domain.learner_shards import shard_keys

LOG_FORMAT_ENV = "LEARNING_PIPELINES_LOG_FORMAT"
LOG_FORMATS = ("json", "console")
# The Dagster run log shows these on every line already; the forwarded message leaves them out.
_SHOWN_BY_DAGSTER = {"event", "level", "timestamp", "run_id", "job", "asset"}
_key_values = structlog.processors.KeyValueRenderer(repr_native_str=False)
# The partition keys of the learner shards (`defs/learner_shards.py` builds its partitions from the same call).
_LEARNER_SHARD_KEYS = shard_keys(settings.LEARNER_SHARDS)


def log_format() -> str:
    value = os.environ.get(LOG_FORMAT_ENV, "").strip().lower()
    if not value:
        return "console" if sys.stderr.isatty() else "json"
    if value not in LOG_FORMATS:
        raise ValueError(f"{LOG_FORMAT_ENV}={os.environ[LOG_FORMAT_ENV]!r}: expected one of {', '.join(LOG_FORMATS)} "
                         "(or unset: console in a terminal, json otherwise)")
    return value


class _RunLogger(structlog.PrintLogger):
    """Prints rendered lines to stderr and holds the Dagster log that `forward_to_dagster` writes to."""

    def __init__(self, dagster_log: dg.DagsterLogManager | None = None):
        super().__init__(sys.stderr)  # the stderr of now, not of import time (tests swap it)
        self.dagster_log = dagster_log


def forward_to_dagster(logger: Any, method_name: str, event_dict: dict) -> dict:
    """Writes the event to the step's Dagster log at its level: the message, then its other fields as key=value."""
    dagster_log = getattr(logger, "dagster_log", None)
    if dagster_log is not None:
        fields = _key_values(logger, method_name, {k: v for k, v in event_dict.items() if k not in _SHOWN_BY_DAGSTER})
        getattr(dagster_log, event_dict["level"])(f"{event_dict['event']} {fields}".rstrip())
    return event_dict


def configure() -> None:
    """Sets structlog up for the format in LEARNING_PIPELINES_LOG_FORMAT (a ValueError if it names none)."""
    json_lines = log_format() == "json"
    renderer = (structlog.processors.JSONRenderer() if json_lines
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            forward_to_dagster,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *([structlog.processors.format_exc_info] if json_lines else []),
            renderer,
        ],
        logger_factory=lambda *args: _RunLogger(),
        cache_logger_on_first_use=False,
    )


def _is_learner_shards(partitions_def: dg.PartitionsDefinition | None) -> bool:
    """Whether `partitions_def` is the learner shards: static partitions with exactly their keys."""
    return (isinstance(partitions_def, dg.StaticPartitionsDefinition)
            and partitions_def.get_partition_keys() == _LEARNER_SHARD_KEYS)


def step_fields(run_id: str, job: str, asset: str, partitions_def: dg.PartitionsDefinition | None,
                partition: str | None) -> dict[str, str]:
    """What identifies a step's lines and errors; the shard is the partition of a learner-shard asset."""
    fields = {"run_id": run_id, "job": job, "asset": asset}
    if partition is not None:
        fields["partition"] = partition
        if _is_learner_shards(partitions_def):
            fields["shard"] = partition
    return fields


def dagster_logger(dagster_log: dg.DagsterLogManager, **fields: Any) -> FilteringBoundLogger:
    """A structlog logger with `fields` bound whose lines go to stderr and to `dagster_log`."""
    if not structlog.is_configured():  # a process that did not import the code location (tests, scripts)
        configure()
    return structlog.wrap_logger(_RunLogger(dagster_log)).bind(**fields)


def run_partition(tags: Mapping[str, str]) -> str | None:
    """The partition a run's tags name: its key, `<start>..<end>` for a run of a range of partitions, else None."""
    if PARTITION_NAME_TAG in tags:
        return tags[PARTITION_NAME_TAG]
    if ASSET_PARTITION_RANGE_START_TAG in tags:
        return f"{tags[ASSET_PARTITION_RANGE_START_TAG]}..{tags.get(ASSET_PARTITION_RANGE_END_TAG)}"
    return None


def asset_logger(context: dg.AssetExecutionContext) -> FilteringBoundLogger:
    """The logger of an asset's step: run id, job, asset, partition and learner shard on every line."""
    fields = step_fields(context.run.run_id, context.job_name, context.asset_key.to_user_string(),
                         context.assets_def.partitions_def, run_partition(context.run.tags))
    return dagster_logger(context.log, **fields)
