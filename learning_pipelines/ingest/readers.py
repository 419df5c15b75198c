"""Readers that turn review files into text rows with their line numbers, ready for validation.

Every reader returns the canonical columns of REQUIRED_COLUMNS (plus those optional columns
the file has) as text, with `line_number` and `_read_error` (why the reader could not read that
row cleanly, "" when it could), so one validation path serves every format. A file that cannot
be read as a whole raises ReviewFileError, naming the file and why.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import sqlite3
import tempfile
import time
import urllib.parse
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from learning_pipelines.ingest.validation import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, ReviewFileError

CSV_SUFFIXES = (".csv", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
ANKI_SUFFIXES = (".anki2", ".anki21", ".colpkg", ".apkg")
# Anki's revlog: ease 0 marks a manual reschedule, type 4/5 "manual"/"rescheduled" entries;
# neither is an answer to a card, so neither is a review.
ANKI_MANUAL_TYPES = (4, 5)
KNOWN_COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
MAX_CSV_FIELD_CHARS = 128 * 1024  # no review value comes near; a longer field means this is not a review file
# A collection is SQLite pages of cards, notes and reviews, which compress a few times over; a
# member that grows a thousandfold is mostly one repeated byte, made to fill the disk.
MAX_UNPACK_RATIO = 1000
_RATIO_FREE_BYTES = 1 << 20  # tiny collections may compress better; below this size the ratio is not checked
_ANKI_MAX_VALUE_BYTES = 1 << 20  # revlog holds integers; a bigger value in it is a trap, not a review
_PROGRESS_EVERY = 10_000  # SQLite VM instructions between time-limit checks
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_UTF8_BOM = b"\xef\xbb\xbf"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclasses.dataclass(frozen=True)
class ReadLimits:
    """Bounds on what reading one file may cost; a file past them is refused, never half read."""

    max_unpacked_bytes: int = 512 * 2**20  # room for a heavy user's collection (media live outside it)
    anki_read_seconds: float = 120.0  # a revlog of a million reviews reads in about a second


def read_review_file(path: Path, limits: ReadLimits = ReadLimits()) -> tuple[pd.DataFrame, int]:
    """(text rows with line_number and _read_error columns, count of entries that are not reviews)."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise ReviewFileError(f"{path}: no such file")
    if path.is_dir():
        raise ReviewFileError(f"{path}: is a directory, not a review file")
    if not path.is_file():
        raise ReviewFileError(f"{path}: not a regular file (a device, pipe or socket cannot be imported)")
    if suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES + ANKI_SUFFIXES:
        raise ReviewFileError(f"{path}: unknown format {suffix!r}; use one of "
                              f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES + ANKI_SUFFIXES)}")
    try:
        if suffix in CSV_SUFFIXES:
            return read_csv_rows(path), 0
        if suffix in PARQUET_SUFFIXES:
            return read_parquet_rows(path), 0
        return read_anki_revlog(path, limits)
    except OSError as error:
        raise ReviewFileError(f"{path}: cannot be read ({error.strerror or error})") from error


