"""The warehouse: SQLAlchemy Core tables (owned by Alembic), engines and bulk reads/writes."""
