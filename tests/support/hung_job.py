"""A code location with one deliberately hung job, for the run-monitoring test."""

import time

import dagster as dg

MAX_RUNTIME_SECONDS = 3


@dg.op
def hang_forever() -> None:
    while True:  # a stuck step: only run monitoring can end this run
        time.sleep(0.5)


@dg.job(tags={"dagster/max_runtime": str(MAX_RUNTIME_SECONDS)})
def hung_job():
    hang_forever()


defs = dg.Definitions(jobs=[hung_job])
