"""A picture of the Grafana dashboard for the README (docs/dashboard.png), drawn without Grafana: Grafana is not in
the package registries this project installs from. `make screenshots` runs this after `make demo`.

It starts `learning-pipelines metrics` over the demo's instance and warehouse ($DAGSTER_HOME and
$LEARNING_PIPELINES_DATABASE_URL as the CLI reads them) and a real Prometheus configured as monitoring/prometheus.yml
(with its alert rules) scraping it every 5 seconds, lets it scrape for a while, then asks Prometheus every query of
every panel of monitoring/grafana/dashboards/learning_pipelines.json, as Grafana would (a range query for a time
series, an instant query for a stat or a bar gauge), and lays the answers out as the dashboard does: its rows, its
panels at their grid positions, their titles, legends and units. Headless Chromium photographs the page. Each
process it starts is stopped by its pid.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from take_screenshots import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DASHBOARD = ROOT / "monitoring" / "grafana" / "dashboards" / "learning_pipelines.json"
PICTURE = "dashboard.png"
SCRAPE_SECONDS = 5
GRID_PX = 22  # height of one grid unit; the dashboard is 24 units wide
WIDTH_PX = 1600
COLORS = ("#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a", "#96d98d", "#ffa6b0")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _get(base: str, path: str, **params) -> dict:
    with urllib.request.urlopen(f"{base}{path}?{urllib.parse.urlencode(params)}", timeout=30) as response:
        body = json.loads(response.read())
    if body["status"] != "success":
        raise SystemExit(f"Prometheus refused {params}: {body}")
    return body["data"]


def _wait(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"waited {seconds:.0f} s for {what}")
        time.sleep(1)


def _format(value: float, unit: str) -> str:
    if value != value:
        return "NaN"
    if unit == "percentunit":
        return f"{value * 100:.1f} %"
    if unit == "s":
        for size, name in ((86400, "d"), (3600, "h"), (60, "min")):
            if abs(value) >= 2 * size:
                return f"{value / size:.1f} {name}"
        return f"{value:.0f} s"
    if unit == "h":
        return f"{value:.1f} h"
    return f"{value:,.0f}" if value == int(value) else f"{value:.4g}"


def _legend(target: dict, labels: dict) -> str:
    legend = target.get("legendFormat")
    if legend:
        return LEGEND_LABEL.sub(lambda m: labels.get(m[1], ""), legend)
    shown = {k: v for k, v in labels.items() if k not in ("__name__", "job", "instance")}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or target["expr"]


def _unit(panel: dict, ref: str) -> str:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        if override["matcher"] == {"id": "byFrameRefID", "options": ref}:
            unit = next((p["value"] for p in override["properties"] if p["id"] == "unit"), unit)
    return unit


def _series(base: str, panel: dict, start: float, end: float) -> list[tuple[str, str, list[tuple[float, float]]]]:
    """(legend, unit, points) of every series every target of `panel` answers."""
    found = []
    for target in panel["targets"]:
        if panel["type"] == "timeseries":
            data = _get(base, "/api/v1/query_range", query=target["expr"], start=start, end=end, step=SCRAPE_SECONDS)
            answers = [(s["metric"], [(float(t), float(v)) for t, v in s["values"]]) for s in data["result"]]
        else:
            data = _get(base, "/api/v1/query", query=target["expr"], time=end)
            answers = [(s["metric"], [(float(s["value"][0]), float(s["value"][1]))]) for s in data["result"]]
        found += [(_legend(target, labels), _unit(panel, target["refId"]), points) for labels, points in answers]
    return found


def _timeseries_svg(series, width: int, height: int, start: float, end: float) -> str:
    values = [v for _, _, points in series for _, v in points if v == v]
    low, high = min(values + [0.0]), max(values + [0.0])
    high = high if high > low else low + 1

    def xy(t: float, v: float) -> str:
        x = (t - start) / (end - start) * (width - 70) + 60
        return f"{x:.1f},{height - 18 - (v - low) / (high - low) * (height - 28):.1f}"

    unit = series[0][1]
    first, last = (dt.datetime.fromtimestamp(at, dt.timezone.utc) for at in (start, end))
    lines = [f'<text x="2" y="12" class="axis">{html.escape(_format(high, unit))}</text>',
             f'<text x="2" y="{height - 18}" class="axis">{html.escape(_format(low, unit))}</text>',
             f'<text x="60" y="{height - 3}" class="axis">{first:%H:%M}</text>',
             f'<text x="{width - 45}" y="{height - 3}" class="axis">{last:%H:%M} UTC</text>',
             f'<line x1="60" y1="{height - 18}" x2="{width - 10}" y2="{height - 18}" class="grid"/>']
    for n, (_, _, points) in enumerate(series):
        drawn = " ".join(xy(t, v) for t, v in points if v == v)
        lines.append(f'<polyline points="{drawn}" fill="none" stroke="{COLORS[n % len(COLORS)]}" stroke-width="2"/>')
    return f'<svg width="{width}" height="{height}">{"".join(lines)}</svg>'


def _panel_html(base: str, panel: dict, start: float, end: float) -> str:
    pos = panel["gridPos"]
    width = pos["w"] * WIDTH_PX // 24 - 16
    style = f"grid-column: {pos['x'] + 1} / span {pos['w']}; grid-row: {pos['y'] + 1} / span {pos['h']};"
    title = f'<div class="title">{html.escape(panel["title"])}</div>'
    if panel["type"] == "row":
        return f'<div class="row" style="{style}">{html.escape(panel["title"])}</div>'
    series = _series(base, panel, start, end)
    if not series:
        no_value = panel.get("fieldConfig", {}).get("defaults", {}).get("noValue", "No data")
        return f'<div class="panel" style="{style}">{title}<div class="novalue">{html.escape(no_value)}</div></div>'
    if panel["type"] == "timeseries":
        body = _timeseries_svg(series, width, pos["h"] * GRID_PX - 70, start, end)
        legend = "".join(f'<span><i style="background:{COLORS[n % len(COLORS)]}"></i>{html.escape(name)}: '
                         f'{html.escape(_format(points[-1][1], unit))}</span>'
                         for n, (name, unit, points) in enumerate(series))
        body += f'<div class="legend">{legend}</div>'
    elif panel["type"] == "bargauge":
        top = max(points[-1][1] for _, _, points in series) or 1
        body = "".join(f'<div class="bar"><span class="name">{html.escape(name)}</span><span class="track"><span '
                       f'class="fill" style="width:{max(points[-1][1], 0) / top * 100:.1f}%;background:'
                       f'{COLORS[n % len(COLORS)]}"></span></span><span class="value">'
                       f'{html.escape(_format(points[-1][1], unit))}</span></div>'
                       for n, (name, unit, points) in enumerate(series))
    else:  # stat
        body = '<div class="stats">' + "".join(
            f'<div class="stat"><b>{html.escape(_format(points[-1][1], unit))}</b><small>{html.escape(name)}</small></div>'
            for name, unit, points in series) + "</div>"
    return f'<div class="panel" style="{style}">{title}{body}</div>'


STYLE = """
body { background: #111217; color: #ccccdc; font: 13px sans-serif; margin: 8px; width: WIDTH_PXpx; }
h1 { font-size: 17px; margin: 4px 0; } p.note { margin: 2px 0 8px; color: #9fa0b0; }
.grid { display: grid; grid-template-columns: repeat(24, 1fr); grid-auto-rows: ROW_PXpx; gap: 4px; }
.panel { background: #181b1f; border: 1px solid #2c3235; border-radius: 3px; padding: 6px; overflow: hidden; }
.row { font-size: 15px; font-weight: bold; color: #fff; border-bottom: 1px solid #444; padding-top: 2px; }
.title { font-weight: bold; margin-bottom: 4px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.axis { fill: #9fa0b0; font-size: 10px; } line.grid { stroke: #444; }
.legend span { margin-right: 12px; white-space: nowrap; } .legend i { display: inline-block; width: 10px;
  height: 3px; margin-right: 4px; vertical-align: middle; }
.stats { display: flex; gap: 24px; align-items: center; justify-content: space-around; height: 75%; }
.stat b { display: block; font-size: 30px; color: #73bf69; } .stat small { color: #9fa0b0; }
.bar { display: flex; align-items: center; gap: 6px; height: 14px; font-size: 12px; } .bar .name { width: 28%;
  overflow: hidden; white-space: nowrap; } .bar .track { flex: 1; background: #22252b; height: 10px; }
  .bar .fill { display: block; height: 10px; } .bar .value { width: 70px; text-align: right; }
.novalue { color: #9fa0b0; font-size: 20px; text-align: center; margin-top: 40px; }
""".replace("WIDTH_PX", str(WIDTH_PX)).replace("ROW_PX", str(GRID_PX - 4))


def render(base: str, started: float) -> tuple[str, int]:
    """The page, and its height in pixels."""
    dashboard = json.loads(DASHBOARD.read_text())
    end = time.time()
    panels = "".join(_panel_html(base, panel, started, end) for panel in dashboard["panels"])
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    minutes = (end - started) / 60
    page = (f"<!doctype html><html><head><meta charset='utf-8'><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(dashboard['title'])} (uid {html.escape(dashboard['uid'])})</h1>"
            f"<p class='note'>Not Grafana: a render of {DASHBOARD.relative_to(ROOT)}'s rows and panels, each drawn from "
            f"its own queries, answered by a real Prometheus that scraped `learning-pipelines metrics` over the demo "
            f"for {minutes:.0f} minutes (docs/render_dashboard.py, "
            f"{dt.datetime.fromtimestamp(end, dt.timezone.utc):%Y-%m-%d %H:%M} UTC).</p>"
            f"<div class='grid'>{panels}</div></body></html>")
    return page, rows * GRID_PX + 90


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3, help="how long Prometheus scrapes before the picture")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    prometheus_binary = shutil.which("prometheus")
    if chromium is None or prometheus_binary is None:
        print("chromium and prometheus are needed (`make chromium promtool` installs them on Debian)", file=sys.stderr)
        return 2
    home = os.environ.get("DAGSTER_HOME") or str(ROOT / "dagster_home")
    processes = []
    with tempfile.TemporaryDirectory(prefix="render_dashboard_") as scratch:
        scratch = Path(scratch)
        try:
            exporter_port = free_port()
            with open(scratch / "exporter.log", "w") as log:  # the process writes to its own copy
                exporter = subprocess.Popen(
                    [str(BIN / "learning-pipelines"), "metrics", "--port", str(exporter_port)],
                    env={**os.environ, "DAGSTER_HOME": home}, stdout=subprocess.DEVNULL, stderr=log,
                    start_new_session=True)
            processes.append(exporter)
            config = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
            config["global"].update(scrape_interval=f"{SCRAPE_SECONDS}s", evaluation_interval=f"{SCRAPE_SECONDS}s")
            config["rule_files"] = [str(ROOT / "monitoring" / name) for name in config["rule_files"]]
            config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{exporter_port}"]}]
            (scratch / "prometheus.yml").write_text(yaml.safe_dump(config))
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            with open(scratch / "prometheus.log", "w") as log:
                processes.append(subprocess.Popen(
                    [prometheus_binary, f"--config.file={scratch / 'prometheus.yml'}",
                     f"--storage.tsdb.path={scratch / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                    stdout=subprocess.DEVNULL, stderr=log, start_new_session=True))
            started = time.time()

            def scraped() -> bool:
                if exporter.poll() is not None:
                    raise SystemExit("the exporter stopped:\n" + (scratch / "exporter.log").read_text()[-3000:])
                try:
                    return bool(_get(base, "/api/v1/query", query='up{job="learning_pipelines"} == 1')["result"])
                except OSError:
                    return False

            _wait(scraped, "Prometheus to scrape the exporter")
            print(f"Prometheus scrapes the exporter; drawing the dashboard in {args.minutes:g} minutes")
            time.sleep(max(0.0, started + args.minutes * 60 - time.time()))
            page, height = render(base, started)
        finally:  # SIGTERM to each by its pid (both stop on it), SIGKILL to one still there after 15 s
            for process in processes:
                process.terminate()
            for process in processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(15)
                process.kill()
        (scratch / "dashboard.html").write_text(page)
        target = ROOT / "docs" / PICTURE
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size={WIDTH_PX + 16},{height}", f"--screenshot={target}",
                        (scratch / "dashboard.html").as_uri()], check=True, capture_output=True, timeout=180)
    print(f"{target.relative_to(ROOT)}: {DASHBOARD.relative_to(ROOT)} over the demo, {args.minutes:g} minutes of scrapes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
