"""online partitioning, step 3: drop the old unpartitioned review_logs

The migration's record (review_logs_partition_migration, review_logs_backfill_progress) stays:
it is what the downgrade needs to rebuild the old table from review_logs (writes wait while it
copies).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    from frozen import online_partitioning_0006  # migrations/frozen/, importable once env.py ran

    online_partitioning_0006.retire(op.get_bind())


def downgrade() -> None:
    from frozen import online_partitioning_0006

    online_partitioning_0006.unretire(op.get_bind())
