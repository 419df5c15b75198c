"""The alert webhook: which URLs it accepts and how a report is posted to one (no Dagster here; the resource
that holds the URL and the sensor that posts are in `defs/resources.py` and `defs/alerts.py`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

# Where run failures are posted as JSON; unset: they are recorded in the warehouse only.
ALERT_WEBHOOK_ENV = "LEARNING_PIPELINES_ALERT_WEBHOOK"
# Anything else (file:, ftp:, data:) would read or write where no webhook lives.
ALERT_WEBHOOK_SCHEMES = ("http", "https")
WEBHOOK_TIMEOUT_SECONDS = 10


def checked_webhook_url(url: str | None) -> str | None:
    """`url` when it is an http(s) URL naming a host, None when unset; else ValueError naming the variable
    and the scheme (never the URL, which may carry a token)."""
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ALERT_WEBHOOK_SCHEMES:
        scheme = f"{parts.scheme}:" if parts.scheme else "none"
        raise ValueError(f"${ALERT_WEBHOOK_ENV} must be an http:// or https:// URL, its scheme is {scheme}")
    if not parts.hostname:
        raise ValueError(f"${ALERT_WEBHOOK_ENV} must name a host ({parts.scheme}://HOST/...)")
    return url


def _http_opener() -> urllib.request.OpenerDirector:
    """An opener with handlers for http and https only (no file:, ftp: or data:) that follows no redirect."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), urllib.request.HTTPHandler(),
                    urllib.request.HTTPSHandler(), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def post_alert(url: str, report: dict) -> str:
    """POST the report as JSON to an http(s) URL (anything else: ValueError); returns the HTTP status, or
    why it could not be sent."""
    checked_webhook_url(url)
    request = urllib.request.Request(url, data=json.dumps(report).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with _http_opener().open(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            return str(response.status)
    except urllib.error.HTTPError as error:
        return str(error.code)
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        return f"unreachable: {error}"[:64]
