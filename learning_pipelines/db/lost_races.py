"""Errors that mean a transaction lost a race with another one, so that running the same work again succeeds."""

from __future__ import annotations

SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"


def lost_a_race(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from (SQLAlchemy's and pandas' wrappers included), is a
    PostgreSQL serialization failure or deadlock: the server rolled the transaction back to let another finish."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "pgcode", None) in (SERIALIZATION_FAILURE, DEADLOCK_DETECTED):
            return True
        error = getattr(error, "orig", None) or error.__cause__ or error.__context__
    return False
