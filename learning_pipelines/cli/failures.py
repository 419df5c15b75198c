"""What a command that failed prints: one line on stderr, and its exit code (used by `main`, the boundary)."""

from __future__ import annotations

import sys

from learning_pipelines import errors

# Exit codes of a command that failed: the warehouse failed it (running it again may succeed), or the user
# asked for something that cannot be (argparse exits 2 on a bad argument too).
FAILED, REFUSED = 1, 2


def one_line_failure(error: Exception, database_url: str | None) -> int | None:
    """Prints one line for a failure of the warehouse (whatever wraps it), of its URL or of a file, with the
    password hidden and never a statement or its parameters (learners' rows); returns the exit code. None: not
    such an error (a bug, whose traceback is wanted)."""
    import sqlalchemy as sa

    from learning_pipelines.db.engine import DATABASE_URL_ENV, resolve_database_url
    from learning_pipelines.db.maintenance import hide_password, shown_url

    url = resolve_database_url(database_url)
    problem = _url_problem(url)
    if problem is not None and type(problem) is type(error) and str(problem) == str(error):
        # Neither the URL nor a parser's complaint is shown: where a URL does not parse, its password cannot be
        # told from the rest; SQLAlchemy's own complaints (an unknown dialect) quote none of it.
        reason = f": {errors.one_line(error)}" if isinstance(error, sa.exc.ArgumentError) else " (it does not parse)"
        print(f"error: the warehouse URL (--database-url, else ${DATABASE_URL_ENV}) is not one SQLAlchemy can "
              f"use{reason}; e.g. postgresql+psycopg2://USER@HOST:5432/DATABASE or sqlite:///PATH", file=sys.stderr)
        return REFUSED
    failure = errors.database_failure(error)
    if failure is None and isinstance(error, OSError) and error.filename is not None:
        print(f"error: {error.filename}: {error.strerror or errors.one_line(error)}", file=sys.stderr)
        return REFUSED  # a file named on the command line that cannot be read or written
    if failure is None:
        return None  # a socket's or a process's error, or a bug
    if "sentry_sdk" in sys.modules:  # error tracking is on (SENTRY_DSN): it hears of the failure as before
        sys.modules["sentry_sdk"].capture_exception(error)
    if failure.connecting:
        question = ("can this user read and write the file and its directory" if url.startswith("sqlite")
                    else "is it running")
        print(f"error: cannot connect to the warehouse at {shown_url(url)}: {hide_password(failure.text(), url)} "
              f"({question}, and is that its URL? --database-url, else ${DATABASE_URL_ENV})", file=sys.stderr)
        return FAILED
    text = failure.text()
    if any(missing in text for missing in ("no such table", "no such column", "UndefinedTable", "UndefinedColumn")):
        advice = "is its schema at head? `learning-pipelines db upgrade`"
    elif failure.operational:
        advice = "the command's open transaction was rolled back: run it again"
    else:
        advice = "the command's open transaction was rolled back"
    print(f"error: the warehouse at {shown_url(url)} failed: {hide_password(text, url)} ({advice})", file=sys.stderr)
    return FAILED


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe nobody reads any more (`| head` has exited), rather than the broken pipe being a
    socket's or a child process's, which is a failure to show."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or stdout is no file: as the docs do
        return True


def _url_problem(url: str) -> Exception | None:
    """What SQLAlchemy raises for this URL before connecting (it does not parse, its dialect is unknown)."""
    import sqlalchemy as sa

    try:
        sa.engine.make_url(url).get_dialect()
    except Exception as problem:  # noqa: BLE001 - compared with the command's error by the caller
        return problem
    return None
