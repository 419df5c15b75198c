"""learning_pipelines: the learning intelligence of a spaced-repetition platform, as a Dagster code location."""
