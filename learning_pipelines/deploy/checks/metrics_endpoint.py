"""The check of the metrics exporter: it answers with learning_pipelines_ metrics and reaches the warehouse."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from learning_pipelines.db.engine import DATABASE_URL_ENV
from learning_pipelines.deploy.checks.session import CONNECT_TIMEOUT_S, Outcome, Session
from learning_pipelines.deploy.redaction import shown_url
from learning_pipelines.errors import one_line


def check_metrics(session: Session) -> Outcome:
    url = session.target.metrics_url
    shown = shown_url(url)
    remedy = ("start the exporter (`learning-pipelines stack start`, or `learning-pipelines metrics --port <port>` "
              "with DAGSTER_HOME set)" + session.logs("metrics.log"))
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        return Outcome(False, f"{shown} is not an http:// or https:// URL", "pass --metrics-url http://HOST:PORT/metrics")
    try:
        with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S) as response:  # nosec B310  # http(s) checked above
            status, body = response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as error:
        return Outcome(False, f"{shown} answered HTTP {error.code}", remedy)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        return Outcome(False, f"no answer from {shown}: {session.scrub(one_line(str(reason)))}", remedy)
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            samples[name.split("{")[0]] = value
    ours = sorted(name for name in samples if name.startswith("learning_pipelines_"))
    if status != 200 or not ours:
        return Outcome(False, f"{shown} answered HTTP {status} without any learning_pipelines_ metric: is another "
                              "program listening there?", remedy)
    up = samples.get("learning_pipelines_warehouse_up", "").strip()
    if up and float(up.split()[0]) != 1:
        return Outcome(False, f"{shown} answers, but learning_pipelines_warehouse_up is {up}: the exporter cannot "
                              "reach the warehouse",
                       f"check {DATABASE_URL_ENV} in the exporter's environment and restart it"
                       + session.logs("metrics.log"))
    return Outcome(True, f"{shown} answers HTTP 200 with {len(ours)} learning_pipelines_ metric(s)"
                   + (", warehouse up" if up else ""))
