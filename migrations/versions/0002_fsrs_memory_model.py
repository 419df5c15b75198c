"""fsrs memory model tables: per-learner and global weights, card memory states, daily evaluation

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('card_memory_states',
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('concept_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('stability_days', sa.Float(), nullable=False),
    sa.Column('difficulty', sa.Float(), nullable=False, comment='1 easy .. 10 hard'),
    sa.Column('n_reviews', sa.Integer(), nullable=False),
    sa.Column('last_review_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False, comment="when recall falls to the learner's retention target"),
    sa.Column('weights_source', sa.String(length=16), nullable=False, comment='own or global'),
    sa.PrimaryKeyConstraint('user_id', 'concept_id', name=op.f('pk_card_memory_states'))
    )
    op.create_index(op.f('ix_card_memory_states_due_at'), 'card_memory_states', ['due_at'], unique=False)
    op.create_table('eval_metrics_daily',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('ab_group', sa.String(length=32), nullable=False),
    sa.Column('n_reviews', sa.Integer(), nullable=False),
    sa.Column('n_learners', sa.Integer(), nullable=False),
    sa.Column('logloss', sa.Float(), nullable=True),
    sa.Column('brier', sa.Float(), nullable=True),
    sa.Column('ece', sa.Float(), nullable=True),
    sa.Column('rmse_bins', sa.Float(), nullable=True),
    sa.Column('mean_predicted', sa.Float(), nullable=True),
    sa.Column('mean_recalled', sa.Float(), nullable=True),
    sa.Column('evaluated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('day', 'ab_group', name=op.f('pk_eval_metrics_daily'))
    )
    op.create_table('fsrs_global_params',
    sa.Column('version', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('weights', sa.Text(), nullable=False, comment='21 FSRS-6 weights, JSON'),
    sa.Column('n_reviews', sa.Integer(), nullable=False),
    sa.Column('n_learners', sa.Integer(), nullable=False),
    sa.Column('logloss', sa.Float(), nullable=False, comment='training logloss on the pooled reviews'),
    sa.Column('trained_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_fsrs_global_params'))
    )
    op.create_table('srs_user_params',
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('ab_group', sa.String(length=32), nullable=False, comment='BASELINE_GLOBAL or TUNED_ELIGIBLE'),
    sa.Column('weights', sa.Text(), nullable=True, comment='21 FSRS-6 weights, JSON; NULL: the learner uses the global ones'),
    sa.Column('n_reviews', sa.Integer(), nullable=False),
    sa.Column('trained_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('training_cooldown_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('logloss_before', sa.Float(), nullable=True, comment='held-out logloss with the global weights'),
    sa.Column('logloss_after', sa.Float(), nullable=True, comment="held-out logloss with the learner's own weights"),
    sa.Column('n_holdout_reviews', sa.Integer(), nullable=True),
    sa.CheckConstraint("ab_group IN ('BASELINE_GLOBAL', 'TUNED_ELIGIBLE')", name=op.f('ck_srs_user_params_ab_group')),
    sa.ForeignKeyConstraint(['user_id'], ['users.user_id'], name=op.f('fk_srs_user_params_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_srs_user_params'))
    )


def downgrade() -> None:
    op.drop_table('srs_user_params')
    op.drop_table('fsrs_global_params')
    op.drop_table('eval_metrics_daily')
    op.drop_index(op.f('ix_card_memory_states_due_at'), table_name='card_memory_states')
    op.drop_table('card_memory_states')
