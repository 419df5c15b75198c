"""What every check of `deploy verify` is given and returns: the session they share (the target, the passwords to
keep out of what is printed, and what earlier checks found) and the outcome of one check."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import sqlalchemy as sa

from learning_pipelines.deploy.redaction import Redactor
from learning_pipelines.deploy.targets import Target

# How long one probe waits for a server before calling it unreachable.
CONNECT_TIMEOUT_S = 5


@dataclasses.dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str
    remedy: str | None = None  # None: the check's usual remedy


class Session:
    """What the checks share: the target, the secrets to keep out of error texts, and what earlier checks found
    (a later check that needs the warehouse or the instance says so instead of failing the same way again)."""

    def __init__(self, target: Target):
        self.target = target
        self.redactor = Redactor((target.warehouse_url, target.broker_url, target.metrics_url))
        # Each stays as written here when its check stopped on an error of its own.
        self.warehouse: sa.Engine | None = None
        self.warehouse_problem: str | None = "the warehouse check failed"
        self.instance = None
        self.instance_problem: str | None = "the dagster_storage check failed"

    def reason(self, error: BaseException) -> str:
        return self.redactor.reason(error)

    def scrub(self, text: str) -> str:
        return self.redactor.scrub(text)

    def logs(self, pattern: str) -> str:
        """Where the stack's process(es) write their log, when this is a stack (`pattern` may hold a *)."""
        run_dir = self.target.run_dir
        if not run_dir:
            return ""
        return f"; {'their logs' if '*' in pattern else 'its log'}: {run_dir / 'logs' / pattern}"

    def close(self) -> None:
        if self.warehouse is not None:
            self.warehouse.dispose()
        if self.instance is not None:
            self.instance.dispose()


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Session], Outcome]
    remedy: str  # what to do when it fails, unless its outcome says more precisely


def probe_engine(url: str) -> sa.Engine:
    """An engine that gives up on an unreachable server after CONNECT_TIMEOUT_S and keeps no connection open."""
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith("postgresql") else {}
    return sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=connect_args, hide_parameters=True)


def first_line(text: str | None) -> str:
    """The first line of a Dagster error message (what follows is often a stack trace)."""
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else ""
