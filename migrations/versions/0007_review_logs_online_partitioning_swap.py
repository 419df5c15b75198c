"""online partitioning, step 2: swap the partitioned table in (refuses before every month is verified)

The old table is renamed review_logs_unpartitioned and kept exact by a reverse mirror trigger,
so the downgrade swaps back without losing a write.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    from frozen import online_partitioning_0006  # migrations/frozen/, importable once env.py ran

    online_partitioning_0006.swap(op.get_bind())


def downgrade() -> None:
    from frozen import online_partitioning_0006

    online_partitioning_0006.unswap(op.get_bind())
