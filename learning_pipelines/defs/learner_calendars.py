"""What an asset step says of learners whose calendar a recipe read as UTC (db/learner_calendars.py)."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from learning_pipelines.observability.structured_logs import asset_logger

# Past this many learners in one step, the rest are counted in one line: learner_calendar_fallbacks lists them all.
MOST_LEARNERS_NAMED = 20


def warn_of_calendar_fallbacks(context: dg.AssetExecutionContext, fallbacks: pd.DataFrame) -> None:
    """A warning per learner of `fallbacks` (user_id, timezone as stored): their time zone is not a key of tzdata,
    so their days were counted in UTC; every other learner's were not affected."""
    log = asset_logger(context)
    for row in fallbacks.head(MOST_LEARNERS_NAMED).itertuples():
        log.warning("time zone is not an IANA key of tzdata: this learner's calendar was read as UTC "
                    "(logged in learner_calendar_fallbacks; set users.timezone to a key)",
                    user_id=int(row.user_id), timezone=row.timezone)
    if len(fallbacks) > MOST_LEARNERS_NAMED:
        log.warning("more learners' calendars were read as UTC: see learner_calendar_fallbacks",
                    n_learners=len(fallbacks) - MOST_LEARNERS_NAMED)
