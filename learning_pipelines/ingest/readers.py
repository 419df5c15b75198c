"""Readers that turn review files into text rows with their line numbers, ready for validation.

Every reader returns the canonical columns of REQUIRED_COLUMNS (plus those optional
columns the file has) as text, so one validation path serves every format.
"""

from __future__ import annotations

import csv
import io
import shutil
import sqlite3
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

from learning_pipelines.ingest.validation import ReviewFileError

CSV_SUFFIXES = (".csv", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
ANKI_SUFFIXES = (".anki2", ".anki21", ".colpkg", ".apkg")
# Anki's revlog: ease 0 marks a manual reschedule, type 4/5 "manual"/"rescheduled" entries;
# neither is an answer to a card, so neither is a review.
ANKI_MANUAL_TYPES = (4, 5)


def read_review_file(path: Path) -> tuple[pd.DataFrame, int]:
    """(text rows with a line_number column, count of entries that are not reviews)."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise ReviewFileError(f"{path}: no such file")
    if suffix in CSV_SUFFIXES:
        return read_csv_rows(path), 0
    if suffix in PARQUET_SUFFIXES:
        return read_parquet_rows(path), 0
    if suffix in ANKI_SUFFIXES:
        return read_anki_revlog(path)
    raise ReviewFileError(f"{path}: unknown format {suffix!r}; use one of "
                          f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES + ANKI_SUFFIXES)}")


def read_csv_rows(path: Path) -> pd.DataFrame:
    """Rows of the wrong width (a truncated last line, a stray comma) are kept as rows with a
    `_field_count_error`, so they are rejected with a reason instead of failing the file."""
    text = path.read_bytes().decode("utf-8", errors="replace").replace("\0", "")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ReviewFileError(f"{path}: empty file, no header line") from None
    rows, line_numbers, width_errors = [], [], []
    for row in reader:
        if not row:
            continue
        line_numbers.append(reader.line_num)
        if len(row) == len(header):
            rows.append(row)
            width_errors.append("")
        else:
            padded = (row + [""] * len(header))[: len(header)]
            rows.append(padded)
            width_errors.append(f"line has {len(row)} field(s), expected {len(header)} (truncated or malformed)")
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    frame["line_number"] = line_numbers
    frame["_field_count_error"] = width_errors
    return frame


def read_parquet_rows(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise ReviewFileError(f"{path}: not a readable Parquet file ({error})") from error
    text = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            text[column] = values.map(lambda v: v.isoformat() if pd.notna(v) else "")
        else:
            text[column] = values.map(lambda v: "" if pd.isna(v) else str(v))
    text["line_number"] = range(1, len(text) + 1)
    return text


def read_anki_revlog(path: Path) -> tuple[pd.DataFrame, int]:
    """The revlog table of an Anki collection (`collection.anki2`) or package (`.colpkg`/`.apkg`)."""
    with tempfile.TemporaryDirectory() as scratch:
        database = _anki_database(path, Path(scratch))
        try:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
                revlog = pd.read_sql_query("SELECT id, cid, ease, time, type FROM revlog ORDER BY id", conn)
        except sqlite3.DatabaseError as error:
            raise ReviewFileError(f"{path}: not an Anki collection with a revlog table ({error})") from error
    not_review = (revlog["ease"] == 0) | revlog["type"].isin(ANKI_MANUAL_TYPES)
    reviews = revlog.loc[~not_review]
    reviewed_at = pd.to_datetime(reviews["id"], unit="ms", utc=True)
    text = pd.DataFrame({
        "card_id": reviews["cid"].astype(str),
        "review_rating": reviews["ease"].astype(str),
        "review_time": reviewed_at.map(lambda t: t.isoformat()),
        "review_duration": reviews["time"].astype(str),
        "state": reviews["type"].astype(str),
        "line_number": reviews.index + 1,  # position in revlog, by id
    })
    return text.reset_index(drop=True), int(not_review.sum())


def _anki_database(path: Path, scratch: Path) -> Path:
    if path.suffix.lower() in (".anki2", ".anki21"):
        return path
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise ReviewFileError(f"{path}: not an Anki package (not a zip archive)") from error
    with archive:
        names = set(archive.namelist())
        target = scratch / "collection.sqlite"
        if "collection.anki21b" in names:  # current Anki: zstd-compressed SQLite
            import zstandard

            with archive.open("collection.anki21b") as source, open(target, "wb") as sink:
                zstandard.ZstdDecompressor().copy_stream(source, sink)
            return target
        for name in ("collection.anki21", "collection.anki2"):
            if name in names:
                with archive.open(name) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink)
                return target
    raise ReviewFileError(f"{path}: Anki package without a collection (expected collection.anki21b/.anki21/.anki2)")

