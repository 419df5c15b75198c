"""Code that migrations run, frozen with them: a migration is history and must do tomorrow what it
did the day it shipped, whatever becomes of learning_pipelines.

Nothing here imports learning_pipelines (tests/test_migrations.py checks). Never edit a module
here to change what a migration does: write a new migration with a new module. env.py puts
migrations/ on sys.path; a migration imports from here inside upgrade()/downgrade(), since
Alembic also loads revision files without env.py (`alembic heads`, `db verify`).
"""
