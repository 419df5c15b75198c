"""What a recipe's summary says of its run, in values a UI can show without knowing the recipe: numbers, text,
JSON-like values, and the two kinds that need telling apart (a markdown table, an instant)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd


@dataclasses.dataclass(frozen=True)
class Markdown:
    text: str


@dataclasses.dataclass(frozen=True)
class Instant:
    at: dt.datetime | float  # a datetime, or seconds since the epoch


def preview(frame: pd.DataFrame | None, columns: list[str], rows: int = 5) -> Markdown:
    """The first `rows` rows of what was written (`columns` of `frame`) as a markdown table."""
    if frame is None or len(frame) == 0:
        return Markdown("nothing written")
    return Markdown(frame.head(rows)[columns].to_markdown(index=False, floatfmt=".3f"))
