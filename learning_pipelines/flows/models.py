"""Where a recipe keeps model checkpoints: anything that saves bytes under a name and loads them back by the URI it
gave (the code location's ModelStore resource, a bench's folder)."""

from __future__ import annotations

from typing import Protocol


class CheckpointStore(Protocol):
    def save(self, name: str, payload: bytes) -> str: ...

    def load(self, uri: str) -> bytes: ...
