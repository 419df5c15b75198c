from pathlib import Path

import dagster as dg

from learning_pipelines.defs.app_boundary import with_app_sources
from learning_pipelines.observability import error_tracking, structured_logs

# At import, so a bad LEARNING_PIPELINES_LOG_FORMAT fails the code location's load with its message; run
# workers and Celery workers import this module too, so their steps log and report errors the same way.
structured_logs.configure()
error_tracking.init()


@dg.definitions
def defs() -> dg.Definitions:
    # The app's writes as the sources of the assets that read them (defs/app_boundary.py), so the lineage starts there.
    return error_tracking.with_failure_capture(
        with_app_sources(dg.load_from_defs_folder(path_within_project=Path(__file__).parent)))
