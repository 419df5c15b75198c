"""Passwords never appear in what `deploy verify` prints: URLs are shown with *** for theirs, and error texts
(a driver's may quote its connection string) have every password it knows replaced."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from learning_pipelines.errors import one_line

# The longest error text printed: the table's DETAIL column stays readable.
MAX_SHOWN_CHARS = 400


def shown_url(url: str) -> str:
    """Any URL as it may be printed: its password as ***."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "(a URL that does not parse)"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def url_password(url: str) -> str | None:
    try:
        return urllib.parse.unquote(urllib.parse.urlsplit(url).password or "") or None
    except ValueError:
        return None


class Redactor:
    """The passwords of the URLs it has been given, kept out of any text it scrubs."""

    def __init__(self, urls: Iterable[str]):
        self.passwords = {password for password in map(url_password, urls) if password}

    def add_url(self, url: str) -> None:
        self.passwords |= {url_password(url)} - {None}

    def reason(self, error: BaseException) -> str:
        """An exception as one line without passwords (a driver's error may quote its connection string)."""
        cause = getattr(error, "orig", None) or error
        return self.scrub(one_line(str(cause)).split(" (Background on this error at:")[0] or type(cause).__name__)

    def scrub(self, text: str) -> str:
        for password in sorted(self.passwords, key=len, reverse=True):
            for form in {password, quote(password, safe=""), quote_plus(password)}:
                text = text.replace(form, "***")
        return text[:MAX_SHOWN_CHARS]
