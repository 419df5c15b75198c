"""Resources shared by every asset."""

import contextlib
import io
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from pydantic import Field

from learning_pipelines.db import bulk
from learning_pipelines.db.engine import DATABASE_URL_ENV, dagster_home, get_engine


class Warehouse(dg.ConfigurableResource):
    """The warehouse database (schema owned by Alembic).

    Production sets `database_url=dg.EnvVar("LEARNING_PIPELINES_DATABASE_URL")`, so the URL (and its
    password) is read where the run happens and never shown in the UI. Empty `database_url` (the
    default, for development and tests) means ${LEARNING_PIPELINES_DATABASE_URL}, else the embedded
    SQLite file `$DAGSTER_HOME/warehouse.db`.
    """

    database_url: str = Field(
        default="",
        description=f'SQLAlchemy URL of the warehouse; production sets it with dg.EnvVar("{DATABASE_URL_ENV}"). '
                    f"Empty: ${DATABASE_URL_ENV} if set, else the embedded SQLite file $DAGSTER_HOME/warehouse.db.")

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


class LocalModelStore(ModelStore):
    """Checkpoints as files; empty `base_dir` means $DAGSTER_HOME/models (else dagster_home/models)."""

    base_dir: str = Field(default="", description="directory for checkpoints; empty: $DAGSTER_HOME/models")

    def _root(self) -> Path:
        return Path(self.base_dir) if self.base_dir else dagster_home() / "models"

    def save(self, name: str, payload: bytes) -> str:
        path = self._root() / name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(path.suffix + ".partial")
        partial.write_bytes(payload)
        partial.replace(path)  # a reader never sees half a checkpoint
        return path.resolve().as_uri()

    def load(self, uri: str) -> bytes:
        return Path(uri.removeprefix("file://")).read_bytes()


def to_bytes(save) -> bytes:
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"warehouse": Warehouse(), "model_store": LocalModelStore()})
