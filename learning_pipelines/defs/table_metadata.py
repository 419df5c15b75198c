"""Definition metadata that names the warehouse table an asset writes and shows its columns in the UI."""

import dagster as dg

from learning_pipelines.db.table_descriptions import describe


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


def preview(frame, columns: list[str], rows: int = 5) -> dg.MetadataValue:
    """The first `rows` rows of what was written (`columns` of pandas DataFrame `frame`) as a markdown table."""
    if frame is None or len(frame) == 0:
        return dg.MetadataValue.md("nothing written")
    return dg.MetadataValue.md(frame.head(rows)[columns].to_markdown(index=False, floatfmt=".3f"))
