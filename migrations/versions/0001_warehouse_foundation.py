"""warehouse foundation: learners, concepts, themes, resources, review logs and their rejects

On PostgreSQL review_logs is range-partitioned by month on reviewed_at with a DEFAULT
partition; month partitions are created by the pipeline before it writes a month
(learning_pipelines.db.partitions).

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('concepts',
    sa.Column('concept_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('external_ref', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.PrimaryKeyConstraint('concept_id', name=op.f('pk_concepts'))
    )
    op.create_table('resources',
    sa.Column('resource_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False, comment='video, article, exercise, ...'),
    sa.Column('difficulty', sa.Float(), nullable=True, comment='0 easy .. 1 hard'),
    sa.CheckConstraint('difficulty IS NULL OR difficulty BETWEEN 0 AND 1', name=op.f('ck_resources_difficulty')),
    sa.PrimaryKeyConstraint('resource_id', name=op.f('pk_resources'))
    )
    op.create_table('review_log_imports',
    sa.Column('import_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('source', sa.String(length=500), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('n_rows', sa.Integer(), nullable=False),
    sa.Column('n_loaded', sa.Integer(), nullable=False),
    sa.Column('n_already_present', sa.Integer(), nullable=False),
    sa.Column('n_rejected', sa.Integer(), nullable=False),
    sa.Column('n_not_reviews', sa.Integer(), nullable=False, comment='e.g. Anki manual reschedules'),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('import_id', name=op.f('pk_review_log_imports'))
    )
    op.create_table('review_log_intervals',
    sa.Column('review_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('concept_id', sa.BigInteger(), nullable=False),
    sa.Column('review_number', sa.Integer(), nullable=False, comment="1 for the card's first review"),
    sa.Column('elapsed_days', sa.Integer(), nullable=True, comment="learner-days since the card's previous review; NULL for the first"),
    sa.PrimaryKeyConstraint('review_id', 'reviewed_at', name=op.f('pk_review_log_intervals'))
    )
    op.create_index(op.f('ix_review_log_intervals_reviewed_at'), 'review_log_intervals', ['reviewed_at'], unique=False)
    op.create_table('review_log_rejects',
    sa.Column('reject_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('source', sa.String(length=500), nullable=False, comment='file path, or the asset partition that quarantined it'),
    sa.Column('line_number', sa.Integer(), nullable=True, comment='1-based line in the source file, header included'),
    sa.Column('review_id', sa.BigInteger(), nullable=True),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True, comment='when it parsed, so rejects count per month'),
    sa.Column('raw_row', sa.Text(), nullable=False, comment='the row as read, JSON'),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('rejected_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('reject_id', name=op.f('pk_review_log_rejects'))
    )
    op.create_index(op.f('ix_review_log_rejects_reviewed_at'), 'review_log_rejects', ['reviewed_at'], unique=False)
    op.create_table('themes',
    sa.Column('theme_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('theme_id', name=op.f('pk_themes'))
    )
    op.create_table('users',
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('external_ref', sa.String(length=200), nullable=True, comment='id in the source system'),
    sa.Column('timezone', sa.String(length=64), server_default='UTC', nullable=False),
    sa.Column('day_start_hour', sa.SmallInteger(), server_default='4', nullable=False, comment="hour at which the learner's day starts (Anki's default is 4)"),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.CheckConstraint('day_start_hour BETWEEN 0 AND 23', name=op.f('ck_users_day_start_hour')),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_users'))
    )
    op.create_table('concept_edges',
    sa.Column('prerequisite_id', sa.BigInteger(), nullable=False),
    sa.Column('concept_id', sa.BigInteger(), nullable=False),
    sa.Column('weight', sa.Float(), server_default='1.0', nullable=False),
    sa.CheckConstraint('prerequisite_id <> concept_id', name=op.f('ck_concept_edges_not_self')),
    sa.ForeignKeyConstraint(['concept_id'], ['concepts.concept_id'], name=op.f('fk_concept_edges_concept_id_concepts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['prerequisite_id'], ['concepts.concept_id'], name=op.f('fk_concept_edges_prerequisite_id_concepts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('prerequisite_id', 'concept_id', name=op.f('pk_concept_edges'))
    )
    op.create_table('concept_theme_map',
    sa.Column('concept_id', sa.BigInteger(), nullable=False),
    sa.Column('theme_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['concept_id'], ['concepts.concept_id'], name=op.f('fk_concept_theme_map_concept_id_concepts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['theme_id'], ['themes.theme_id'], name=op.f('fk_concept_theme_map_theme_id_themes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('concept_id', 'theme_id', name=op.f('pk_concept_theme_map'))
    )
    op.create_table('resource_concepts',
    sa.Column('resource_id', sa.BigInteger(), nullable=False),
    sa.Column('concept_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['concept_id'], ['concepts.concept_id'], name=op.f('fk_resource_concepts_concept_id_concepts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['resource_id'], ['resources.resource_id'], name=op.f('fk_resource_concepts_resource_id_resources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('resource_id', 'concept_id', name=op.f('pk_resource_concepts'))
    )
    op.create_table('review_logs',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('concept_id', sa.BigInteger(), nullable=False),
    sa.Column('rating', sa.SmallInteger(), nullable=False, comment='1 Again, 2 Hard, 3 Good, 4 Easy'),
    sa.Column('review_duration_ms', sa.Integer(), nullable=False),
    sa.Column('state', sa.SmallInteger(), nullable=True, comment='0 learning, 1 review, 2 relearning, 3 filtered'),
    sa.CheckConstraint('rating BETWEEN 1 AND 4', name=op.f('ck_review_logs_rating')),
    sa.CheckConstraint('review_duration_ms >= 0', name=op.f('ck_review_logs_duration')),
    sa.CheckConstraint('state IS NULL OR state BETWEEN 0 AND 3', name=op.f('ck_review_logs_state')),
    sa.ForeignKeyConstraint(['concept_id'], ['concepts.concept_id'], name=op.f('fk_review_logs_concept_id_concepts')),
    sa.ForeignKeyConstraint(['user_id'], ['users.user_id'], name=op.f('fk_review_logs_user_id_users')),
    sa.PrimaryKeyConstraint('id', 'reviewed_at', name=op.f('pk_review_logs')),
    postgresql_partition_by='RANGE (reviewed_at)'
    )
    op.create_index(op.f('ix_review_logs_reviewed_at'), 'review_logs', ['reviewed_at'], unique=False)
    op.create_index(op.f('ix_review_logs_user_id_concept_id_reviewed_at'), 'review_logs', ['user_id', 'concept_id', 'reviewed_at'], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE TABLE review_logs_default PARTITION OF review_logs DEFAULT")
    op.create_table('user_interactions',
    sa.Column('interaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('resource_id', sa.BigInteger(), nullable=False),
    sa.Column('interaction_type', sa.String(length=32), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("interaction_type IN ('view', 'complete', 'like', 'bookmark')", name=op.f('ck_user_interactions_interaction_type')),
    sa.ForeignKeyConstraint(['resource_id'], ['resources.resource_id'], name=op.f('fk_user_interactions_resource_id_resources')),
    sa.ForeignKeyConstraint(['user_id'], ['users.user_id'], name=op.f('fk_user_interactions_user_id_users')),
    sa.PrimaryKeyConstraint('interaction_id', name=op.f('pk_user_interactions'))
    )
    op.create_index(op.f('ix_user_interactions_user_id_occurred_at'), 'user_interactions', ['user_id', 'occurred_at'], unique=False)
    op.create_table('user_learning_prefs',
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('spacing_multiplier', sa.Float(), server_default='1.0', nullable=False),
    sa.Column('retention_target_override', sa.Float(), nullable=True),
    sa.Column('revision_daily_target', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.CheckConstraint('retention_target_override IS NULL OR retention_target_override BETWEEN 0.7 AND 0.95', name=op.f('ck_user_learning_prefs_retention_target_override')),
    sa.CheckConstraint('revision_daily_target IS NULL OR revision_daily_target > 0', name=op.f('ck_user_learning_prefs_revision_daily_target')),
    sa.CheckConstraint('spacing_multiplier BETWEEN 0.5 AND 2.0', name=op.f('ck_user_learning_prefs_spacing_multiplier')),
    sa.ForeignKeyConstraint(['user_id'], ['users.user_id'], name=op.f('fk_user_learning_prefs_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_user_learning_prefs'))
    )


def downgrade() -> None:
    op.drop_table('user_learning_prefs')
    op.drop_index(op.f('ix_user_interactions_user_id_occurred_at'), table_name='user_interactions')
    op.drop_table('user_interactions')
    op.drop_index(op.f('ix_review_logs_user_id_concept_id_reviewed_at'), table_name='review_logs')
    op.drop_index(op.f('ix_review_logs_reviewed_at'), table_name='review_logs')
    op.drop_table('review_logs')
    op.drop_table('resource_concepts')
    op.drop_table('concept_theme_map')
    op.drop_table('concept_edges')
    op.drop_table('users')
    op.drop_table('themes')
    op.drop_index(op.f('ix_review_log_rejects_reviewed_at'), table_name='review_log_rejects')
    op.drop_table('review_log_rejects')
    op.drop_index(op.f('ix_review_log_intervals_reviewed_at'), table_name='review_log_intervals')
    op.drop_table('review_log_intervals')
    op.drop_table('review_log_imports')
    op.drop_table('resources')
    op.drop_table('concepts')
