"""concept complexity and revision queues; card_memory_states gains the decay it was computed with

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('concept_complexity',
    sa.Column('concept_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('score', sa.Float(), nullable=False, comment='0 easy .. 1 hard, shrunk and graph-smoothed'),
    sa.Column('raw_score', sa.Float(), nullable=True, comment='before shrinkage and smoothing'),
    sa.Column('first_review_lapse_rate', sa.Float(), nullable=True),
    sa.Column('mean_difficulty', sa.Float(), nullable=True),
    sa.Column('stability_growth', sa.Float(), nullable=True, comment='mean log(1 + stability days) per review'),
    sa.Column('n_learners', sa.Integer(), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False, comment='n / (n + prior strength)'),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('concept_id', name=op.f('pk_concept_complexity'))
    )
    op.create_table('queue_stats_daily',
    sa.Column('queue_date', sa.Date(), nullable=False),
    sa.Column('theme_key', sa.String(length=64), nullable=False, comment="'*' for the global totals"),
    sa.Column('n_learners', sa.Integer(), nullable=False),
    sa.Column('due_today', sa.Integer(), nullable=False),
    sa.Column('overdue', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('queue_date', 'theme_key', name=op.f('pk_queue_stats_daily'))
    )
    op.create_table('revision_queue_theme',
    sa.Column('queue_date', sa.Date(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('theme_key', sa.String(length=64), nullable=False, comment='theme id, THEME::<id> fallback, or UNMAPPED'),
    sa.Column('due_today', sa.Integer(), nullable=False, comment="due by the end of the learner's day, overdue included"),
    sa.Column('overdue', sa.Integer(), nullable=False, comment="already due before the learner's day began"),
    sa.Column('mastery', sa.Float(), nullable=False, comment="mean retrievability of the theme's concepts at day start"),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('queue_date', 'user_id', 'theme_key', name=op.f('pk_revision_queue_theme'))
    )
    op.create_table('revision_queue_user_summary',
    sa.Column('queue_date', sa.Date(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('due_today_total', sa.Integer(), nullable=False),
    sa.Column('overdue_total', sa.Integer(), nullable=False),
    sa.Column('recommended_theme_ids', sa.Text(), nullable=False, comment='JSON list of theme keys, best first'),
    sa.Column('revision_daily_target', sa.Integer(), nullable=True),
    sa.Column('generated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('queue_date', 'user_id', name=op.f('pk_revision_queue_user_summary'))
    )
    op.create_table('tag_quality_debt_log',
    sa.Column('queue_date', sa.Date(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('concept_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('fallback_key', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('queue_date', 'user_id', 'concept_id', name=op.f('pk_tag_quality_debt_log'))
    )
    with op.batch_alter_table('card_memory_states', schema=None) as batch_op:
        batch_op.add_column(sa.Column('decay', sa.Float(), server_default='0.1542', nullable=False, comment='w20 of the weights used: retrievability = (1 + f t / S) ^ -decay'))



def downgrade() -> None:
    with op.batch_alter_table('card_memory_states', schema=None) as batch_op:
        batch_op.drop_column('decay')

    op.drop_table('tag_quality_debt_log')
    op.drop_table('revision_queue_user_summary')
    op.drop_table('revision_queue_theme')
    op.drop_table('queue_stats_daily')
    op.drop_table('concept_complexity')