def read_csv_rows(path: Path) -> pd.DataFrame:
    """One row per physical line: a quoted field never runs onto the next line, so a damaged
    line (an unbalanced quote, bytes that are not UTF-8, the wrong number of fields) is a row
    with a `_read_error` and every line after it is read as its own row."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    data = path.read_bytes()
    lines = _LINE_BREAK.split(data.removeprefix(_UTF8_BOM))
    header = _header(path, lines[0], delimiter)
    positions = {name: header.index(name) for name in KNOWN_COLUMNS if name in header}
    cells: dict[str, list[str]] = {name: [] for name in positions}
    line_numbers, read_errors = [], []
    for index, raw_line in enumerate(lines[1:], start=2):
        if not raw_line:
            continue
        try:
            line, error = raw_line.decode("utf-8"), ""
        except UnicodeDecodeError as decode_error:
            line = raw_line.decode("utf-8", errors="replace")
            error = f"not UTF-8 text (byte 0x{raw_line[decode_error.start]:02x} at column {decode_error.start + 1})"
        fields, quote_error = _fields(path, index, line, delimiter)
        error = error or quote_error
        if not error and len(fields) != len(header):
            error = f"line has {len(fields)} field(s), expected {len(header)} (truncated or malformed)"
        for name, position in positions.items():
            cells[name].append(fields[position] if position < len(fields) else "")
        line_numbers.append(index)
        read_errors.append(error)
    frame = pd.DataFrame(cells, dtype=object, columns=list(positions))
    frame["line_number"] = line_numbers
    frame["_read_error"] = read_errors
    return frame


def _header(path: Path, raw_line: bytes, delimiter: str) -> list[str]:
    if not raw_line.strip():
        raise ReviewFileError(f"{path}: empty file or empty first line, expected a header line")
    try:
        line = raw_line.decode("utf-8")
    except UnicodeDecodeError:
        raise ReviewFileError(f"{path}: not a text CSV file (the header line is not UTF-8 text)") from None
    if _CONTROL.search(line):
        raise ReviewFileError(f"{path}: not a text CSV file (the header line holds binary data)")
    fields, error = _fields(path, 1, line, delimiter)
    if error:
        raise ReviewFileError(f"{path}: header line is not valid CSV ({error})")
    header = [name.strip() for name in fields]
    repeated = [name for name, count in Counter(header).items() if count > 1 and name in KNOWN_COLUMNS]
    if repeated:
        raise ReviewFileError(f"{path}: column(s) {', '.join(repeated)} appear more than once in the header")
    return header


def _fields(path: Path, line_number: int, line: str, delimiter: str) -> tuple[list[str], str]:
    """The fields of one line, and why its quoting is broken ("" when it is not)."""
    if '"' not in line:
        fields, error = line.split(delimiter), ""
    else:
        try:
            fields, error = next(csv.reader([line], delimiter=delimiter, strict=True)), ""
        except csv.Error as csv_error:
            if "field larger than field limit" in str(csv_error):
                fields = [line]
            else:
                fields = line.split(delimiter)
            error = ("unbalanced quote: a quoted field does not end on its line"
                     if "unexpected end of data" in str(csv_error) else f"malformed quoting ({csv_error})")
    if any(len(field) > MAX_CSV_FIELD_CHARS for field in fields):
        raise ReviewFileError(f"{path}: line {line_number} has a field over {MAX_CSV_FIELD_CHARS // 1024} KiB; "
                              "not a review file")
    return fields, error


def read_parquet_rows(path: Path) -> pd.DataFrame:
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        repeated = [name for name, count in Counter(names).items() if count > 1 and name in KNOWN_COLUMNS]
        if repeated:
            raise ReviewFileError(f"{path}: column(s) {', '.join(repeated)} appear more than once")
        frame = parquet.read(columns=[name for name in KNOWN_COLUMNS if name in names]).to_pandas()
    except ReviewFileError:
        raise
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise ReviewFileError(f"{path}: not a readable Parquet file ({_one_line(error)})") from error
    text = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        text[column] = frame[column].map(_cell_text).astype(object)
    text["line_number"] = range(1, len(text) + 1)
    text["_read_error"] = ""
    return text


def _cell_text(value) -> str:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def read_anki_revlog(path: Path, limits: ReadLimits = ReadLimits()) -> tuple[pd.DataFrame, int]:
    """The revlog table of an Anki collection (`collection.anki2`) or package (`.colpkg`/`.apkg`)."""
    with tempfile.TemporaryDirectory() as scratch:
        database = _anki_database(path, Path(scratch), limits.max_unpacked_bytes)
        rows = _revlog_rows(path, database, limits.anki_read_seconds)
    reviews = [(position, row) for position, row in enumerate(rows, start=1)  # position in revlog, by id
               if not (row[2] == 0 or row[4] in ANKI_MANUAL_TYPES)]
    ids, cids, eases, times, types = ([row[i] for _, row in reviews] for i in range(5))
    review_time, read_error = _revlog_times(ids)
    text = pd.DataFrame({
        "card_id": _texts(cids),
        "review_rating": _texts(eases),
        "review_time": review_time,
        "review_duration": _texts(times),
        "state": _texts(types),
        "_read_error": read_error,
    }, dtype=object)
    text["line_number"] = np.array([position for position, _ in reviews], dtype=np.int64)
    return text, len(rows) - len(reviews)


def _texts(values: list) -> list[str]:
    return [str(v) if type(v) is int else _cell_text(v) for v in values]


_MS_RANGE = (pd.Timestamp.min.value // 10**6 + 1, pd.Timestamp.max.value // 10**6)


def _revlog_times(ids: list) -> tuple[list[str], list[str]]:
    """ISO text of each revlog id (its answer time in ms), and a reason where an id is not such a time."""
    is_time = np.array([type(v) is int and _MS_RANGE[0] <= v <= _MS_RANGE[1] for v in ids], dtype=bool)
    review_time = np.full(len(ids), "", dtype=object)
    if is_time.any():
        ms = np.array(ids, dtype=object)[is_time].astype(np.int64).astype("datetime64[ms]")
        review_time[is_time] = np.char.add(np.datetime_as_string(ms, unit="ms"), "+00:00").astype(object)
    read_error = ["" if ok else f"revlog id {v!r} is not an answer time in ms (out of range)"
                  for v, ok in zip(ids, is_time)]
    return review_time.tolist(), read_error


def _revlog_rows(path: Path, database: Path, seconds: float) -> list[tuple]:
    """Rows of the revlog table, opened read-only, refused when revlog is not a plain table or
    reading it takes longer than `seconds` (a view or a huge table)."""
    uri = f"file:{urllib.parse.quote(str(database.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as error:
        raise ReviewFileError(f"{path}: cannot open as an Anki collection ({error})") from error
    deadline = time.monotonic() + seconds
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA trusted_schema = OFF")
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _ANKI_MAX_VALUE_BYTES)
        conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_EVERY)
        found = conn.execute("SELECT type, sql FROM sqlite_master WHERE lower(name) = 'revlog'").fetchall()
        if not found:
            raise ReviewFileError(f"{path}: not an Anki collection (no revlog table)")
        kind, sql = found[0]
        if kind != "table" or (sql or "").lstrip().upper().startswith("CREATE VIRTUAL"):
            raise ReviewFileError(f"{path}: revlog is a {'virtual table' if kind == 'table' else kind}, "
                                  "not a table; refused (an Anki collection keeps its reviews in a table)")
        return conn.execute("SELECT id, cid, ease, time, type FROM revlog ORDER BY id").fetchall()
    except sqlite3.Error as error:
        if time.monotonic() > deadline:
            raise ReviewFileError(f"{path}: reading revlog took longer than {seconds:g} s; refused "
                                  "(raise the limit with --anki-time-limit-s)") from error
        raise ReviewFileError(f"{path}: not an Anki collection with a revlog table ({error})") from error
    finally:
        conn.close()


def _anki_database(path: Path, scratch: Path, max_bytes: int) -> Path:
    if path.suffix.lower() in (".anki2", ".anki21"):
        return path
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, ValueError, EOFError) as error:
        raise ReviewFileError(f"{path}: not an Anki package (not a zip archive)") from error
    with archive:
        names = set(archive.namelist())
        target = scratch / "collection.sqlite"
        for name in ("collection.anki21b", "collection.anki21", "collection.anki2"):  # newest first
            if name in names:
                _unpack(path, archive, name, target, max_bytes)
                return target
    raise ReviewFileError(f"{path}: Anki package without a collection (expected collection.anki21b/.anki21/.anki2)")


def _unpack(path: Path, archive: zipfile.ZipFile, name: str, target: Path, max_bytes: int) -> None:
    """Copy one member out of the archive (zstd-decompressed for .anki21b, current Anki's format),
    stopping as soon as it grows past `max_bytes` or MAX_UNPACK_RATIO times its packed size."""
    import zstandard

    packed_size = archive.getinfo(name).compress_size
    allowed = min(max_bytes, max(MAX_UNPACK_RATIO * packed_size, _RATIO_FREE_BYTES))
    written = 0
    try:
        with archive.open(name) as member, open(target, "wb") as sink:
            source = (zstandard.ZstdDecompressor().stream_reader(member, read_across_frames=True)
                      if name.endswith(".anki21b") else member)
            while chunk := source.read(1 << 20):
                written += len(chunk)
                if written > allowed:
                    raise ReviewFileError(f"{path}: {_too_big(name, allowed, max_bytes, packed_size)}; refused")
                sink.write(chunk)
    except (zipfile.BadZipFile, zstandard.ZstdError, NotImplementedError, RuntimeError, EOFError) as error:
        raise ReviewFileError(f"{path}: cannot unpack {name} ({_one_line(error)})") from error


def _too_big(name: str, allowed: int, max_bytes: int, packed_size: int) -> str:
    if allowed < max_bytes:
        return (f"{name} grows more than {MAX_UNPACK_RATIO} times its packed size of {packed_size:,} bytes "
                "(a decompression bomb)")
    return f"{name} unpacks to more than {max_bytes / 2**20:g} MiB (raise the limit with --max-unpacked-mib)"
