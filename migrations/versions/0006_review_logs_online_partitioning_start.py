"""online partitioning of an unpartitioned review_logs, step 1: shadow table + mirror trigger

Only for PostgreSQL databases whose review_logs predates partitioning; a no-op elsewhere. After
this step run the review_logs_partition_backfill job for every month, then upgrade to 0007.
See README "Moving an unpartitioned review_logs to monthly partitions".

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    from frozen import online_partitioning_0006  # migrations/frozen/, importable once env.py ran

    online_partitioning_0006.start(op.get_bind())


def downgrade() -> None:
    from frozen import online_partitioning_0006

    online_partitioning_0006.abandon(op.get_bind())
