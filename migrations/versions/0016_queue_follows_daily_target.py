"""the queue follows the learner's daily target: how much of each theme is in today's target, today's concepts in
order, and the app's view of them

A learner with a revision_daily_target works through at most that many of their due concepts a day: overdue ones
first, by recall lost (their retention target minus the card's recall probability at the start of their day), then
the others (README, "Reading from the app"). revision_queue_theme gains due_in_target (empty on rows written
before); revision_queue_target_concept holds those concepts in order, one row each, for learners with a target.
The app's queue views gain due_in_target (dropped and created again: a column is only ever added, at the end);
app_todays_target_concepts lists a learner's concepts of their current day by user_id alone, selecting the day as
app_todays_revision_queue does (migration 0013).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-11
"""

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

THEME_NAME = """
    LEFT JOIN themes th ON CAST(th.theme_id AS VARCHAR(64)) =
        CASE WHEN t.theme_key LIKE 'THEME::%' THEN SUBSTR(t.theme_key, 8) ELSE t.theme_key END"""
TODAY = """
    WHERE s.valid_from <= {now} AND {now} < s.valid_until
      AND NOT EXISTS (SELECT 1 FROM revision_queue_user_summary later WHERE later.user_id = s.user_id
                      AND later.queue_date > s.queue_date AND later.valid_from <= {now})"""
QUEUE_COLUMNS = """s.queue_date, s.user_id, t.rank, t.theme_key, th.name AS theme_name, t.due_today, t.overdue,
           t.mastery, s.due_today_total, s.overdue_total, s.revision_daily_target, s.recommended_theme_ids,
           s.generated_at, s.cutoff_at"""
QUEUE_FROM = """
    FROM revision_queue_user_summary s
    LEFT JOIN revision_queue_theme t ON t.queue_date = s.queue_date AND t.user_id = s.user_id""" + THEME_NAME

# As migrations 0011 and 0013 created them, then with due_in_target at the end.
BEFORE = {
    "app_revision_queue": f"SELECT {QUEUE_COLUMNS} {QUEUE_FROM}",
    "app_todays_revision_queue": f"SELECT {QUEUE_COLUMNS}, s.valid_from, s.valid_until {QUEUE_FROM} {TODAY}",
}
AFTER = {
    "app_revision_queue": f"SELECT {QUEUE_COLUMNS}, t.due_in_target {QUEUE_FROM}",
    "app_todays_revision_queue":
        f"SELECT {QUEUE_COLUMNS}, s.valid_from, s.valid_until, t.due_in_target {QUEUE_FROM} {TODAY}",
    "app_todays_target_concepts": f"""
        SELECT s.queue_date, s.user_id, c.position, c.concept_id, k.name AS concept_name, c.theme_key, c.overdue,
               c.recall_lost, s.valid_from, s.valid_until
        FROM revision_queue_user_summary s
        JOIN revision_queue_target_concept c ON c.queue_date = s.queue_date AND c.user_id = s.user_id
        LEFT JOIN concepts k ON k.concept_id = c.concept_id {TODAY}""",
}
# SQLite keeps instants as naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff': 'now' in the same form compares as text.
NOW = {"postgresql": "now()", "sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now')"}


def _create_views(views: dict[str, str]) -> None:
    now = NOW[op.get_bind().dialect.name]
    for name, query in views.items():
        op.execute(f"CREATE VIEW {name} AS {query.format(now=now)}")


def upgrade() -> None:
    for name in BEFORE:
        op.execute(f"DROP VIEW {name}")
    op.add_column('revision_queue_theme', sa.Column(
        'due_in_target', sa.Integer(), nullable=True,
        comment="of due_today, those among the learner's concepts of the day (all without a daily target); "
                "empty for queues built before migration 0016"))
    op.create_table(
        'revision_queue_target_concept',
        sa.Column('queue_date', sa.Date(), nullable=False),
        sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('position', sa.Integer(), autoincrement=False, nullable=False, comment='1 first'),
        sa.Column('concept_id', sa.BigInteger(), nullable=False),
        sa.Column('theme_key', sa.String(length=64), nullable=False,
                  comment='the theme it counts in (revision_queue_theme)'),
        sa.Column('overdue', sa.Boolean(), nullable=False, comment="already due before the learner's day began"),
        sa.Column('recall_lost', sa.Float(), nullable=False,
                  comment="the learner's retention target minus the card's recall probability at the start of "
                          "their day"),
        sa.PrimaryKeyConstraint('queue_date', 'user_id', 'position', name=op.f('pk_revision_queue_target_concept')),
    )
    _create_views(AFTER)


def downgrade() -> None:
    for name in AFTER:
        op.execute(f"DROP VIEW {name}")
    op.drop_table('revision_queue_target_concept')
    with op.batch_alter_table('revision_queue_theme', schema=None) as batch_op:
        batch_op.drop_column('due_in_target')
    _create_views(BEFORE)
