"""What `deploy verify` checks: from the flags (--metrics-url, --code-server), else `<run dir>/stack.json` (written
by `learning-pipelines stack start`), else the environment a deployment without one sets: DAGSTER_HOME,
LEARNING_PIPELINES_DATABASE_URL, LEARNING_PIPELINES_CELERY_BROKER, LEARNING_PIPELINES_CELERY_QUEUE."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import sqlalchemy as sa

from learning_pipelines.db.engine import DATABASE_URL_ENV
from learning_pipelines.deploy.redaction import shown_url
from learning_pipelines.deploy.topology import DESCRIPTION, Stack, StackError, read_description
from learning_pipelines.errors import one_line
from learning_pipelines.settings import CELERY_BROKER_ENV, CELERY_QUEUE_ENV, DEFAULT_CELERY_BROKER


class TargetMissing(ValueError):
    """Neither stack.json nor the environment says what to verify; the message lists what is missing."""


@dataclasses.dataclass(frozen=True)
class Target:
    """What to verify, and where each value came from (stack.json, an environment variable, a flag)."""

    dagster_home: Path
    warehouse_url: str
    broker_url: str
    queue: str
    min_workers: int
    metrics_url: str
    code_server: tuple[str, int]
    run_dir: Path | None  # the stack's run directory, when stack.json was read (its logs/ are named in remedies)
    origins: Mapping[str, str]

    def lines(self) -> list[str]:
        shown = {"dagster_home": str(self.dagster_home), "warehouse": shown_url(self.warehouse_url),
                 "broker": shown_url(self.broker_url), "queue": self.queue, "workers": f">= {self.min_workers}",
                 "code_server": f"{self.code_server[0]}:{self.code_server[1]}",
                 "metrics": shown_url(self.metrics_url)}
        return [f"  {name:<13} {value}  ({self.origins.get(name, 'given')})" for name, value in shown.items()]


def resolve_target(run_dir: Path, environ: Mapping[str, str], metrics_url: str | None = None,
                   code_server: tuple[str, int] | None = None) -> Target:
    """A flag, else stack.json in `run_dir` (a shell's DAGSTER_HOME for development must not redirect the check of
    a stack), else the environment a deployment without stack.json sets; TargetMissing names what none gives."""
    description_path = run_dir / DESCRIPTION
    try:
        description = read_description(run_dir) or {}
    except (OSError, ValueError, StackError) as error:
        raise TargetMissing(f"{description_path} cannot be read ({one_line(str(error))}): restart the stack "
                            "(`learning-pipelines stack start`) to write it again") from None
    origins: dict[str, str] = {}

    def pick(name: str, env: str | None, flag, stack_value, default=None):
        if flag:
            origins[name] = "flag"
            return flag
        if stack_value not in (None, ""):
            origins[name] = DESCRIPTION
            return stack_value
        if env and environ.get(env, "").strip():
            origins[name] = f"${env}"
            return environ[env].strip()
        origins[name] = "default"
        return default

    server = description.get("code_server") or {}
    values = {
        "dagster_home": pick("dagster_home", "DAGSTER_HOME", None, description.get("dagster_home")),
        "warehouse": pick("warehouse", DATABASE_URL_ENV, None,
                          _without_hidden_password(description.get("warehouse_url"))),
        "broker": pick("broker", CELERY_BROKER_ENV, None, None, DEFAULT_CELERY_BROKER),
        "queue": pick("queue", CELERY_QUEUE_ENV, None, description.get("queue"), Stack.queue),
        "workers": pick("workers", None, None, description.get("workers"), 1),
        "code_server": pick("code_server", None, code_server,
                            (server["host"], int(server["port"])) if server.get("host") and server.get("port")
                            else None),
        "metrics": pick("metrics", None, metrics_url, description.get("metrics_url")),
    }
    how = {"dagster_home": "the Dagster instance: set DAGSTER_HOME to the directory holding its dagster.yaml",
           "warehouse": f"the warehouse: set {DATABASE_URL_ENV}",
           "code_server": "the gRPC code server: pass --code-server HOST:PORT",
           "metrics": "the metrics endpoint: pass --metrics-url URL"}
    missing = [text for name, text in how.items() if values[name] is None]
    if missing:
        raise TargetMissing("\n".join([
            f"nothing says what to verify: no {description_path} (start the stack with `make stack`, or point "
            "--run-dir at its run directory), and nothing names", *(f"  - {text}" for text in missing)]))
    return Target(dagster_home=Path(values["dagster_home"]), warehouse_url=values["warehouse"],
                  broker_url=values["broker"], queue=values["queue"], min_workers=int(values["workers"]),
                  metrics_url=values["metrics"], code_server=values["code_server"],
                  run_dir=run_dir if description else None, origins=origins)


def _without_hidden_password(url: str | None) -> str | None:
    """stack.json shows a password as ***: drop it, so libpq takes the real one from PGPASSWORD or ~/.pgpass."""
    if not url:
        return None
    parsed = sa.engine.make_url(url)
    if parsed.password != "***":
        return url
    # URL.set(password=None) keeps the password: a new URL without one.
    return sa.engine.URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database,
                                parsed.query).render_as_string(hide_password=False)
