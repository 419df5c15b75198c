"""Named points inside the writers of learners' rows, where a fault-injection harness can stop a writer and act:
forget a learner, terminate its database session, kill its process (tests/support/faults.py).

Nothing is registered in production: reaching a point is one dictionary lookup. The harness registers a callback
in its own process (`stop_at`), or, to stop a writer it started as another process, sets PAUSE_AT_ENV to the
point's name and PAUSE_DIR_ENV to a folder holding two FIFOs: at the point the writer writes the name to
`reached`, then waits until `resume` is opened for writing (or until it is killed there).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

PAUSE_AT_ENV = "LEARNING_PIPELINES_PAUSE_AT"
PAUSE_DIR_ENV = "LEARNING_PIPELINES_PAUSE_DIR"

_callbacks: dict[str, Callable[[str], None]] = {}


def reached(point: str) -> None:
    """Called by a writer at `point` (e.g. "revision_queues.day_cleared")."""
    callback = _callbacks.get(point)
    if callback is not None:
        callback(point)
    elif os.environ.get(PAUSE_AT_ENV) == point:
        folder = Path(os.environ[PAUSE_DIR_ENV])
        with open(folder / "reached", "w") as announce:
            announce.write(point)
        with open(folder / "resume"):  # blocks until the harness opens it for writing
            pass


def stop_at(point: str, callback: Callable[[str], None]) -> None:
    _callbacks[point] = callback


def clear() -> None:
    _callbacks.clear()
