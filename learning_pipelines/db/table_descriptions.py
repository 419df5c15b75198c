"""What a warehouse table holds, column by column, as db/tables.py declares it: for the asset pages that
show where an asset writes."""

from __future__ import annotations

import dataclasses

from sqlalchemy.dialects import postgresql

from learning_pipelines.db import tables


@dataclasses.dataclass(frozen=True)
class ColumnDescription:
    name: str
    type: str  # as PostgreSQL names it
    description: str | None  # the column's comment
    nullable: bool
    primary_key: bool


def describe(table_name: str) -> list[ColumnDescription]:
    """The columns of the warehouse table `table_name`, in their order."""
    table = tables.metadata.tables[table_name]
    dialect = postgresql.dialect()
    return [ColumnDescription(column.name, column.type.compile(dialect=dialect), column.comment, bool(column.nullable),
                              column.primary_key) for column in table.columns]
