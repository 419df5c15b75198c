"""Argument types shared by the subcommands: values the warehouse cannot hold are refused while parsing (exit 2,
naming the argument), not by the database driver later."""

from __future__ import annotations

import argparse

# The warehouse's ids are BIGINT: signed 64-bit (SQLite's INTEGER too; its driver cannot even bind a larger one).
SMALLEST_ID, LARGEST_ID = -(2**63), 2**63 - 1


def warehouse_id(text: str) -> int:
    """A user, concept or resource id as typed: a whole number the warehouse's BIGINT columns can hold."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not SMALLEST_ID <= value <= LARGEST_ID:
        raise argparse.ArgumentTypeError(
            f"{text} is outside the ids the warehouse can hold (signed 64-bit, {SMALLEST_ID} to {LARGEST_ID})")
    return value
