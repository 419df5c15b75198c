import numpy as np
import pandas as pd
import pytest

from learning_pipelines.domain import learner_calendar
from learning_pipelines.domain.review_history import card_intervals, learner_day_numbers, with_learner_days


def _utc(*texts: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(texts), utc=True))


def test_a_review_in_chathams_repeated_hour_is_not_on_an_earlier_day():
    """Pacific/Chatham goes back from 03:45 to 02:45 on 2026-04-05: with days starting at 03:00, the first 03:10 is
    on the 5th, and so is the later 02:50 (the repeated hour belongs to the new day). It read as the 4th, and the
    card's next review came -1 days after its previous one."""
    first_0310, second_0250 = "2026-04-04T13:25Z", "2026-04-04T14:05Z"
    reviews = pd.DataFrame({"review_id": [1, 2], "user_id": 1, "concept_id": 1,
                            "reviewed_at": _utc(first_0310, second_0250), "timezone": "Pacific/Chatham",
                            "day_start_hour": 3})
    days = with_learner_days(reviews)
    assert days["learner_day"].tolist() == [20548, 20548]  # 2026-04-05
    prior = pd.DataFrame({"user_id": [1], "concept_id": [2], "n_prior_reviews": [1], "last_learner_day": [20000]})
    intervals = card_intervals(days[["review_id", "user_id", "concept_id", "reviewed_at", "learner_day"]], prior)
    assert intervals["elapsed_days"].tolist() == [pd.NA, 0]


@pytest.mark.parametrize("zone, hour, day", [
    ("Pacific/Chatham", 3, "2026-04-05"), ("Pacific/Chatham", 3, "2026-09-27"), ("Australia/Lord_Howe", 2, "2026-10-04"),
    ("Australia/Lord_Howe", 1, "2026-04-05"), ("America/New_York", 2, "2026-03-08"), ("America/New_York", 1, "2026-11-01"),
    ("Asia/Kathmandu", 4, "2026-06-01"), ("America/St_Johns", 0, "2026-03-08"), ("UTC", 0, "2026-01-01")])
def test_day_numbers_agree_with_the_queues_day_bounds_minute_by_minute(zone, hour, day):
    """Every minute from the day's start to its end is on that day, and the minute before it on the day before."""
    date = pd.Timestamp(day).date()
    start_ns, end_ns = (int(bound[0]) for bound in learner_calendar.day_bounds_ns(date, [zone], [hour]))
    minutes = np.arange(start_ns - 60 * 10**9, end_ns + 60 * 10**9, 60 * 10**9)
    reviewed_at = pd.Series(pd.to_datetime(minutes, utc=True))
    days = learner_day_numbers(reviewed_at, pd.Series(zone, index=reviewed_at.index),
                               pd.Series(hour, index=reviewed_at.index))
    number = (date - pd.Timestamp("1970-01-01").date()).days
    expected = np.where(minutes < start_ns, number - 1, np.where(minutes < end_ns, number, number + 1))
    np.testing.assert_array_equal(days, expected)
    assert (np.diff(days) >= 0).all()


def test_an_empty_frame_has_no_days():
    assert len(learner_day_numbers(_utc(), pd.Series([], dtype=object), pd.Series([], dtype="int64"))) == 0
