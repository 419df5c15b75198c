"""The warehouse schema as SQLAlchemy Core tables. Alembic (`migrations/`) owns how it gets there."""

from __future__ import annotations

import sqlalchemy as sa

from learning_pipelines.db.types import UtcDateTime

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _refusing_longer_text(table: sa.Table) -> sa.Table:
    """`table` with a CHECK on SQLite for each of its varchar(n) columns: SQLite stores text of any length where
    PostgreSQL refuses more than n characters, and a name written from outside the pipelines (the app, an import
    with --register-unknown, the demo) must be refused on both (migration 0012). Only on SQLite: PostgreSQL
    checks varchar(n) itself. Text the pipelines compute (theme keys, strategies) needs none."""
    for column in table.columns:
        if isinstance(column.type, sa.String) and column.type.length:
            table.append_constraint(sa.CheckConstraint(f"length({column.name}) <= {column.type.length}",
                                                       name=f"{column.name}_length").ddl_if(dialect="sqlite"))
    return table


# Every IANA time zone key of the pinned tzdata package (domain/time_zones.py), filled by migration 0014: the only
# values users.timezone takes (PostgreSQL itself would take 'america/new_york', '+05:30' or 'localtime').
time_zones = sa.Table(
    "time_zones",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True, comment="as tzdata spells it, e.g. America/New_York"),
)

# users.timezone references time_zones: on PostgreSQL a foreign key added NOT VALID (learners stored before it keep
# their value); on SQLite the same foreign key, and triggers that refuse a write whatever PRAGMA foreign_keys says.
users = _refusing_longer_text(sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("external_ref", sa.String(200), nullable=True, comment="id in the source system"),
    sa.Column("timezone", sa.String(64), sa.ForeignKey("time_zones.name"), nullable=False, server_default="UTC"),
    sa.Column("day_start_hour", sa.SmallInteger, nullable=False, server_default="4",
              comment="hour at which the learner's day starts (Anki's default is 4)"),
    sa.Column("created_at", UtcDateTime, nullable=False, server_default=sa.func.current_timestamp()),
    sa.CheckConstraint("day_start_hour BETWEEN 0 AND 23", name="day_start_hour"),
    sa.Index(None, "timezone", "day_start_hour"),  # a rollover window's learners (migration 0017)
))

