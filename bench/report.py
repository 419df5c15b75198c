"""Write one benchmark's section into BENCHMARKS.md (replacing its previous figures)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import resource
from pathlib import Path

# A trial run (small sizes) points BENCHMARKS_MD elsewhere so that the published figures stay as they are.
BENCHMARKS = Path(os.environ.get("BENCHMARKS_MD") or Path(__file__).resolve().parents[1] / "BENCHMARKS.md")
HEADER = "# Benchmarks\n\nWritten by `make bench` (each script replaces its own section).\n"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def peak_rss_mib() -> float:
    """This process's peak resident memory so far. Linux's VmHWM where there is one: getrusage's maxrss is
    carried over from the parent across fork and exec, so a bench's child would report the parent's peak."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_section(name: str, body: str) -> None:
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    section = f"## {name}\n\n_{dt.date.today().isoformat()}, {machine()}_\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    BENCHMARKS.write_text(text)


def publish(name: str, lines: list[str], figures: dict | None = None) -> None:
    """Print a benchmark's report and write it as its section of BENCHMARKS.md; `figures`, when given, end both
    as one JSON object (the last line printed, for whoever tracks the numbers)."""
    if figures is not None:
        lines = [*lines, "", "```json", json.dumps(figures), "```"]
    body = "\n".join(lines)
    print(body)
    write_section(name, body)
    if figures is not None:
        print(json.dumps(figures))
