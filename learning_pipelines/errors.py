"""Errors as one line a person can act on: the text of any error on one line, and the database failure behind
an exception whatever wraps it (SQLAlchemy, pandas). Imports nothing of the package and no database library, so
every layer can use it and the command line stays quick to start; the command line's error boundary
(`learning_pipelines.cli.main`) is built on it."""

from __future__ import annotations

import dataclasses
import sys


def one_line(text: object) -> str:
    """`text` (or an error's message) with every run of whitespace, newlines included, as one space."""
    return " ".join(str(text).split())


@dataclasses.dataclass(frozen=True)
class DatabaseFailure:
    """The database's own error behind an exception: the DB-API driver's (or, where it wraps none, SQLAlchemy's,
    as for a pool timeout), and SQLAlchemy's error that wrapped it, if any."""

    error: BaseException
    wrapper: BaseException | None = None

    def text(self) -> str:
        """`Class: first line`: the driver's message without the lines after its first (a DETAIL line quotes
        rows) and without SQLAlchemy's statement and parameters."""
        message = str(self.error).split(" (Background on this error at:")[0].strip()
        first_line = one_line(message.splitlines()[0]) if message else ""
        return f"{type(self.error).__name__}: {first_line}" if first_line else type(self.error).__name__

    @property
    def operational(self) -> bool:
        """PEP 249's operational and interface errors: the server unreachable, the connection lost, a lock or a
        transaction aborted by the database; running the command again may succeed."""
        return any(cls.__name__ in _OPERATIONAL and cls.__module__ != "builtins" for cls in type(self.error).__mro__)

    @property
    def connecting(self) -> bool:
        """Whether it failed while connecting: the server unreachable, or refusing this URL's database or role."""
        if self.wrapper is None or not self.operational:
            return False
        if type(self.wrapper).__name__ == "TimeoutError":  # the pool gave no connection in time
            return True
        # SQLAlchemy raises a failed connect with no statement, and a connection lost later as invalidated.
        wrapper = self.wrapper
        return getattr(wrapper, "statement", "") is None and not getattr(wrapper, "connection_invalidated", True)


_OPERATIONAL = ("OperationalError", "InterfaceError", "TimeoutError", "DisconnectionError")


def database_failure(error: BaseException) -> DatabaseFailure | None:
    """The database failure behind `error`, found through SQLAlchemy's `orig` and the chain of causes and
    contexts (pandas raises its own DatabaseError from SQLAlchemy's, which wraps the driver's); None when no
    database error is behind it."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    wrapper, pending, seen = None, [error], set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        is_sqlalchemy = sqlalchemy_exc is not None and isinstance(
            current, (sqlalchemy_exc.DBAPIError, sqlalchemy_exc.TimeoutError, sqlalchemy_exc.DisconnectionError))
        if is_sqlalchemy and wrapper is None:
            wrapper = current
        if _is_driver_error(current):
            return DatabaseFailure(current, wrapper)
        behind = (getattr(current, "orig", None), current.__cause__,
                  None if current.__suppress_context__ else current.__context__)
        pending += [e for e in behind if isinstance(e, BaseException)]
    return DatabaseFailure(wrapper, wrapper) if wrapper is not None else None


def _is_driver_error(error: BaseException) -> bool:
    # PEP 249: a driver module declares `apilevel` and roots its exceptions at its own `Error`. Looked up among the
    # modules already imported: an error of a driver that was never imported cannot have been raised.
    for cls in type(error).__mro__:
        module = sys.modules.get(cls.__module__.partition(".")[0])
        if (cls.__name__ == "Error" and getattr(module, "apilevel", None) == "2.0"
                and getattr(module, "Error", None) is cls):
            return True
    return False
