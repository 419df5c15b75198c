"""review_logs' month partitions belong to the review_logs the search path names, not to a namesake elsewhere."""

import datetime as dt

import sqlalchemy as sa

from learning_pipelines.db import migrate, partitions, scratch_schema
from learning_pipelines.db.engine import get_engine

MONTH = dt.date(2031, 1, 1)
PARTITION_IN_SCHEMA = sa.text("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                              "WHERE n.nspname = :schema AND c.relname = 'review_logs_y2031m01'")


def test_a_schema_sees_its_own_month_partitions_not_those_of_public(empty_postgres_url):
    migrate.upgrade(empty_postgres_url)
    public = get_engine(empty_postgres_url)
    partitions.create_month_partitions(public, [MONTH])
    schema = scratch_schema.create_schema(public)
    url = scratch_schema.schema_url(empty_postgres_url, schema)
    try:
        migrate.upgrade(url)
        with get_engine(url).connect() as conn:
            assert MONTH not in partitions.existing_month_partitions(conn)
        assert partitions.create_month_partitions(get_engine(url), [MONTH]) == [MONTH]
        with get_engine(url).connect() as conn:
            assert MONTH in partitions.existing_month_partitions(conn)
            assert conn.execute(PARTITION_IN_SCHEMA, {"schema": schema}).scalar_one() == 1
    finally:
        get_engine(url).dispose()
        scratch_schema.drop_schema(public, schema)
