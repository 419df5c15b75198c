"""online partitioning of an unpartitioned review_logs, step 1: shadow table + mirror trigger

Only for PostgreSQL databases whose review_logs predates partitioning; a no-op elsewhere. After
this step run the review_logs_partition_backfill job for every month, then upgrade to 0007.
See README "Moving an unpartitioned review_logs to monthly partitions".

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from alembic import op

from learning_pipelines.db import partition_migration

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    partition_migration.start(op.get_bind())


def downgrade() -> None:
    partition_migration.abandon(op.get_bind())
