"""A learner's days on their own calendar: exact on every daylight-saving change, 30- and 45-minute offsets
included, and the day an instant belongs to agrees with the days' bounds minute by minute."""

import datetime as dt
import zoneinfo

import numpy as np
import pytest

from learning_pipelines.domain import learner_calendar, rollovers
from learning_pipelines.domain.learner_calendar import day_start_seconds

# (zone, day_start_hour) pairs whose start hour the clocks jump over or repeat on one of DST_DAYS_2026.
CALENDARS = [("UTC", 4), ("Europe/Berlin", 4), ("Europe/Berlin", 2), ("America/New_York", 4), ("America/New_York", 2),
             ("America/New_York", 1), ("America/Los_Angeles", 4), ("Asia/Tokyo", 4), ("Asia/Kolkata", 4),
             ("Asia/Kathmandu", 4), ("Australia/Lord_Howe", 4), ("Australia/Lord_Howe", 2), ("Pacific/Chatham", 4),
             ("Pacific/Chatham", 3), ("America/St_Johns", 4), ("America/St_Johns", 2)]
DST_DAYS_2026 = [dt.date(2026, 3, 8), dt.date(2026, 3, 29), dt.date(2026, 4, 5), dt.date(2026, 9, 27),
                 dt.date(2026, 10, 4), dt.date(2026, 10, 25), dt.date(2026, 11, 1)]


def _local(seconds: int, zone: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, zoneinfo.ZoneInfo(zone))


@pytest.mark.parametrize("zone, hour, day, expected", [
    ("Australia/Lord_Howe", 2, dt.date(2026, 10, 4), "02:30"),  # clocks jump 02:00 -> 02:30: the day starts at the jump
    ("Pacific/Chatham", 3, dt.date(2026, 9, 27), "03:45"),  # 02:45 -> 03:45: 03:00 does not exist
    ("America/New_York", 2, dt.date(2026, 3, 8), "03:00"),  # 02:00 -> 03:00
    ("Europe/Berlin", 2, dt.date(2026, 3, 29), "03:00"),
    ("America/St_Johns", 2, dt.date(2026, 3, 8), "03:00"),
    ("America/New_York", 1, dt.date(2026, 11, 1), "01:00"),  # 01:00 occurs twice: its first occurrence (EDT)
    ("Pacific/Chatham", 3, dt.date(2026, 4, 5), "03:00"),  # 02:45-03:45 repeated: the first 03:00
    ("Asia/Kathmandu", 4, dt.date(2026, 3, 8), "04:00"),  # +05:45, no change
])
def test_a_day_starts_at_its_hour_or_at_the_jump_past_it(zone, hour, day, expected):
    start = _local(day_start_seconds(day, zone, hour), zone)
    assert (start.date(), start.strftime("%H:%M")) == (day, expected)
    if (zone, day) == ("America/New_York", dt.date(2026, 11, 1)):
        assert start.utcoffset() == dt.timedelta(hours=-4), "the first 01:00 (EDT), not the second (EST)"


def test_days_last_23_to_25_hours_and_follow_each_other():
    for zone, hour in CALENDARS:
        for day in DST_DAYS_2026:
            length = day_start_seconds(day + dt.timedelta(days=1), zone, hour) - day_start_seconds(day, zone, hour)
            assert 23 * 3600 <= length <= 25 * 3600, (zone, hour, day, length / 3600)


@pytest.mark.parametrize("zone, hour", CALENDARS)
def test_the_day_of_every_minute_agrees_with_the_days_bounds(zone, hour):
    for day in DST_DAYS_2026:
        start, end = day_start_seconds(day, zone, hour), day_start_seconds(day + dt.timedelta(days=1), zone, hour)
        minutes = np.arange(start - 3 * 3600, end + 3 * 3600, 60, dtype=np.int64)
        numbers = learner_calendar.day_numbers(minutes * 10**9, [zone] * len(minutes), [hour] * len(minutes))
        inside = (minutes >= start) & (minutes < end)
        number = (day - dt.date(1970, 1, 1)).days
        assert ((numbers == number) == inside).all(), (zone, hour, day)
        assert (np.diff(numbers) >= 0).all(), "a learner-day number never goes backwards"
        bounds = learner_calendar.day_bounds_ns(day, [zone], [hour])
        assert (bounds[0][0], bounds[1][0]) == (start * 10**9, end * 10**9)


def test_each_rollover_falls_in_one_window_on_the_15_minute_grid():
    for zone, hour in CALENDARS:
        for day in DST_DAYS_2026:
            start = day_start_seconds(day, zone, hour)
            window = rollovers.window_of(dt.datetime.fromtimestamp(start, dt.timezone.utc))
            assert window.timestamp() == start, f"{zone} starts on the grid: one instant per window"