themes = _refusing_longer_text(sa.Table(
    "themes",
    metadata,
    sa.Column("theme_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
))

concepts = _refusing_longer_text(sa.Table(
    "concepts",
    metadata,
    sa.Column("concept_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("external_ref", sa.String(200), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False, server_default=sa.func.current_timestamp()),
))

concept_theme_map = sa.Table(
    "concept_theme_map",
    metadata,
    sa.Column("concept_id", sa.BigInteger, sa.ForeignKey("concepts.concept_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("theme_id", sa.Integer, sa.ForeignKey("themes.theme_id", ondelete="CASCADE"), primary_key=True),
)

concept_edges = sa.Table(
    "concept_edges",
    metadata,
    sa.Column("prerequisite_id", sa.BigInteger, sa.ForeignKey("concepts.concept_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("concept_id", sa.BigInteger, sa.ForeignKey("concepts.concept_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("weight", sa.Float, nullable=False, server_default="1.0"),
    sa.CheckConstraint("prerequisite_id <> concept_id", name="not_self"),
)

# Range-partitioned by month on PostgreSQL (see migrations and db/partitions.py), hence the
# primary key includes reviewed_at. Review ids stay unique: importers never reuse one.
review_logs = sa.Table(
    "review_logs",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("reviewed_at", UtcDateTime, primary_key=True),
    sa.Column("user_id", sa.BigInteger, sa.ForeignKey("users.user_id"), nullable=False),
    sa.Column("concept_id", sa.BigInteger, sa.ForeignKey("concepts.concept_id"), nullable=False),
    sa.Column("rating", sa.SmallInteger, nullable=False, comment="1 Again, 2 Hard, 3 Good, 4 Easy"),
    sa.Column("review_duration_ms", sa.Integer, nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=True, comment="0 learning, 1 review, 2 relearning, 3 filtered"),
    # Filled by the database on every insert (a sequence on PostgreSQL; on SQLite a trigger numbering from
    # review_logs_ingest_counter, migration 0009), so writes that bypass our importers are numbered too
    # and a number is never handed out twice. NULL: stored before 0009.
    sa.Column("ingest_seq", sa.BigInteger, nullable=True,
              comment="order in which reviews reached the warehouse; newer reviews have larger numbers"),
    sa.CheckConstraint("rating BETWEEN 1 AND 4", name="rating"),
    sa.CheckConstraint("review_duration_ms >= 0", name="duration"),
    sa.CheckConstraint("state IS NULL OR state BETWEEN 0 AND 3", name="state"),
    sa.Index(None, "user_id", "concept_id", "reviewed_at"),
    sa.Index(None, "reviewed_at"),
    sa.Index(None, "ingest_seq"),
    postgresql_partition_by="RANGE (reviewed_at)",
)

review_log_rejects = sa.Table(
    "review_log_rejects",
    metadata,
    sa.Column("reject_id", AutoId, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(500), nullable=False, comment="file path, or the asset partition that quarantined it"),
    sa.Column("line_number", sa.Integer, nullable=True, comment="1-based line in the source file, header included"),
    sa.Column("review_id", sa.BigInteger, nullable=True),
    sa.Column("reviewed_at", UtcDateTime, nullable=True, comment="when it parsed, so rejects count per month"),
    sa.Column("raw_row", sa.Text, nullable=False, comment="the row as read, JSON"),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("rejected_at", UtcDateTime, nullable=False),
    sa.Index(None, "reviewed_at"),
)

review_log_imports = sa.Table(
    "review_log_imports",
    metadata,
    sa.Column("import_id", AutoId, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(500), nullable=False),
    sa.Column("file_sha256", sa.String(64), nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False),
    sa.Column("n_loaded", sa.Integer, nullable=False),
    sa.Column("n_already_present", sa.Integer, nullable=False),
    sa.Column("n_rejected", sa.Integer, nullable=False),
    sa.Column("n_not_reviews", sa.Integer, nullable=False, comment="e.g. Anki manual reschedules"),
    sa.Column("imported_at", UtcDateTime, nullable=False),
)

# Output of the review_logs asset: each review's place in its card's history.
review_log_intervals = sa.Table(
    "review_log_intervals",
    metadata,
    sa.Column("review_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("reviewed_at", UtcDateTime, primary_key=True),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("concept_id", sa.BigInteger, nullable=False),
    sa.Column("review_number", sa.Integer, nullable=False, comment="1 for the card's first review"),
    sa.Column("elapsed_days", sa.Integer, nullable=True,
              comment="learner-days since the card's previous review; NULL for the first"),
    # A learner's day numbers never go backwards (domain/learner_calendar.py); NOT VALID on PostgreSQL (0014).
    sa.CheckConstraint("elapsed_days >= 0", name="elapsed_days"),
    sa.Index(None, "reviewed_at"),
)

user_learning_prefs = sa.Table(
    "user_learning_prefs",
    metadata,
    sa.Column("user_id", sa.BigInteger, sa.ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("spacing_multiplier", sa.Float, nullable=False, server_default="1.0"),
    sa.Column("retention_target_override", sa.Float, nullable=True),
    sa.Column("revision_daily_target", sa.Integer, nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=False, server_default=sa.func.current_timestamp()),
    sa.CheckConstraint("spacing_multiplier BETWEEN 0.5 AND 2.0", name="spacing_multiplier"),
    sa.CheckConstraint(
        "retention_target_override IS NULL OR retention_target_override BETWEEN 0.7 AND 0.95",
        name="retention_target_override",
    ),
    sa.CheckConstraint("revision_daily_target IS NULL OR revision_daily_target > 0", name="revision_daily_target"),
)

resources = _refusing_longer_text(sa.Table(
    "resources",
    metadata,
    sa.Column("resource_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("title", sa.String(300), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False, comment="video, article, exercise, ..."),
    sa.Column("difficulty", sa.Float, nullable=True, comment="0 easy .. 1 hard"),
    sa.CheckConstraint("difficulty IS NULL OR difficulty BETWEEN 0 AND 1", name="difficulty"),
))

resource_concepts = sa.Table(
    "resource_concepts",
    metadata,
    sa.Column("resource_id", sa.BigInteger, sa.ForeignKey("resources.resource_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("concept_id", sa.BigInteger, sa.ForeignKey("concepts.concept_id", ondelete="CASCADE"), primary_key=True),
)

user_interactions = sa.Table(
    "user_interactions",
    metadata,
    sa.Column("interaction_id", AutoId, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.BigInteger, sa.ForeignKey("users.user_id"), nullable=False),
    sa.Column("resource_id", sa.BigInteger, sa.ForeignKey("resources.resource_id"), nullable=False),
    sa.Column("interaction_type", sa.String(32), nullable=False),
    sa.Column("occurred_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("interaction_type IN ('view', 'complete', 'like', 'bookmark')", name="interaction_type"),
    sa.Index(None, "user_id", "occurred_at"),
)

# --- FSRS memory model (written by the fsrs assets) -------------------------------------

srs_user_params = sa.Table(
    "srs_user_params",
    metadata,
    sa.Column("user_id", sa.BigInteger, sa.ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("ab_group", sa.String(32), nullable=False, comment="BASELINE_GLOBAL or TUNED_ELIGIBLE"),
    sa.Column("weights", sa.Text, nullable=True, comment="21 FSRS-6 weights, JSON; NULL: the learner uses the global ones"),
    sa.Column("n_reviews", sa.Integer, nullable=False),
    sa.Column("trained_at", UtcDateTime, nullable=True),
    sa.Column("training_cooldown_until", UtcDateTime, nullable=True),
    sa.Column("logloss_before", sa.Float, nullable=True, comment="held-out logloss with the global weights"),
    sa.Column("logloss_after", sa.Float, nullable=True, comment="held-out logloss with the learner's own weights"),
    sa.Column("n_holdout_reviews", sa.Integer, nullable=True),
    sa.CheckConstraint("ab_group IN ('BASELINE_GLOBAL', 'TUNED_ELIGIBLE')", name="ab_group"),
)

fsrs_global_params = sa.Table(
    "fsrs_global_params",
    metadata,
    sa.Column("version", AutoId, primary_key=True, autoincrement=True),
    sa.Column("weights", sa.Text, nullable=False, comment="21 FSRS-6 weights, JSON"),
    sa.Column("n_reviews", sa.Integer, nullable=False),
    sa.Column("n_learners", sa.Integer, nullable=False),
    sa.Column("logloss", sa.Float, nullable=False, comment="training logloss on the pooled reviews"),
    sa.Column("trained_at", UtcDateTime, nullable=False),
)

card_memory_states = sa.Table(
    "card_memory_states",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("concept_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("stability_days", sa.Float, nullable=False),
    sa.Column("difficulty", sa.Float, nullable=False, comment="1 easy .. 10 hard"),
    sa.Column("n_reviews", sa.Integer, nullable=False),
    sa.Column("last_review_at", UtcDateTime, nullable=False),
    sa.Column("due_at", UtcDateTime, nullable=False, comment="when recall falls to the learner's retention target"),
    sa.Column("weights_source", sa.String(16), nullable=False, comment="own or global"),
    sa.Column("decay", sa.Float, nullable=False, server_default="0.1542",
              comment="w20 of the weights used: retrievability = (1 + f t / S) ^ -decay"),
    sa.Column("weights_version", sa.String(64), nullable=True,
              comment="the weights that produced the state: global#<version>, own@<trained_at> or default"),
    sa.Column("first_rating", sa.SmallInteger, nullable=True, comment="rating of the card's first review"),
    sa.Index(None, "due_at"),
)

# Cards whose history changed other than by a new review (a review moved to the rejects): the next
# card_memory_states run replays them from their history.
card_memory_state_replays = sa.Table(
    "card_memory_state_replays",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("concept_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("requested_at", UtcDateTime, nullable=False),
)

# What card_memory_states includes, so each run reads only the reviews that reached the warehouse since.
card_memory_state_progress = sa.Table(
    "card_memory_state_progress",
    metadata,
    sa.Column("progress_id", sa.SmallInteger, primary_key=True, autoincrement=False, comment="always 1"),
    sa.Column("covered_seq", sa.BigInteger, nullable=False,
              comment="every review with ingest_seq <= this is in the states and no more can appear"),
    sa.Column("applied_seq", sa.BigInteger, nullable=False, comment="highest ingest_seq in the states"),
    sa.Column("pending_xids", sa.Text, nullable=False, server_default="[]",
              comment="PostgreSQL transactions in flight when applied_seq was read (JSON)"),
    sa.Column("as_of", UtcDateTime, nullable=False, comment="every review committed before this is in the states"),
    sa.Column("global_version", sa.BigInteger, nullable=True, comment="fsrs_global_params version in use"),
    sa.Column("own_trained_at", UtcDateTime, nullable=True, comment="latest srs_user_params.trained_at in use"),
    sa.Column("prefs_updated_at", UtcDateTime, nullable=True, comment="latest user_learning_prefs.updated_at in use"),
    sa.CheckConstraint("progress_id = 1", name="single_row"),
)

eval_metrics_daily = sa.Table(
    "eval_metrics_daily",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("ab_group", sa.String(32), primary_key=True),
    sa.Column("n_reviews", sa.Integer, nullable=False),
    sa.Column("n_learners", sa.Integer, nullable=False),
    sa.Column("logloss", sa.Float, nullable=True),
    sa.Column("brier", sa.Float, nullable=True),
    sa.Column("ece", sa.Float, nullable=True),
    sa.Column("rmse_bins", sa.Float, nullable=True),
    sa.Column("mean_predicted", sa.Float, nullable=True),
    sa.Column("mean_recalled", sa.Float, nullable=True),
    sa.Column("evaluated_at", UtcDateTime, nullable=False),
)


# --- Concept complexity and revision queues ----------------------------------------------

concept_complexity = sa.Table(
    "concept_complexity",
    metadata,
    sa.Column("concept_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("score", sa.Float, nullable=False, comment="0 easy .. 1 hard, shrunk and graph-smoothed"),
    sa.Column("raw_score", sa.Float, nullable=True, comment="before shrinkage and smoothing"),
    sa.Column("first_review_lapse_rate", sa.Float, nullable=True),
    sa.Column("mean_difficulty", sa.Float, nullable=True),
    sa.Column("stability_growth", sa.Float, nullable=True, comment="mean log(1 + stability days) per review"),
    sa.Column("n_learners", sa.Integer, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False, comment="n / (n + prior strength)"),
    sa.Column("computed_at", UtcDateTime, nullable=False),
)

revision_queue_theme = sa.Table(
    "revision_queue_theme",
    metadata,
    sa.Column("queue_date", sa.Date, primary_key=True),
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("theme_key", sa.String(64), primary_key=True, comment="theme id, THEME::<id> fallback, or UNMAPPED"),
    sa.Column("due_today", sa.Integer, nullable=False, comment="due by the end of the learner's day, overdue included"),
    sa.Column("overdue", sa.Integer, nullable=False, comment="already due before the learner's day began"),
    sa.Column("mastery", sa.Float, nullable=False, comment="mean retrievability of the theme's concepts at day start"),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("due_in_target", sa.Integer, nullable=True,
              comment="of due_today, those among the learner's concepts of the day (all without a daily target); "
                      "empty for queues built before migration 0016"),
)

# Today's concepts of each learner with a daily target, in the order the app lists them (domain/revision.py): the
# due ones, overdue first, by recall lost, at most revision_daily_target of them.
revision_queue_target_concept = sa.Table(
    "revision_queue_target_concept",
    metadata,
    sa.Column("queue_date", sa.Date, primary_key=True),
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("position", sa.Integer, primary_key=True, autoincrement=False, comment="1 first"),
    sa.Column("concept_id", sa.BigInteger, nullable=False),
    sa.Column("theme_key", sa.String(64), nullable=False, comment="the theme it counts in (revision_queue_theme)"),
    sa.Column("overdue", sa.Boolean, nullable=False, comment="already due before the learner's day began"),
    sa.Column("recall_lost", sa.Float, nullable=False,
              comment="the learner's retention target minus the card's recall probability at the start of their day"),
)

revision_queue_user_summary = sa.Table(
    "revision_queue_user_summary",
    metadata,
    sa.Column("queue_date", sa.Date, primary_key=True),
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("due_today_total", sa.Integer, nullable=False),
    sa.Column("overdue_total", sa.Integer, nullable=False),
    sa.Column("recommended_theme_ids", sa.Text, nullable=False, comment="JSON list of theme keys, best first"),
    sa.Column("revision_daily_target", sa.Integer, nullable=True),
    sa.Column("generated_at", UtcDateTime, nullable=False),
    sa.Column("cutoff_at", UtcDateTime, nullable=True,
              comment="the queue run's start: every review stored before it is in the memory states used"),
    sa.Column("valid_from", UtcDateTime, nullable=True,
              comment="when the learner's day starts (UTC): the queue is theirs from then"),
    sa.Column("valid_until", UtcDateTime, nullable=True, comment="when the learner's next day starts (UTC)"),
    sa.Index("ix_revision_queue_user_summary_user_id_valid_from", "user_id", "valid_from"),
)

queue_stats_daily = sa.Table(
    "queue_stats_daily",
    metadata,
    sa.Column("queue_date", sa.Date, primary_key=True),
    sa.Column("learner_shard", sa.String(16), primary_key=True, server_default="00-of-01",
              comment="the learner shard these learners belong to, like 03-of-16"),
    sa.Column("window_start", UtcDateTime, primary_key=True,
              comment="the rollover window these learners were built in (UTC)"),
    sa.Column("theme_key", sa.String(64), primary_key=True, comment="'*' for the global totals"),
    sa.Column("n_learners", sa.Integer, nullable=False),
    sa.Column("due_today", sa.Integer, nullable=False),
    sa.Column("overdue", sa.Integer, nullable=False),
)

# One row per window build of one learner shard's day: the learners whose rollover into queue_date falls in the
# window, and when their queues were ready (late: after the first of those rollovers).
revision_queue_windows = sa.Table(
    "revision_queue_windows",
    metadata,
    sa.Column("window_start", UtcDateTime, primary_key=True, comment="the 15-minute window of rollovers (UTC)"),
    sa.Column("queue_date", sa.Date, primary_key=True, comment="the learners' day being built"),
    sa.Column("learner_shard", sa.String(16), primary_key=True),
    sa.Column("n_learners", sa.Integer, nullable=False),
    sa.Column("first_rollover_at", UtcDateTime, nullable=True,
              comment="the earliest rollover into queue_date among these learners (UTC)"),
    sa.Column("day_ends_at", UtcDateTime, nullable=True,
              comment="the latest end of queue_date among these learners (UTC)"),
    sa.Column("cutoff_at", UtcDateTime, nullable=False,
              comment="every review stored before it is in the memory states the queues were built from"),
    sa.Column("ready_at", UtcDateTime, nullable=False, comment="when the queues were committed"),
    sa.Column("late", sa.Boolean, nullable=False, comment="ready after the first rollover of the window"),
    sa.Index("ix_revision_queue_windows_ready_at", "ready_at"),
)

tag_quality_debt_log = sa.Table(
    "tag_quality_debt_log",
    metadata,
    sa.Column("queue_date", sa.Date, primary_key=True),
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("concept_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("fallback_key", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(200), nullable=False),
)

# A learner whose stored time zone is not a key of time_zones (stored before migration 0014 refused such values) has
# their calendar read as UTC by every recipe (db/learner_calendars.py); one row per such learner, kept as a log.
learner_calendar_fallbacks = sa.Table(
    "learner_calendar_fallbacks",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("timezone", sa.String(64), nullable=False, comment="users.timezone as stored when last noticed"),
    sa.Column("first_noticed_at", UtcDateTime, nullable=False,
              comment="the first run that read this learner's calendar as UTC"),
    sa.Column("last_noticed_at", UtcDateTime, nullable=False,
              comment="the latest run that read this learner's calendar as UTC"),
)

# --- Operations ---------------------------------------------------------------------------

pipeline_run_failures = sa.Table(
    "pipeline_run_failures",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("job_name", sa.String(200), nullable=False),
    sa.Column("step_key", sa.String(200), nullable=True,
              comment="first failed step; NULL when the run failed outside steps"),
    sa.Column("error_class", sa.String(200), nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("failed_at", UtcDateTime, nullable=False),
    sa.Column("webhook_status", sa.String(64), nullable=True, comment="HTTP status of the alert post, or why none was sent"),
)

# --- NCF recommendations -------------------------------------------------------------------

ncf_models = sa.Table(
    "ncf_models",
    metadata,
    sa.Column("model_id", AutoId, primary_key=True, autoincrement=True),
    sa.Column("trained_at", UtcDateTime, nullable=False),
    sa.Column("checkpoint_uri", sa.String(500), nullable=False),
    sa.Column("n_interactions", sa.Integer, nullable=False, comment="interactions in the warehouse when trained"),
    sa.Column("n_users", sa.Integer, nullable=False),
    sa.Column("n_items", sa.Integer, nullable=False),
    sa.Column("hr_at_10", sa.Float, nullable=False),
    sa.Column("ndcg_at_10", sa.Float, nullable=False),
    sa.Column("popularity_hr_at_10", sa.Float, nullable=False),
    sa.Column("epochs", sa.Integer, nullable=False),
    sa.Column("train_seconds", sa.Float, nullable=False),
)

ncf_user_embeddings = sa.Table(
    "ncf_user_embeddings",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("model_id", sa.BigInteger, nullable=False),
    sa.Column("embedding", sa.Text, nullable=False, comment="JSON: GMF factors then MLP embedding"),
)

ncf_item_embeddings = sa.Table(
    "ncf_item_embeddings",
    metadata,
    sa.Column("resource_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("model_id", sa.BigInteger, nullable=False),
    sa.Column("embedding", sa.Text, nullable=False, comment="JSON: GMF factors then MLP embedding"),
)

user_recommendations = sa.Table(
    "user_recommendations",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("rank", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("resource_id", sa.BigInteger, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("strategy", sa.String(32), nullable=False, comment="hybrid, or content_graph when NCF cannot serve"),
    sa.Column("ncf_score", sa.Float, nullable=True),
    sa.Column("content_score", sa.Float, nullable=False),
    sa.Column("graph_score", sa.Float, nullable=False),
    sa.Column("model_id", sa.BigInteger, nullable=True),
    sa.Column("generated_at", UtcDateTime, nullable=False),
)
