"""Screenshots of the Dagster UI over the demo's instance, for the README: every picture it shows (PAGES).
Run `make demo` first; `make screenshots` runs this.

Starts dagster-webserver on a free port in its own session (stopped by pid afterwards) and photographs each
page with headless Chromium, which gets a few seconds of virtual time to render the single-page app.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAGES = {
    "overview_timeline.png": "/overview/activity/timeline",
    "revision_queues_asset.png": "/assets/revision_queues",
    "automation.png": "/automation",
    "card_memory_states.png": "/assets/card_memory_states",
    # A day of rollover windows: each window's states refresh, then its shard runs (tagged with the window).
    "rollover_window_runs.png": "/runs?q%5B%5D=job%3Arevision_queues_job",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"dagster-webserver did not answer at {url} within {seconds:.0f} s")


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium is missing: `apt-get install chromium` (make screenshots installs it on Debian)", file=sys.stderr)
        return 2
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DAGSTER_HOME": str((ROOT / "dagster_home").resolve())}
    # What the UI's "Skip" on its first-visit community dialog records, so the dialog does not cover the pages.
    subprocess.run([sys.executable, "-c", "from dagster._core.nux import set_nux_seen; set_nux_seen()"], env=env,
                   check=True)
    server = subprocess.Popen([str(BIN / "dagster-webserver"), "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1",
                               "-p", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_up(url)
        for name, path in PAGES.items():
            target = ROOT / "docs" / name
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--window-size=1600,1000", "--virtual-time-budget=20000", f"--screenshot={target}",
                            f"{url}{path}"], check=True, capture_output=True, timeout=180)
            print(f"{target.relative_to(ROOT)}: {url}{path}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
