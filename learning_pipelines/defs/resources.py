"""Resources shared by every asset and sensor. What a deployment sets that is an endpoint or a secret is a field
given as `dg.EnvVar` when its variable is set as the definitions load (`resources()`, at the end): the UI shows
the variable's name, never its value. Unset, the field keeps its development default (`dg.EnvVar` would refuse
an unset variable)."""

import contextlib
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from pydantic import Field

from learning_pipelines.db import bulk
from learning_pipelines.db.engine import DATABASE_URL_ENV, dagster_home, environment_database_url, get_engine
from learning_pipelines.observability.alert_webhook import ALERT_WEBHOOK_ENV, checked_webhook_url


class Warehouse(dg.ConfigurableResource):
    """The warehouse database (schema owned by Alembic). Empty `database_url` (`make demo`, `make dev`: no
    variable) means what `db.engine.resolve_database_url` decides: $LEARNING_PIPELINES_DATABASE_URL, else the
    embedded SQLite file `$DAGSTER_HOME/warehouse.db`; the CLI and Alembic call the same function, so all three
    reach the same warehouse. Where the variable is set, the code location passes it as
    `dg.EnvVar("LEARNING_PIPELINES_DATABASE_URL")`, so the UI never shows the URL or its password."""

    database_url: str = Field(
        default="",
        description=f'SQLAlchemy URL of the warehouse; a deployment sets it with dg.EnvVar("{DATABASE_URL_ENV}"). '
                    f"Empty: ${DATABASE_URL_ENV} if set, else the embedded SQLite file $DAGSTER_HOME/warehouse.db.")

    @classmethod
    def from_environment(cls) -> "Warehouse":
        """The URL as `dg.EnvVar` when $LEARNING_PIPELINES_DATABASE_URL is set now; else the embedded default."""
        if environment_database_url() is None:
            return cls()
        return cls(database_url=dg.EnvVar(DATABASE_URL_ENV))

    @property
    def engine(self) -> sa.Engine:
        return get_engine(self.database_url or None)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """One transaction: everything written inside commits together or not at all."""
        with self.engine.begin() as conn:
            yield conn

    def read_frame(self, statement: sa.Select) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return bulk.read_frame(conn, statement)


class ModelStore(dg.ConfigurableResource, ABC):
    """Where model checkpoints live: saved under a name, loaded back by the URI save returned."""

    @abstractmethod
    def save(self, name: str, payload: bytes) -> str: ...

    @abstractmethod
    def load(self, uri: str) -> bytes: ...


class ModelKeyRefused(ValueError):
    """A model store key or URI that names something outside the store's root."""


class LocalModelStore(ModelStore):
    """Checkpoints as files under one root; empty `base_dir` means $DAGSTER_HOME/models (else
    dagster_home/models). Keys and the `file://` URIs `save` returns resolve strictly inside the root:
    whoever can write a row of ncf_models cannot point the store at any other file."""

    base_dir: str = Field(default="", description="directory for checkpoints; empty: $DAGSTER_HOME/models")

    def _root(self) -> Path:
        return (Path(self.base_dir) if self.base_dir else dagster_home() / "models").resolve()

    def _path(self, key: str) -> Path:
        """The file `key` names: a path relative to the root, or a `file://` URI or absolute path inside it.
        Refuses anything else, `..` components, and symlinks that lead out of the root."""
        root = self._root()

        def refuse(why: str) -> ModelKeyRefused:
            return ModelKeyRefused(f"model store key {key!r} refused: {why} (the store reads and writes only "
                                   f"inside {root})")

        parsed = urllib.parse.urlsplit(key)
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost") or parsed.query or parsed.fragment:
                raise refuse("it is not a local file URI")
            name = urllib.parse.unquote(parsed.path)
        elif parsed.scheme:
            raise refuse(f"{parsed.scheme}: is not a local file")
        else:
            name = key
        path = Path(name)
        if not path.parts:
            raise refuse("it names no file")
        if ".." in path.parts:
            raise refuse("it has a '..' component")
        if path.is_absolute():
            if not path.is_relative_to(root):
                raise refuse("it is an absolute path outside the store")
            path = path.relative_to(root)
        resolved = (root / path).resolve()
        if resolved == root or not resolved.is_relative_to(root):
            raise refuse("a symlink leads out of the store")
        return resolved

    def save(self, name: str, payload: bytes) -> str:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(path.suffix + ".partial")
        partial.write_bytes(payload)
        partial.replace(path)  # a reader never sees half a checkpoint
        return path.as_uri()

    def load(self, uri: str) -> bytes:
        return self._path(uri).read_bytes()


class AlertWebhook(dg.ConfigurableResource):
    """Where the run-failure sensor (`defs/alerts.py`) posts every failed run; empty `url`: nowhere (failures
    are still recorded in the warehouse). Set as `dg.EnvVar("LEARNING_PIPELINES_ALERT_WEBHOOK")` once the value
    is checked as the definitions load: a URL that is not http(s) naming a host stops the code location from
    loading, with the variable named (never the URL, which may carry a token), not at the first failure."""

    url: str = Field(default="", description=f'http(s) URL failed runs are posted to; a deployment sets it with '
                                             f'dg.EnvVar("{ALERT_WEBHOOK_ENV}"). Empty: no webhook.')

    @classmethod
    def from_environment(cls) -> "AlertWebhook":
        """The URL as `dg.EnvVar` when $LEARNING_PIPELINES_ALERT_WEBHOOK is set now (a bad one: ValueError)."""
        env_var = dg.EnvVar(ALERT_WEBHOOK_ENV)
        if checked_webhook_url(env_var.get_value()) is None:
            return cls()
        return cls(url=env_var)


@dg.definitions
def resources() -> dg.Definitions:
    """Built when the code location loads: the deployment's settings as `dg.EnvVar`s, or the development defaults."""
    return dg.Definitions(resources={"warehouse": Warehouse.from_environment(), "model_store": LocalModelStore(),
                                     "alert_webhook": AlertWebhook.from_environment()})
