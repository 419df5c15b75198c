"""Pure computation: numpy, pandas and torch only. No Dagster, no SQLAlchemy."""
