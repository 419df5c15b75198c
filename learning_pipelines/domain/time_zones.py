"""The time zones a learner may have: the keys of the pinned tzdata package, spelled exactly as tzdata spells them.

Neither the database nor Python's zoneinfo is a sufficient check: PostgreSQL accepts 'america/new_york', '+05:30' and
'localtime', and zoneinfo accepts 'localtime' (and reads the system's database before tzdata). The warehouse holds
the same keys in `time_zones`, which `users.timezone` references (migration 0014).
"""

from __future__ import annotations

import functools
import importlib.resources

import tzdata

TZDATA_VERSION = tzdata.IANA_VERSION  # the IANA release the pinned package carries, e.g. 2026f


@functools.cache
def tzdata_keys() -> frozenset[str]:
    """Every key of the pinned tzdata (its own list, `tzdata/zones`: Africa/Abidjan ... Zulu, UTC included)."""
    listed = importlib.resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(line for line in listed.splitlines() if line)


def is_valid(name: object) -> bool:
    """Whether `name` is a key of the pinned tzdata, exactly (no case folding, no surrounding space)."""
    return isinstance(name, str) and name in tzdata_keys()


@functools.cache
def _keys_by_folded_spelling() -> dict[str, str]:
    return {key.casefold(): key for key in tzdata_keys()}


def closest_key(name: object) -> str | None:
    """The key `name` spells with another case or surrounding whitespace ('america/new_york ' -> 'America/New_York')."""
    return _keys_by_folded_spelling().get(str(name).strip().casefold())


class InvalidTimeZone(ValueError):
    """A learner's time zone that is not a key of the pinned tzdata; the message names the learner and the value."""

    def __init__(self, learner: str, name: object, n_others: int = 0):
        self.learner, self.name = learner, name
        close = closest_key(name)
        others = f" (and {n_others} more learner(s) with a time zone that is not one)" if n_others else ""
        super().__init__(f"{learner}: time zone {name!r} is not an IANA key of tzdata {TZDATA_VERSION}"
                         + (f" (did you mean {close!r}?)" if close else " (e.g. 'America/New_York', 'UTC')") + others)


def require_valid(names, learners) -> None:
    """Raises InvalidTimeZone naming the first of `learners` (labels, one per name) whose time zone in `names` is not
    a key of the pinned tzdata, and how many others are not; nothing when every one is."""
    refused = [(learner, name) for learner, name in zip(learners, names) if not is_valid(name)]
    if refused:
        raise InvalidTimeZone(*refused[0], n_others=len(refused) - 1)
