"""SQLite refuses names longer than their column, as PostgreSQL does

users, themes, concepts and resources hold text written from outside the pipelines (the app, imports with
--register-unknown, the demo). PostgreSQL refuses more characters than a varchar(n) column holds; SQLite stores
any length. On SQLite each such column gets a CHECK on its length (the tables are rebuilt, batch mode); on
PostgreSQL nothing changes. A SQLite warehouse already holding longer text is refused, naming the column, since
shortening it is the owner's choice.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-09
"""

from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

LENGTHS = {
    'users': {'external_ref': 200, 'timezone': 64},
    'themes': {'name': 200},
    'concepts': {'name': 200, 'external_ref': 200},
    'resources': {'title': 300, 'kind': 32},
}


def _rebuild_sqlite_tables(change) -> None:
    bind = op.get_bind()
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        # Rebuilding drops each table: with foreign keys on, SQLite would delete (cascade) or refuse its children.
        raise RuntimeError("run this migration with SQLite's foreign keys off (Alembic's own connection has them off)")
    # The app's views (0011) name these tables: SQLite 3.26+ refuses to rename the rebuilt table into place while
    # a view names a table missing mid-rebuild; the legacy rename leaves the views as they are, and they resolve
    # to the rebuilt table.
    op.execute("PRAGMA legacy_alter_table = ON")
    for table, columns in LENGTHS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column, length in columns.items():
                change(batch_op, op.f(f'ck_{table}_{column}_length'), column, length)
    op.execute("PRAGMA legacy_alter_table = OFF")


def upgrade() -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    too_long = [f"{table}.{column} ({n} row(s) over {length} characters)"
                for table, columns in LENGTHS.items() for column, length in columns.items()
                for n in [op.get_bind().exec_driver_sql(
                    f"SELECT count(*) FROM {table} WHERE length({column}) > {length}").scalar()] if n]
    if too_long:
        raise RuntimeError(f"text longer than PostgreSQL would keep: {', '.join(too_long)}; shorten it "
                           "(UPDATE ... SET column = substr(column, 1, LENGTH)) and upgrade again")
    _rebuild_sqlite_tables(lambda batch_op, name, column, length:
                           batch_op.create_check_constraint(name, f"length({column}) <= {length}"))


def downgrade() -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    _rebuild_sqlite_tables(lambda batch_op, name, column, length: batch_op.drop_constraint(name, type_='check'))
