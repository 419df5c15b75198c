"""pipeline run failures, recorded by the run-failure sensor

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pipeline_run_failures',
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('job_name', sa.String(length=200), nullable=False),
    sa.Column('step_key', sa.String(length=200), nullable=True, comment='first failed step; NULL when the run failed outside steps'),
    sa.Column('error_class', sa.String(length=200), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('webhook_status', sa.String(length=64), nullable=True, comment='HTTP status of the alert post, or why none was sent'),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_pipeline_run_failures'))
    )


def downgrade() -> None:
    op.drop_table('pipeline_run_failures')
