"""Error tracking with Sentry, only where SENTRY_DSN is set: nothing is initialised or sent without it.

A failed asset step sends one event, from a failure hook on every asset, tagged with the fields of its log
lines (run id, job, asset, partition, learner shard). Log lines never become events, breadcrumbs or Sentry logs:
Dagster logs each failure at error level more than once, with the SQL parameters (learner rows) in the message.
The SDK reads SENTRY_ENVIRONMENT and SENTRY_RELEASE itself.
"""

from __future__ import annotations

import os
import re
import sys

import dagster as dg
import sentry_sdk
import sentry_sdk.consts
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.transport import Transport

from learning_pipelines.observability.structured_logs import run_partition, step_fields

DSN_ENV = "SENTRY_DSN"
# A driver's DETAIL lines and SQLAlchemy's statement and parameters quote learners' rows.
_ROW_VALUES = re.compile(r"\s*(?:^DETAIL:|\[SQL: |\[parameters: ).*", re.DOTALL | re.MULTILINE)


def _without_row_values(event: dict, hint: dict) -> dict:
    for exception in event.get("exception", {}).get("values", []):
        if exception.get("value"):
            exception["value"] = _ROW_VALUES.sub("", exception["value"])
    return event


def _no_personal_data_options() -> dict:
    """Options that keep learners' data and log lines out of Sentry, for sentry-sdk 2.x and 3.x alike.

    2.x: frame variables are off with `include_local_variables`, user data is off by default. 3.x removed that
    option and collects frame variables, user data and query data by default (`data_collection`), and its
    LoggingIntegration sends log lines as breadcrumbs and Sentry logs even with `level=None`: so the logging
    integration is disabled outright, breadcrumbs are capped at none and any Sentry log is dropped.
    """
    options: dict = {
        "disabled_integrations": [LoggingIntegration],
        "auto_enabling_integrations": False,  # e.g. SQLAlchemy's, which records statements as breadcrumbs
        "max_breadcrumbs": 0,
        "before_breadcrumb": lambda crumb, hint: None,
        "before_send": _without_row_values,
    }
    if "data_collection" in sentry_sdk.consts.DEFAULT_OPTIONS:  # 3.x
        options["data_collection"] = {"user_info": False, "stack_frame_variables": False,
                                      "database_query_data": False, "http_bodies": [], "queues": False}
        options["before_send_log"] = lambda log, hint: None
    else:  # 2.x
        options["include_local_variables"] = False
    return options


def init(transport: Transport | None = None) -> bool:
    """Starts Sentry when SENTRY_DSN is set; returns whether it is on. `transport` replaces HTTP (tests).

    A setting Sentry refuses (a malformed DSN, a SENTRY_* variable it cannot read, an option this SDK version
    does not know) is one warning line on stderr, and the caller runs on without error tracking.
    """
    dsn = os.environ.get(DSN_ENV, "").strip()
    if not dsn:
        return False
    if sentry_sdk.get_client().is_active():
        return True
    try:
        sentry_sdk.init(dsn=dsn, transport=transport, **_no_personal_data_options())
    except Exception as error:  # noqa: BLE001 - any refusal of the SDK's is reported the same way
        reason = f"{type(error).__name__}: {error}".replace(dsn, "<SENTRY_DSN>")
        print(f"warning: error tracking is off, Sentry refused its settings ({reason})", file=sys.stderr)
        return False
    return True


def capture_failures(assets_def: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """The asset with a failure hook that sends its step's exception to Sentry (nothing while Sentry is off)."""
    asset = ", ".join(sorted(key.to_user_string() for key in assets_def.keys))

    @dg.failure_hook(name=f"sentry_{assets_def.node_def.name}")
    def send_to_sentry(context: dg.HookContext) -> None:
        if not sentry_sdk.get_client().is_active():
            return
        run = context.instance.get_run_by_id(context.run_id)
        partition = run_partition(run.tags) if run else None
        with sentry_sdk.new_scope() as scope:
            scope.set_tags(step_fields(context.run_id, context.job_name, asset, assets_def.partitions_def, partition))
            scope.capture_exception(context.op_exception)
        sentry_sdk.flush()  # a step's own process (multiprocess executor) may end without running atexit

    return assets_def.with_hooks({send_to_sentry})


def with_failure_capture(defs: dg.Definitions) -> dg.Definitions:
    """`defs` with `capture_failures` on every asset it materializes (whichever job or sensor runs it)."""
    # A module that imports an asset lists it again; the same object is one asset, its hooked copies would be two.
    unique = {id(a): a for a in defs.assets or []}.values()
    assets = [capture_failures(a) if isinstance(a, dg.AssetsDefinition) and a.is_executable
              and not isinstance(a, dg.AssetChecksDefinition) else a for a in unique]
    # Dagster's own copy-with-changes (as its map_asset_specs does): every other field, present or future, is kept.
    from dagster._record import replace

    return replace(defs, assets=assets)
