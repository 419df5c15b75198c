"""incremental memory states: review_logs.ingest_seq, card_memory_state_progress, queue cutoff

review_logs gains `ingest_seq`, the order in which reviews reached the warehouse, filled by the
database itself so writes that bypass the importers are numbered too: a sequence default on
PostgreSQL; on SQLite the one-row table review_logs_ingest_counter hands out the numbers (never the
same twice, even after the highest review was deleted), through an AFTER INSERT trigger for rows
inserted without one (the importers take their numbers from it themselves, under the write lock).
Rows stored before this migration keep NULL: the first card_memory_states run after it replays
every card anyway. card_memory_state_replays lists cards whose history changed otherwise.

On PostgreSQL the column is added without a default first and the default set afterwards, so the
existing rows are not rewritten; the index is built on every partition (writes wait for it).
On SQLite, a later batch migration that rebuilds review_logs must create the trigger again.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

SQLITE_COUNTER = """
CREATE TABLE review_logs_ingest_counter (
    counter_id SMALLINT NOT NULL PRIMARY KEY CHECK (counter_id = 1),
    last_seq BIGINT NOT NULL
)
"""
SQLITE_TRIGGER = """
CREATE TRIGGER review_logs_ingest_seq AFTER INSERT ON review_logs WHEN NEW.ingest_seq IS NULL
BEGIN
    UPDATE review_logs_ingest_counter SET last_seq = last_seq + 1;
    UPDATE review_logs SET ingest_seq = (SELECT last_seq FROM review_logs_ingest_counter)
    WHERE rowid = NEW.rowid;
END
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column('review_logs', sa.Column(
        'ingest_seq', sa.BigInteger(), nullable=True,
        comment='order in which reviews reached the warehouse; newer reviews have larger numbers'))
    if postgres:
        op.execute("CREATE SEQUENCE review_logs_ingest_seq AS bigint OWNED BY review_logs.ingest_seq")
        op.execute("ALTER TABLE review_logs ALTER COLUMN ingest_seq SET DEFAULT nextval('review_logs_ingest_seq')")
    else:
        op.execute(SQLITE_COUNTER)
        op.execute("INSERT INTO review_logs_ingest_counter (counter_id, last_seq) VALUES (1, 0)")
        op.execute(SQLITE_TRIGGER)
    op.create_index(op.f('ix_review_logs_ingest_seq'), 'review_logs', ['ingest_seq'], unique=False)

    op.add_column('card_memory_states', sa.Column(
        'weights_version', sa.String(length=64), nullable=True,
        comment='the weights that produced the state: global#<version>, own@<trained_at> or default'))
    op.add_column('card_memory_states', sa.Column(
        'first_rating', sa.SmallInteger(), nullable=True, comment="rating of the card's first review"))
    op.create_table('card_memory_state_replays',
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('concept_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_id', 'concept_id', name=op.f('pk_card_memory_state_replays'))
    )
    op.create_table('card_memory_state_progress',
    sa.Column('progress_id', sa.SmallInteger(), autoincrement=False, nullable=False, comment='always 1'),
    sa.Column('covered_seq', sa.BigInteger(), nullable=False,
              comment='every review with ingest_seq <= this is in the states and no more can appear'),
    sa.Column('applied_seq', sa.BigInteger(), nullable=False, comment='highest ingest_seq in the states'),
    sa.Column('pending_xids', sa.Text(), server_default='[]', nullable=False,
              comment='PostgreSQL transactions in flight when applied_seq was read (JSON)'),
    sa.Column('as_of', sa.DateTime(timezone=True), nullable=False,
              comment='every review committed before this is in the states'),
    sa.Column('global_version', sa.BigInteger(), nullable=True, comment='fsrs_global_params version in use'),
    sa.Column('own_trained_at', sa.DateTime(timezone=True), nullable=True,
              comment='latest srs_user_params.trained_at in use'),
    sa.Column('prefs_updated_at', sa.DateTime(timezone=True), nullable=True,
              comment='latest user_learning_prefs.updated_at in use'),
    sa.CheckConstraint('progress_id = 1', name=op.f('ck_card_memory_state_progress_single_row')),
    sa.PrimaryKeyConstraint('progress_id', name=op.f('pk_card_memory_state_progress'))
    )
    op.add_column('revision_queue_user_summary', sa.Column(
        'cutoff_at', sa.DateTime(timezone=True), nullable=True,
        comment="the queue run's start: every review stored before it is in the memory states used"))


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table('revision_queue_user_summary', schema=None) as batch_op:
        batch_op.drop_column('cutoff_at')
    op.drop_table('card_memory_state_progress')
    op.drop_table('card_memory_state_replays')
    with op.batch_alter_table('card_memory_states', schema=None) as batch_op:
        batch_op.drop_column('first_rating')
        batch_op.drop_column('weights_version')
    op.drop_index(op.f('ix_review_logs_ingest_seq'), table_name='review_logs')
    if postgres:
        op.drop_column('review_logs', 'ingest_seq')  # drops the sequence it owns
    else:
        op.execute("DROP TRIGGER review_logs_ingest_seq")
        op.execute("DROP TABLE review_logs_ingest_counter")
        with op.batch_alter_table('review_logs', schema=None) as batch_op:
            batch_op.drop_column('ingest_seq')
