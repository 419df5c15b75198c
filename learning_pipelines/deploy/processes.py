"""The stack's processes: each spawned in the background in its own process group, with its pid file and log under
the run directory; found again by the marker in their environment; stopped with SIGTERM, then SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from learning_pipelines.deploy.topology import MARKER_ENV, StackError


def spawn(run_dir: Path, name: str, command: list[str], env: dict[str, str]) -> int:
    with open(run_dir / "logs" / f"{name}.log", "a") as log:
        # Its own session and process group: SIGTERM reaches it (a background job of bash would ignore it) and
        # stopping the group stops its children.
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=run_dir)
    (run_dir / "pids" / f"{name}.pid").write_text(str(process.pid))
    return process.pid


def listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, run_dir: Path, name: str, seconds: float) -> None:
    pid_file = run_dir / "pids" / f"{name}.pid"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if listening(host, port):
            return
        if pid_file.is_file() and not _alive(int(pid_file.read_text())):
            raise StackError(f"the {name} exited while starting; its log: {run_dir / 'logs' / f'{name}.log'}")
        time.sleep(0.5)
    raise StackError(f"the {name} is not listening on {host}:{port} after {seconds:.0f} s; "
                     f"its log: {run_dir / 'logs' / f'{name}.log'}")


def marked(marker: str) -> list[int]:
    """Live processes whose environment carries the stack's marker."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and _alive(int(entry.name)):
                found.append(int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


def group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def terminate(find: Callable[[], list[int]], grace_seconds: float) -> list[int]:
    """SIGTERM to the processes `find` lists; after `grace_seconds`, SIGKILL to whatever it lists then, again until
    it lists none (a process that appeared meanwhile included) or 10 s have passed. Returns the first list."""
    first = find()
    for pid in first:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while find() and time.monotonic() < deadline:
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while (left := find()) and time.monotonic() < deadline:
        for pid in left:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.1)
    return first


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
