"""Resources shared by every asset."""

import contextlib
from collections.abc import Iterator

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from pydantic import Field

from learning_pipelines.db import bulk
from learning_pipelines.db.engine import DATABASE_URL_ENV, get_engine


class Warehouse(dg.ConfigurableResource):
    """The warehouse database (schema owned by Alembic).

    Empty `database_url` means ${LEARNING_PIPELINES_DATABASE_URL}, else the embedded SQLite file
    `$DAGSTER_HOME/warehouse.db`.
    """

    database_url: str = Field(default="", description=f"SQLAlchemy URL; empty: ${DATABASE_URL_ENV} or embedded SQLite")

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


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"warehouse": Warehouse()})
