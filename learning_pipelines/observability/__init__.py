"""Prometheus metrics built from the Dagster instance's run records and the warehouse."""
