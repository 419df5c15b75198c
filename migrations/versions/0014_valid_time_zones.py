"""valid time zones: users.timezone is a key of tzdata, learner-day intervals never negative, calendar fallbacks

users.timezone accepted anything ('Mars/Olympus', '', 'america/new_york', '+05:30', 'localtime', a trailing
newline), and one such learner failed every recipe that reads calendars. A valid time zone is an exact key of the
pinned tzdata package: time_zones holds those keys (tzdata's own list, read when this migration runs) and
users.timezone references it.

- PostgreSQL: a foreign key added NOT VALID: every new write is checked, the learners already stored keep their
  value (their calendars are read as UTC, db/learner_calendars.py) and the migration never fails on them.
- SQLite: the same foreign key (users rebuilt, batch mode, with foreign keys off: old rows are copied as they are),
  and BEFORE INSERT / BEFORE UPDATE OF timezone triggers that refuse a value missing from time_zones. SQLite
  checks foreign keys only on connections that turn them on (the pipelines do; SQLite's default is off), triggers
  on every connection. Neither looks at a row whose timezone is not written, so old rows stay and can be corrected.

review_log_intervals.elapsed_days gets CHECK (elapsed_days >= 0): a learner's day numbers never go backwards
(domain/learner_calendar.py). NOT VALID on PostgreSQL; on SQLite the table is rebuilt with CHECK constraints
ignored for the copy. Rows written before keep their value until their month is validated again.

learner_calendar_fallbacks logs the learners whose stored time zone is not a key (one row each).

Afterwards, to repair: list the learners (learner_calendar_fallbacks, or users whose timezone is not in
time_zones), set their timezone, then on PostgreSQL `ALTER TABLE users VALIDATE CONSTRAINT
fk_users_timezone_time_zones` (it holds SHARE UPDATE EXCLUSIVE: reads and writes go on). A later tzdata that adds
keys needs a migration that inserts them (tests/assets/test_time_zones.py compares the table with tzdata).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-10
"""

import importlib.resources

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

REFUSED = "users.timezone is not a key of time_zones (an IANA time zone, spelled as tzdata spells it)"
SQLITE_TRIGGERS = {
    "users_timezone_insert": "BEFORE INSERT ON users",
    "users_timezone_update": "BEFORE UPDATE OF timezone ON users",
}


def _tzdata_keys() -> list[str]:
    listed = importlib.resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return sorted(line for line in listed.splitlines() if line)


def _sqlite_rebuild(change) -> None:
    bind = op.get_bind()
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        # The rebuild drops each table: with foreign keys on, SQLite would delete (cascade) or refuse its children,
        # and check the rows it copies.
        raise RuntimeError("run this migration with SQLite's foreign keys off (Alembic's own connection has them off)")
    op.execute("PRAGMA legacy_alter_table = ON")  # the app's views stay as they are (as in 0012)
    op.execute("PRAGMA ignore_check_constraints = ON")  # old negative elapsed_days are copied, new ones refused
    change()
    op.execute("PRAGMA ignore_check_constraints = OFF")
    op.execute("PRAGMA legacy_alter_table = OFF")


def upgrade() -> None:
    time_zones = op.create_table(
        'time_zones',
        sa.Column('name', sa.String(length=64), nullable=False, comment='as tzdata spells it, e.g. America/New_York'),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_time_zones')),
    )
    op.bulk_insert(time_zones, [{'name': key} for key in _tzdata_keys()])
    op.create_table(
        'learner_calendar_fallbacks',
        sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('timezone', sa.String(length=64), nullable=False,
                  comment='users.timezone as stored when last noticed'),
        sa.Column('first_noticed_at', sa.DateTime(timezone=True), nullable=False,
                  comment="the first run that read this learner's calendar as UTC"),
        sa.Column('last_noticed_at', sa.DateTime(timezone=True), nullable=False,
                  comment="the latest run that read this learner's calendar as UTC"),
        sa.PrimaryKeyConstraint('user_id', name=op.f('pk_learner_calendar_fallbacks')),
    )
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ALTER TABLE users ADD CONSTRAINT fk_users_timezone_time_zones FOREIGN KEY (timezone) "
                   "REFERENCES time_zones (name) NOT VALID")
        op.execute("ALTER TABLE review_log_intervals ADD CONSTRAINT ck_review_log_intervals_elapsed_days "
                   "CHECK (elapsed_days >= 0) NOT VALID")
        return

    def change() -> None:
        with op.batch_alter_table('users', schema=None) as batch_op:
            batch_op.create_foreign_key(op.f('fk_users_timezone_time_zones'), 'time_zones', ['timezone'], ['name'])
        with op.batch_alter_table('review_log_intervals', schema=None) as batch_op:
            batch_op.create_check_constraint(op.f('ck_review_log_intervals_elapsed_days'), 'elapsed_days >= 0')

    _sqlite_rebuild(change)
    for name, when in SQLITE_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {when} WHEN NOT EXISTS (SELECT 1 FROM time_zones WHERE name = NEW.timezone) "
                   f"BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ALTER TABLE review_log_intervals DROP CONSTRAINT ck_review_log_intervals_elapsed_days")
        op.execute("ALTER TABLE users DROP CONSTRAINT fk_users_timezone_time_zones")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")

        def change() -> None:
            with op.batch_alter_table('review_log_intervals', schema=None) as batch_op:
                batch_op.drop_constraint(op.f('ck_review_log_intervals_elapsed_days'), type_='check')
            with op.batch_alter_table('users', schema=None) as batch_op:
                batch_op.drop_constraint(op.f('fk_users_timezone_time_zones'), type_='foreignkey')

        _sqlite_rebuild(change)
    op.drop_table('learner_calendar_fallbacks')
    op.drop_table('time_zones')
