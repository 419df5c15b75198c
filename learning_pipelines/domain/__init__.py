"""Pure computation: numpy, pandas, numba (the FSRS kernel) and torch only. No Dagster, no SQLAlchemy."""
