"""A learner's calendar: their days start at `day_start_hour` in their IANA time zone. When each day starts (in
UTC), which day an instant belongs to, and when a learner next rolls over into a new day.

Days are exact on every daylight-saving change, whatever the zone's offsets (30- and 45-minute ones included):
- a `day_start_hour` that does not exist on a date (the clocks jump past it) starts the day at the jump itself:
  Australia/Lord_Howe with 2 on 2026-10-04 starts at 02:30 local, Pacific/Chatham with 3 on 2026-09-27 at 03:45;
- one that occurs twice (the clocks go back over it) starts the day at its first occurrence; the repeated hour
  belongs to the new day, so a learner's day number never goes backwards.
A local day therefore lasts 23, 23.5, 24, 24.5 or 25 hours, and an instant belongs to exactly one day.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo

import numpy as np
import pandas as pd

NS_PER_SECOND = 10**9
_EPOCH_DAY = dt.date(1970, 1, 1)


@functools.lru_cache(maxsize=4096)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


@functools.lru_cache(maxsize=1 << 16)
def day_start_seconds(day: dt.date, zone: str, day_start_hour: int) -> int:
    """When `day` starts on this calendar: seconds since the epoch, UTC."""
    tz = _zone(zone)
    local = dt.datetime.combine(day, dt.time(int(day_start_hour)))
    first = local.replace(tzinfo=tz, fold=0)
    instant = int(first.timestamp())
    if dt.datetime.fromtimestamp(instant, tz).replace(tzinfo=None) == local:
        return instant  # it exists (a repeated hour's fold=0 is its first occurrence)
    # In a gap: fold=0 reads the local time with the offset before the jump, which lands after the jump; the day
    # starts at the jump, the last instant whose offset is still the one before it, plus one step.
    before = int(first.utcoffset().total_seconds())
    low, high = instant - 24 * 3600, instant
    while high - low > 1:
        middle = (low + high) // 2
        if int(dt.datetime.fromtimestamp(middle, tz).utcoffset().total_seconds()) == before:
            low = middle
        else:
            high = middle
    return high


def day_bounds_ns(day: dt.date, zones, day_start_hours) -> tuple[np.ndarray, np.ndarray]:
    """UTC start and end (int64 ns since the epoch) of `day` on each of these calendars."""
    next_day = day + dt.timedelta(days=1)
    pairs = list(zip(np.asarray(zones, dtype=object), np.asarray(day_start_hours, dtype=np.int64)))
    start = np.fromiter((day_start_seconds(day, z, h) for z, h in pairs), dtype=np.int64, count=len(pairs))
    end = np.fromiter((day_start_seconds(next_day, z, h) for z, h in pairs), dtype=np.int64, count=len(pairs))
    return start * NS_PER_SECOND, end * NS_PER_SECOND


def day_numbers(instants_ns, zones, day_start_hours) -> np.ndarray:
    """The learner-day each instant belongs to (days since 1970-01-01 on that learner's calendar): the day whose
    start is the latest at or before it. A review at 02:00 with days starting at 04:00 belongs to the day before."""
    instants_ns = np.asarray(instants_ns, dtype=np.int64)
    zones = np.asarray(zones, dtype=object)
    hours = np.asarray(day_start_hours, dtype=np.int64)
    days = np.empty(len(instants_ns), dtype=np.int64)
    for zone in pd.unique(zones):
        in_zone = zones == zone
        for hour in np.unique(hours[in_zone]):
            mask = in_zone & (hours == hour)
            # A first guess from the offset at each instant, then corrected against the exact day starts.
            local = pd.to_datetime(instants_ns[mask], utc=True).tz_convert(zone).tz_localize(None)
            guess = ((local - pd.Timedelta(hours=int(hour))).floor("D") - pd.Timestamp(_EPOCH_DAY)).days.to_numpy()
            days[mask] = _corrected(guess, instants_ns[mask], zone, int(hour))
    return days


def _corrected(guess: np.ndarray, instants_ns: np.ndarray, zone: str, hour: int) -> np.ndarray:
    """`guess` moved to the day whose exact start is the latest at or before each instant (at most one day off)."""
    def starts_ns(days: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(days, return_inverse=True)
        seconds = np.array([day_start_seconds(_EPOCH_DAY + dt.timedelta(days=int(d)), zone, hour) for d in unique],
                           dtype=np.int64)
        return seconds[inverse] * NS_PER_SECOND

    guess = np.where(instants_ns >= starts_ns(guess + 1), guess + 1, guess)
    return np.where(instants_ns < starts_ns(guess), guess - 1, guess)


def current_day(now: dt.datetime, zone: str, day_start_hour: int) -> dt.date:
    """The learner's day that `now` (aware) falls in."""
    number = day_numbers([int(now.timestamp()) * NS_PER_SECOND], [zone], [day_start_hour])[0]
    return _EPOCH_DAY + dt.timedelta(days=int(number))


def next_rollover(now: dt.datetime, zone: str, day_start_hour: int) -> tuple[dt.date, dt.datetime]:
    """The next day the learner rolls over into after `now`, and when (UTC)."""
    following = current_day(now, zone, day_start_hour) + dt.timedelta(days=1)
    return following, dt.datetime.fromtimestamp(day_start_seconds(following, zone, day_start_hour), dt.timezone.utc)
