"""learners found by calendar: an index on users (timezone, day_start_hour)

A rollover window's queue build reads only the learners whose day starts in that window (a few calendars of
every learner), not every learner of its shard: 96 windows a day each reading every learner would read `users`
96 times over.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_users_timezone_day_start_hour', 'users', ['timezone', 'day_start_hour'])


def downgrade() -> None:
    op.drop_index('ix_users_timezone_day_start_hour', table_name='users')
