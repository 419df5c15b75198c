"""a learner whose time zone or day start changes has every card replayed by the next card_memory_states run

Their past learner-days move (a review's day, and so its interval in days, depends on the calendar), so their
states are computed again from their history, as for a card whose history changed: a trigger on users asks for it
in card_memory_state_replays. After 0014, which rebuilds users on SQLite (a rebuild drops a table's triggers).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

# A learner whose time zone or day start changes has their past learner-days move: every card of theirs is replayed
# by the next card_memory_states run (card_memory_state_replays), as if its history had changed.
CALENDAR_CHANGED = {
    "postgresql": ["""
        CREATE FUNCTION replay_learner_after_calendar_change() RETURNS trigger AS $$
        BEGIN
            INSERT INTO card_memory_state_replays (user_id, concept_id, requested_at)
            SELECT user_id, concept_id, now() FROM card_memory_states WHERE user_id = NEW.user_id
            ON CONFLICT (user_id, concept_id) DO UPDATE SET requested_at = EXCLUDED.requested_at;
            RETURN NULL;
        END $$ LANGUAGE plpgsql""", """
        CREATE TRIGGER replay_learner_after_calendar_change AFTER UPDATE OF timezone, day_start_hour ON users
        FOR EACH ROW WHEN (OLD.timezone IS DISTINCT FROM NEW.timezone
                           OR OLD.day_start_hour IS DISTINCT FROM NEW.day_start_hour)
        EXECUTE FUNCTION replay_learner_after_calendar_change()"""],
    "sqlite": ["""
        CREATE TRIGGER replay_learner_after_calendar_change AFTER UPDATE OF timezone, day_start_hour ON users
        WHEN OLD.timezone IS NOT NEW.timezone OR OLD.day_start_hour IS NOT NEW.day_start_hour
        BEGIN
            INSERT OR REPLACE INTO card_memory_state_replays (user_id, concept_id, requested_at)
            SELECT user_id, concept_id, strftime('%Y-%m-%d %H:%M:%f', 'now') FROM card_memory_states
            WHERE user_id = NEW.user_id;
        END"""],
}
DROP_CALENDAR_CHANGED = {
    "postgresql": ["DROP TRIGGER replay_learner_after_calendar_change ON users",
                   "DROP FUNCTION replay_learner_after_calendar_change()"],
    "sqlite": ["DROP TRIGGER replay_learner_after_calendar_change"],
}


def upgrade() -> None:
    for statement in CALENDAR_CHANGED[op.get_bind().dialect.name]:
        op.execute(statement)


def downgrade() -> None:
    for statement in DROP_CALENDAR_CHANGED[op.get_bind().dialect.name]:
        op.execute(statement)
