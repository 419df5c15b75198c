"""What the UI shows of an asset: the warehouse table it writes with its columns, and what a run reports."""

import dagster as dg

from learning_pipelines.db.table_descriptions import describe
from learning_pipelines.flows.summaries import Instant, Markdown


def written_table(table_name: str, *also: str) -> dict:
    """`dagster/table_name` and `dagster/column_schema` of the table `table_name`; `also`: other tables the
    asset writes, listed by name."""
    columns = [dg.TableColumn(c.name, c.type, description=c.description,
                              constraints=dg.TableColumnConstraints(nullable=c.nullable,
                                                                    other=["primary key"] if c.primary_key else []))
               for c in describe(table_name)]
    metadata = {"dagster/table_name": table_name, "dagster/column_schema": dg.TableSchema(columns=columns)}
    if also:
        metadata["also_writes"] = ", ".join(also)
    return metadata


def shown(metadata: dict) -> dict:
    """A recipe's summary metadata (flows/summaries.py) as Dagster metadata: markdown tables and instants as such,
    floats as floats (the UI plots them across materializations), lists and dicts as JSON."""
    return {key: _shown(value) for key, value in metadata.items()}


def _shown(value):
    if isinstance(value, Markdown):
        return dg.MetadataValue.md(value.text)
    if isinstance(value, Instant):
        return dg.MetadataValue.timestamp(value.at)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    if isinstance(value, (dict, list)):
        return dg.MetadataValue.json(value)
    return value
