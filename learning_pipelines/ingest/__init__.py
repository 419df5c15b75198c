"""Review-log importers (CSV, Parquet, Anki collections) with validation and quarantine."""
