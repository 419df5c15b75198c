"""revision queues built per rollover window: each learner's queue day knows its UTC bounds; statistics and
bookkeeping per window; the app's view of every learner's current day

A learner's queue for their day D is built in the 15-minute window holding their rollover into D (their
day_start_hour in their time zone). revision_queue_user_summary gains the UTC bounds of the learner's day
(valid_from, valid_until), so the app reads "today" by user_id alone (view app_todays_revision_queue, on SQLite
too: the latest of the learner's days that has started, in case a move east made two overlap). queue_stats_daily rows are per window as well (a shard's day is built in many windows); rows written before
this migration become one window starting at their day's midnight UTC. revision_queue_windows records each
window build of each shard: its learners, cutoff, when it was ready, and whether it was late.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

TODAYS_QUEUE = """
    SELECT s.queue_date, s.user_id, t.rank, t.theme_key, th.name AS theme_name, t.due_today, t.overdue, t.mastery,
           s.due_today_total, s.overdue_total, s.revision_daily_target, s.recommended_theme_ids, s.generated_at,
           s.cutoff_at, s.valid_from, s.valid_until
    FROM revision_queue_user_summary s
    LEFT JOIN revision_queue_theme t ON t.queue_date = s.queue_date AND t.user_id = s.user_id
    LEFT JOIN themes th ON CAST(th.theme_id AS VARCHAR(64)) =
        CASE WHEN t.theme_key LIKE 'THEME::%' THEN SUBSTR(t.theme_key, 8) ELSE t.theme_key END
    WHERE s.valid_from <= {now} AND {now} < s.valid_until
      AND NOT EXISTS (SELECT 1 FROM revision_queue_user_summary later WHERE later.user_id = s.user_id
                      AND later.queue_date > s.queue_date AND later.valid_from <= {now})"""
# SQLite keeps instants as naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff': 'now' in the same form compares as text.
NOW = {"postgresql": "now()", "sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now')"}


def upgrade() -> None:
    with op.batch_alter_table('revision_queue_user_summary', schema=None) as batch_op:
        batch_op.add_column(sa.Column('valid_from', sa.DateTime(timezone=True), nullable=True,
                                      comment="when the learner's day starts (UTC): the queue is theirs from then"))
        batch_op.add_column(sa.Column('valid_until', sa.DateTime(timezone=True), nullable=True,
                                      comment="when the learner's next day starts (UTC)"))
    op.create_index('ix_revision_queue_user_summary_user_id_valid_from', 'revision_queue_user_summary',
                    ['user_id', 'valid_from'])
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:  # the app's views name other tables; the legacy rename leaves them as they are (as 0012 does)
        op.execute("PRAGMA legacy_alter_table = ON")
    with op.batch_alter_table('queue_stats_daily', schema=None) as batch_op:
        batch_op.add_column(sa.Column('window_start', sa.DateTime(timezone=True), nullable=True,
                                      comment='the rollover window these learners were built in (UTC)'))
    op.execute("UPDATE queue_stats_daily SET window_start = " + (
        "queue_date || ' 00:00:00.000000'" if sqlite else "CAST(queue_date AS timestamp) AT TIME ZONE 'UTC'"))
    with op.batch_alter_table('queue_stats_daily', schema=None) as batch_op:
        batch_op.alter_column('window_start', existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.drop_constraint('pk_queue_stats_daily', type_='primary')
        batch_op.create_primary_key('pk_queue_stats_daily', ['queue_date', 'learner_shard', 'window_start',
                                                             'theme_key'])
    if sqlite:
        op.execute("PRAGMA legacy_alter_table = OFF")
    op.create_table(
        'revision_queue_windows',
        sa.Column('window_start', sa.DateTime(timezone=True), nullable=False,
                  comment='the 15-minute window of rollovers (UTC)'),
        sa.Column('queue_date', sa.Date(), nullable=False, comment="the learners' day being built"),
        sa.Column('learner_shard', sa.String(length=16), nullable=False),
        sa.Column('n_learners', sa.Integer(), nullable=False),
        sa.Column('first_rollover_at', sa.DateTime(timezone=True), nullable=True,
                  comment="the earliest rollover into queue_date among these learners (UTC)"),
        sa.Column('day_ends_at', sa.DateTime(timezone=True), nullable=True,
                  comment="the latest end of queue_date among these learners (UTC)"),
        sa.Column('cutoff_at', sa.DateTime(timezone=True), nullable=False,
                  comment='every review stored before it is in the memory states the queues were built from'),
        sa.Column('ready_at', sa.DateTime(timezone=True), nullable=False, comment='when the queues were committed'),
        sa.Column('late', sa.Boolean(), nullable=False, comment='ready after the first rollover of the window'),
        sa.PrimaryKeyConstraint('window_start', 'queue_date', 'learner_shard', name=op.f('pk_revision_queue_windows')),
    )
    op.create_index('ix_revision_queue_windows_ready_at', 'revision_queue_windows', ['ready_at'])
    dialect = op.get_bind().dialect.name
    op.execute(f"CREATE VIEW app_todays_revision_queue AS {TODAYS_QUEUE.format(now=NOW[dialect])}")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("PRAGMA legacy_alter_table = ON")
    op.execute("DROP VIEW app_todays_revision_queue")
    op.drop_index('ix_revision_queue_windows_ready_at', table_name='revision_queue_windows')
    op.drop_table('revision_queue_windows')
    totals = sa.text("""
        SELECT queue_date, learner_shard, theme_key, SUM(n_learners) AS n_learners, SUM(due_today) AS due_today,
               SUM(overdue) AS overdue
        FROM queue_stats_daily GROUP BY queue_date, learner_shard, theme_key""").columns(sa.column('queue_date', sa.Date))
    rows = [dict(row) for row in op.get_bind().execute(totals).mappings()]
    op.execute("DELETE FROM queue_stats_daily")
    with op.batch_alter_table('queue_stats_daily', schema=None) as batch_op:
        batch_op.drop_constraint('pk_queue_stats_daily', type_='primary')
        batch_op.drop_column('window_start')
        batch_op.create_primary_key('pk_queue_stats_daily', ['queue_date', 'learner_shard', 'theme_key'])
    if rows:
        op.bulk_insert(sa.table('queue_stats_daily', sa.column('queue_date', sa.Date), sa.column('learner_shard'),
                                sa.column('theme_key'), sa.column('n_learners'), sa.column('due_today'),
                                sa.column('overdue')), rows)
    op.drop_index('ix_revision_queue_user_summary_user_id_valid_from', table_name='revision_queue_user_summary')
    with op.batch_alter_table('revision_queue_user_summary', schema=None) as batch_op:
        batch_op.drop_column('valid_until')
        batch_op.drop_column('valid_from')
    if sqlite:
        op.execute("PRAGMA legacy_alter_table = OFF")
