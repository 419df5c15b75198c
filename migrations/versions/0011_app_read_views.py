"""the app's read contract: views app_revision_queue, app_due_concepts, app_recommendations

What the platform's app reads, as views whose names and columns stay stable while the tables behind them
change (README, "Reading from the app"). Each is one statement over primary keys, so a learner's read is a
primary-key lookup and sees a shard's rewrite of the day either entirely or not at all.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

VIEWS = {
    "app_revision_queue": """
        SELECT s.queue_date, s.user_id, t.rank, t.theme_key, th.name AS theme_name, t.due_today, t.overdue,
               t.mastery, s.due_today_total, s.overdue_total, s.revision_daily_target, s.recommended_theme_ids,
               s.generated_at, s.cutoff_at
        FROM revision_queue_user_summary s
        LEFT JOIN revision_queue_theme t ON t.queue_date = s.queue_date AND t.user_id = s.user_id
        LEFT JOIN themes th ON CAST(th.theme_id AS VARCHAR(64)) =
            CASE WHEN t.theme_key LIKE 'THEME::%' THEN SUBSTR(t.theme_key, 8) ELSE t.theme_key END""",
    "app_due_concepts": """
        SELECT s.user_id, s.concept_id, c.name AS concept_name, s.due_at, s.last_review_at, s.stability_days,
               s.difficulty
        FROM card_memory_states s JOIN concepts c ON c.concept_id = s.concept_id""",
    "app_recommendations": """
        SELECT r.user_id, r.rank, r.resource_id, res.title, res.kind, r.score, r.strategy, r.model_id,
               r.generated_at
        FROM user_recommendations r JOIN resources res ON res.resource_id = r.resource_id""",
}


def upgrade() -> None:
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW {name}")
