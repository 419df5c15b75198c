"""NCF: model registry, user and item embeddings, hybrid recommendations

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ncf_item_embeddings',
    sa.Column('resource_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('model_id', sa.BigInteger(), nullable=False),
    sa.Column('embedding', sa.Text(), nullable=False, comment='JSON: GMF factors then MLP embedding'),
    sa.PrimaryKeyConstraint('resource_id', name=op.f('pk_ncf_item_embeddings'))
    )
    op.create_table('ncf_models',
    sa.Column('model_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('trained_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('checkpoint_uri', sa.String(length=500), nullable=False),
    sa.Column('n_interactions', sa.Integer(), nullable=False, comment='interactions in the warehouse when trained'),
    sa.Column('n_users', sa.Integer(), nullable=False),
    sa.Column('n_items', sa.Integer(), nullable=False),
    sa.Column('hr_at_10', sa.Float(), nullable=False),
    sa.Column('ndcg_at_10', sa.Float(), nullable=False),
    sa.Column('popularity_hr_at_10', sa.Float(), nullable=False),
    sa.Column('epochs', sa.Integer(), nullable=False),
    sa.Column('train_seconds', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('model_id', name=op.f('pk_ncf_models'))
    )
    op.create_table('ncf_user_embeddings',
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('model_id', sa.BigInteger(), nullable=False),
    sa.Column('embedding', sa.Text(), nullable=False, comment='JSON: GMF factors then MLP embedding'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_ncf_user_embeddings'))
    )
    op.create_table('user_recommendations',
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('rank', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('resource_id', sa.BigInteger(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('strategy', sa.String(length=32), nullable=False, comment='hybrid, or content_graph when NCF cannot serve'),
    sa.Column('ncf_score', sa.Float(), nullable=True),
    sa.Column('content_score', sa.Float(), nullable=False),
    sa.Column('graph_score', sa.Float(), nullable=False),
    sa.Column('model_id', sa.BigInteger(), nullable=True),
    sa.Column('generated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_id', 'rank', name=op.f('pk_user_recommendations'))
    )


def downgrade() -> None:
    op.drop_table('user_recommendations')
    op.drop_table('ncf_user_embeddings')
    op.drop_table('ncf_models')
    op.drop_table('ncf_item_embeddings')
