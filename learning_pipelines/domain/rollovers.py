"""Who rolls over when: the windows a day of revision queues is built in.

A learner's queue for their day D is built in the window holding their rollover into D (D's start on their
calendar, domain/learner_calendar.py). Windows are 15 minutes of UTC time: 30- and 45-minute offsets put every
rollover on a 15-minute grid, so each window is one rollover instant for most zones. A window's build starts
BUILD_LEAD before the window with its cutoff then, so every review stored up to 30 minutes (WINDOW + BUILD_LEAD)
before a learner's rollover is in their queue, and the build has BUILD_LEAD to finish before the first rollover.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from learning_pipelines.domain.learner_calendar import day_start_seconds

WINDOW = dt.timedelta(minutes=15)
BUILD_LEAD = dt.timedelta(minutes=15)
_WINDOW_SECONDS = int(WINDOW.total_seconds())


def window_of(instant: dt.datetime) -> dt.datetime:
    """The window (its start, UTC) holding `instant` (aware)."""
    seconds = int(instant.timestamp())
    return dt.datetime.fromtimestamp(seconds - seconds % _WINDOW_SECONDS, dt.timezone.utc)


def build_time(window_start: dt.datetime) -> dt.datetime:
    """When the build of a window starts, and its cutoff."""
    return window_start - BUILD_LEAD


def rollovers(calendars: pd.DataFrame, days: list[dt.date]) -> pd.DataFrame:
    """Per calendar (timezone, day_start_hour: one row each) and day: queue_date, rollover_at (when that day
    starts), day_ends_at, window_start (all UTC)."""
    rows = []
    for zone, hour in calendars[["timezone", "day_start_hour"]].itertuples(index=False):
        for day in days:
            start = day_start_seconds(day, zone, int(hour))
            end = day_start_seconds(day + dt.timedelta(days=1), zone, int(hour))
            rows.append((zone, int(hour), day, start, end, start - start % _WINDOW_SECONDS))
    frame = pd.DataFrame(rows, columns=["timezone", "day_start_hour", "queue_date", "rollover_at", "day_ends_at",
                                        "window_start"])
    for column in ("rollover_at", "day_ends_at", "window_start"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame


def _days_around(instant: dt.datetime) -> list[dt.date]:
    """Every day some calendar may start within a day of `instant` (UTC offsets run from -12 to +14 hours)."""
    utc_day = instant.astimezone(dt.timezone.utc).date()
    return [utc_day + dt.timedelta(days=offset) for offset in (-1, 0, 1, 2)]


def rolling_over_in(calendars: pd.DataFrame, window_start: dt.datetime) -> pd.DataFrame:
    """The calendars whose rollover falls in the window starting at `window_start`, with the day they roll into:
    rollovers' rows for that window."""
    every = rollovers(calendars, _days_around(window_start))
    return every.loc[every["window_start"] == pd.Timestamp(window_start)].reset_index(drop=True)


def windows_due(calendars: pd.DataFrame, after: dt.datetime, until: dt.datetime) -> pd.DataFrame:
    """The (window_start, queue_date) pairs with at least one rollover whose build time is in (after, until],
    in the order their builds are due."""
    days = sorted({day for instant in (after, until) for day in _days_around(instant)}
                  | {after.date() + dt.timedelta(days=n) for n in range(max(0, (until - after).days) + 1)})
    every = rollovers(calendars, days)
    builds = every["window_start"] - pd.Timedelta(BUILD_LEAD)
    due = every.loc[(builds > pd.Timestamp(after)) & (builds <= pd.Timestamp(until)), ["window_start", "queue_date"]]
    return due.drop_duplicates().sort_values(["window_start", "queue_date"]).reset_index(drop=True)


def day_starts_seconds(learners: pd.DataFrame, day: dt.date) -> np.ndarray:
    """When `day` starts (seconds since the epoch, UTC) for each of `learners` (timezone, day_start_hour), computed
    once per distinct calendar."""
    codes, calendars = pd.factorize(pd.MultiIndex.from_arrays([learners["timezone"].to_numpy(object),
                                                               learners["day_start_hour"].to_numpy(np.int64)]))
    starts = np.array([day_start_seconds(day, zone, int(hour)) for zone, hour in calendars], dtype=np.int64)
    return starts[codes]


def in_window(learners: pd.DataFrame, day: dt.date, window_start: dt.datetime | None) -> np.ndarray:
    """Which `learners` (timezone, day_start_hour) roll over into `day` inside the window (all when None)."""
    if window_start is None:
        return np.ones(len(learners), dtype=bool)
    return windows_of(day_starts_seconds(learners, day)) == int(window_start.timestamp())


def windows_of(day_starts: np.ndarray) -> np.ndarray:
    """The window start (seconds since the epoch, UTC) of each day start."""
    return day_starts - day_starts % _WINDOW_SECONDS
