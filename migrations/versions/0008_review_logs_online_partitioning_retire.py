"""online partitioning, step 3: drop the old unpartitioned review_logs

The migration's record (review_logs_partition_migration, review_logs_backfill_progress) stays:
it is what the downgrade needs to rebuild the old table from review_logs (writes wait while it
copies).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from alembic import op

from learning_pipelines.db import partition_migration

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    partition_migration.retire(op.get_bind())


def downgrade() -> None:
    partition_migration.unretire(op.get_bind())
