"""queue_stats_daily per learner shard

Each learner shard of a day's revision queues writes its own statistics rows, so the shards of a day
run side by side without touching each other's rows; a day's totals are the sum over its shards.
Rows written before sharding become the one shard of everything ('00-of-01').

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('queue_stats_daily', schema=None) as batch_op:
        batch_op.add_column(sa.Column('learner_shard', sa.String(length=16), server_default='00-of-01', nullable=False,
                                      comment='the learner shard these learners belong to, like 03-of-16'))
        batch_op.drop_constraint('pk_queue_stats_daily', type_='primary')
        batch_op.create_primary_key('pk_queue_stats_daily', ['queue_date', 'learner_shard', 'theme_key'])


def downgrade() -> None:
    totals = sa.text("""
        SELECT queue_date, theme_key, SUM(n_learners) AS n_learners, SUM(due_today) AS due_today,
               SUM(overdue) AS overdue
        FROM queue_stats_daily GROUP BY queue_date, theme_key""").columns(sa.column('queue_date', sa.Date))
    rows = [dict(row) for row in op.get_bind().execute(totals).mappings()]
    op.execute("DELETE FROM queue_stats_daily")
    with op.batch_alter_table('queue_stats_daily', schema=None) as batch_op:
        batch_op.drop_constraint('pk_queue_stats_daily', type_='primary')
        batch_op.drop_column('learner_shard')
        batch_op.create_primary_key('pk_queue_stats_daily', ['queue_date', 'theme_key'])
    if rows:
        op.bulk_insert(sa.table('queue_stats_daily', sa.column('queue_date', sa.Date), sa.column('theme_key'),
                                sa.column('n_learners'), sa.column('due_today'), sa.column('overdue')), rows)
