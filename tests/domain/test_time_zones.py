import zoneinfo

import pytest

from learning_pipelines.domain import time_zones
from learning_pipelines.domain.simulate import TIMEZONES
from tests.support.bad_time_zones import BAD_TIME_ZONES


def test_the_keys_are_tzdatas_own_list_not_the_systems():
    assert {"UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham", "Australia/Lord_Howe"} <= time_zones.tzdata_keys()
    assert "localtime" not in time_zones.tzdata_keys()  # the system's database may list it; tzdata does not
    assert time_zones.tzdata_keys() <= zoneinfo.available_timezones()


@pytest.mark.parametrize("name", [*BAD_TIME_ZONES, None, 5.5])
def test_a_value_that_is_not_an_exact_key_is_refused(name):
    assert not time_zones.is_valid(name)


def test_zoneinfo_alone_would_accept_localtime():
    """Why the check is tzdata's list and not 'zoneinfo can load it'."""
    try:
        zoneinfo.ZoneInfo("localtime")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("this system has no /usr/share/zoneinfo/localtime")
    assert not time_zones.is_valid("localtime")


@pytest.mark.parametrize("name", ["america/new_york", "America/New_York ", "America/New_York\n"])
def test_a_near_miss_is_named_with_the_key_it_spells(name):
    with pytest.raises(time_zones.InvalidTimeZone) as refused:
        time_zones.require_valid([name], ["learner 7"])
    assert str(refused.value) == (f"learner 7: time zone {name!r} is not an IANA key of tzdata "
                                  f"{time_zones.TZDATA_VERSION} (did you mean 'America/New_York'?)")
    assert "\n" not in str(refused.value)


def test_the_first_refused_learner_is_named_and_the_others_counted():
    with pytest.raises(time_zones.InvalidTimeZone, match=r"^learner 2: time zone 'Mars/Olympus' is not an IANA key of "
                       r"tzdata \w+ \(e\.g\. 'America/New_York', 'UTC'\) \(and 1 more learner"):
        time_zones.require_valid(["UTC", "Mars/Olympus", "", "Asia/Tokyo"], ["learner 1", "learner 2", "learner 3",
                                                                           "learner 4"])
    time_zones.require_valid(["UTC", "Asia/Kathmandu"], ["learner 1", "learner 2"])


def test_the_simulated_learners_time_zones_are_keys():
    assert all(map(time_zones.is_valid, TIMEZONES))
