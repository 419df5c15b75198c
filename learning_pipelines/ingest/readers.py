"""Readers that turn review files into text rows with their line numbers, ready for validation.

A file is opened as a ReviewSource (`open_review_file`), which knows the file's canonical columns
(those of REQUIRED_COLUMNS and OPTIONAL_COLUMNS the file has) and hands out its rows in chunks of at
most `chunk_rows`, as often as asked: memory follows the chunk, not the file. Every chunk holds the
asked columns as text, with `line_number` and `_read_error` (why the reader could not read that row
cleanly, "" when it could), so one validation path serves every format. A file that cannot be read
as a whole raises ReviewFileError, naming the file and why, when it is opened or while its chunks
are read.
"""

from __future__ import annotations

import abc
import contextlib
import csv
import dataclasses
import json
import re
import sqlite3
import tempfile
import time
import urllib.parse
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from learning_pipelines.errors import one_line
from learning_pipelines.ingest.validation import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, ReviewFileError

CSV_SUFFIXES = (".csv", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
ANKI_SUFFIXES = (".anki2", ".anki21", ".colpkg", ".apkg")
# Anki's revlog: ease 0 marks a manual reschedule, type 4/5 "manual"/"rescheduled" entries;
# neither is an answer to a card, so neither is a review.
ANKI_MANUAL_TYPES = (4, 5)
# Anki's scheduler v1 showed three buttons on learning (type 0) and relearning (type 2) cards: there ease 2 is
# Good and 3 is Easy. Anki's own upgrade to v2 adds one to them (UPDATE revlog SET ease = ease + 1 WHERE ease IN
# (2,3) AND type IN (0,2)); so does the reader.
ANKI_V1_SHIFTED_TYPES = (0, 2)
ANKI_V1_SHIFTED_EASES = (2, 3)
# A deck export (.apkg) carries the exporting program's configuration, which need not be the learner's.
ANKI_EXPORT_SUFFIXES = (".apkg",)
KNOWN_COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
# Rows read, validated and written at a time: a chunk of reviews takes about 100 MiB on its way through.
DEFAULT_CHUNK_ROWS = 100_000
MAX_CSV_FIELD_CHARS = 128 * 1024  # no review value comes near; a longer field means this is not a review file
# A review line is about a hundred bytes; one this long is not a review line, and holding it would
# let one line take the memory that chunks keep bounded.
MAX_CSV_LINE_BYTES = 16 * 2**20
_CSV_BLOCK_BYTES = 4 * 2**20
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


@dataclasses.dataclass(frozen=True)
class RowChunk:
    rows: pd.DataFrame  # the asked columns as text, line_number, _read_error
    n_not_reviews: int  # entries of this stretch of the file that are not reviews (Anki's manual ones)
    n_remapped: int = 0  # answers read with scheduler v1's meaning and stored as v2's (ANKI_V1_SHIFTED_EASES)


class ReviewSource(abc.ABC):
    """An open review file: its canonical columns, and its rows in chunks, read again on every call."""

    def __init__(self, path: Path, chunk_rows: int):
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
        self.path = path
        self.chunk_rows = chunk_rows
        self.columns: tuple[str, ...] = ()

    def chunks(self, columns: Iterable[str] | None = None) -> Iterator[RowChunk]:
        """Every row of the file in order, `columns` of them (default: all the file has) as text.
        The whole of each row is still read and checked, whichever columns are asked for."""
        wanted = self.columns if columns is None else tuple(c for c in self.columns if c in set(columns))
        try:
            yield from self._chunks(wanted)
        except OSError as error:
            raise ReviewFileError(f"{self.path}: cannot be read ({error.strerror or error})") from error

    @abc.abstractmethod
    def _chunks(self, columns: tuple[str, ...]) -> Iterator[RowChunk]: ...

    def close(self) -> None:  # noqa: B027 - most sources hold nothing open: closing them does nothing
        """Release what the source holds open (an unpacked Anki collection)."""


@contextlib.contextmanager
def open_review_file(path: Path, limits: ReadLimits = ReadLimits(),
                     chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[ReviewSource]:
    """The file as a ReviewSource, by its suffix; refused here when it cannot be opened as one."""
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
    kind = _CsvSource if suffix in CSV_SUFFIXES else _ParquetSource if suffix in PARQUET_SUFFIXES else _AnkiSource
    try:
        source = kind(path, chunk_rows, limits)
    except OSError as error:
        raise ReviewFileError(f"{path}: cannot be read ({error.strerror or error})") from error
    try:
        yield source
    finally:
        source.close()


def read_review_file(path: Path, limits: ReadLimits = ReadLimits()) -> tuple[pd.DataFrame, int]:
    """The whole file in memory: (text rows with line_number and _read_error columns, count of
    entries that are not reviews). For callers that need every row at once; importers use chunks."""
    with open_review_file(path, limits) as source:
        chunks = list(source.chunks())
        columns = source.columns
    if not chunks:
        empty = {name: pd.Series(dtype=object) for name in columns}
        return pd.DataFrame({**empty, "line_number": pd.Series(dtype="int64"),
                             "_read_error": pd.Series(dtype=object)}), 0
    return (pd.concat([chunk.rows for chunk in chunks], ignore_index=True),
            sum(chunk.n_not_reviews for chunk in chunks))


class _CsvSource(ReviewSource):
    """One row per physical line: a quoted field never runs onto the next line, so a damaged
    line (an unbalanced quote, bytes that are not UTF-8, the wrong number of fields) is a row
    with a `_read_error` and every line after it is read as its own row."""

    def __init__(self, path: Path, chunk_rows: int, limits: ReadLimits):
        super().__init__(path, chunk_rows)
        self.delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        with contextlib.closing(self._lines()) as lines:
            _, first_line = next(lines)
        self.header = _header(path, first_line, self.delimiter)
        self.columns = tuple(name for name in KNOWN_COLUMNS if name in self.header)

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        """(line number, bytes without the line break) of every line; CR LF, CR and LF each end one."""
        with open(self.path, "rb") as file:
            carry, number, first = b"", 0, True
            while block := file.read(_CSV_BLOCK_BYTES):
                if first:
                    block, first = block.removeprefix(_UTF8_BOM), False
                buffer = carry + block
                held = b"\r" if buffer.endswith(b"\r") else b""  # it may be half of a \r\n
                lines = _LINE_BREAK.split(buffer[:len(buffer) - len(held)])
                carry = lines.pop() + held
                for line in lines:
                    number += 1
                    yield number, line
                if len(carry) > MAX_CSV_LINE_BYTES:
                    raise ReviewFileError(f"{self.path}: line {number + 1} is over {MAX_CSV_LINE_BYTES // 2**20} MiB; "
                                          "not a review file")
            for line in _LINE_BREAK.split(carry):
                number += 1
                yield number, line

    def _chunks(self, columns: tuple[str, ...]) -> Iterator[RowChunk]:
        header, delimiter = self.header, self.delimiter
        positions = {name: header.index(name) for name in columns}
        cells: dict[str, list[str]] = {name: [] for name in positions}
        line_numbers: list[int] = []
        read_errors: list[str] = []

        def chunk() -> RowChunk:
            frame = pd.DataFrame(cells, dtype=object, columns=list(positions))
            frame["line_number"] = np.array(line_numbers, dtype=np.int64)
            frame["_read_error"] = pd.Series(read_errors, dtype=object)
            return RowChunk(frame, 0)

        with contextlib.closing(self._lines()) as lines:
            next(lines)  # the header
            for index, raw_line in lines:
                if not raw_line:
                    continue
                try:
                    line, error = raw_line.decode("utf-8"), ""
                except UnicodeDecodeError as decode_error:
                    line = raw_line.decode("utf-8", errors="replace")
                    error = (f"not UTF-8 text (byte 0x{raw_line[decode_error.start]:02x} "
                             f"at column {decode_error.start + 1})")
                fields, quote_error = _fields(self.path, index, line, delimiter)
                error = error or quote_error
                if not error and len(fields) != len(header):
                    error = f"line has {len(fields)} field(s), expected {len(header)} (truncated or malformed)"
                for name, position in positions.items():
                    cells[name].append(fields[position] if position < len(fields) else "")
                line_numbers.append(index)
                read_errors.append(error)
                if len(line_numbers) == self.chunk_rows:
                    yield chunk()
                    cells = {name: [] for name in positions}
                    line_numbers, read_errors = [], []
        if line_numbers:
            yield chunk()


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
            fields = [line] if "field larger than field limit" in str(csv_error) else line.split(delimiter)
            error = ("unbalanced quote: a quoted field does not end on its line"
                     if "unexpected end of data" in str(csv_error) else f"malformed quoting ({csv_error})")
    if any(len(field) > MAX_CSV_FIELD_CHARS for field in fields):
        raise ReviewFileError(f"{path}: line {line_number} has a field over {MAX_CSV_FIELD_CHARS // 1024} KiB; "
                              "not a review file")
    return fields, error


class _ParquetSource(ReviewSource):
    """Read by record batches of `chunk_rows` rows; a row's line number is its position in the file."""

    def __init__(self, path: Path, chunk_rows: int, limits: ReadLimits):
        super().__init__(path, chunk_rows)
        try:
            with pq.ParquetFile(path) as parquet:
                names = parquet.schema_arrow.names
        except Exception as error:  # pyarrow raises several types for a damaged file
            raise self._unreadable(error) from error
        repeated = [name for name, count in Counter(names).items() if count > 1 and name in KNOWN_COLUMNS]
        if repeated:
            raise ReviewFileError(f"{path}: column(s) {', '.join(repeated)} appear more than once")
        self.columns = tuple(name for name in KNOWN_COLUMNS if name in names)

    def _unreadable(self, error: Exception) -> ReviewFileError:
        return ReviewFileError(f"{self.path}: not a readable Parquet file ({one_line(error)})")

    def _chunks(self, columns: tuple[str, ...]) -> Iterator[RowChunk]:
        position = 0
        try:
            parquet = pq.ParquetFile(self.path)
        except Exception as error:
            raise self._unreadable(error) from error
        with parquet:
            # Every column is decoded, asked for or not, so damage anywhere in the file is found.
            batches = parquet.iter_batches(batch_size=self.chunk_rows, columns=list(self.columns))
            while True:
                try:
                    batch = next(batches, None)
                    frame = None if batch is None else batch.to_pandas().reset_index(drop=True)
                except Exception as error:
                    raise self._unreadable(error) from error
                if frame is None:
                    break
                # Damaged pandas metadata in the footer can rename or drop columns the schema lists.
                lost = [column for column in self.columns if column not in frame.columns]
                if lost:
                    raise ReviewFileError(f"{self.path}: not a readable Parquet file (column(s) {', '.join(lost)} "
                                          "listed in its schema cannot be decoded)")
                text = pd.DataFrame({column: [_cell_text(value) for value in frame[column].tolist()]
                                     for column in columns}, index=frame.index, columns=list(columns), dtype=object)
                text["line_number"] = np.arange(position + 1, position + len(frame) + 1, dtype=np.int64)
                text["_read_error"] = pd.Series("", index=frame.index, dtype=object)
                position += len(frame)
                yield RowChunk(text, 0)
            # A damaged page header can make pyarrow decode fewer rows than the footer lists, without an error.
            if position != parquet.metadata.num_rows:
                raise ReviewFileError(f"{self.path}: not a readable Parquet file ({parquet.metadata.num_rows} row(s) "
                                      f"listed in its footer, {position} decoded)")


def _cell_text(value) -> str:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    if isinstance(value, pd.Timestamp):
        try:
            return value.isoformat()
        except (ValueError, NotImplementedError, OverflowError):  # beyond Python's datetime: the row is refused
            return str(value.to_datetime64())
    return str(value)


class _AnkiSource(ReviewSource):
    """The revlog table of an Anki collection (`collection.anki2`) or package (`.colpkg`/`.apkg`),
    opened read-only and fetched in batches of `chunk_rows` entries; a row's line number is its
    position in revlog by id. Refused when revlog is not a plain table or one reading of it spends
    longer than the time limit in SQLite (a view or a huge table). A collection on scheduler v1 has its
    learning and relearning answers read as v2's (anki_scheduler_v1)."""

    _TEXT_FIELDS = {"card_id": 1, "review_rating": 2, "review_duration": 3, "state": 4}  # in (id, cid, ease, time, type)

    def __init__(self, path: Path, chunk_rows: int, limits: ReadLimits):
        super().__init__(path, chunk_rows)
        self.columns = ("card_id", "review_rating", "review_time", "review_duration", "state")
        self.seconds = limits.anki_read_seconds
        self._scratch = tempfile.TemporaryDirectory()
        self._conn: sqlite3.Connection | None = None
        try:
            database = _anki_database(path, Path(self._scratch.name), limits.max_unpacked_bytes)
            self._conn = _open_read_only(path, database)
            self._spent_s, self._deadline = 0.0, 0.0
            self._conn.set_progress_handler(lambda: time.monotonic() > self._deadline, _PROGRESS_EVERY)
            found = self._timed(self._revlog_schema)
            if not found:
                raise ReviewFileError(f"{path}: not an Anki collection (no revlog table)")
            kind, sql = found[0]
            if kind != "table" or (sql or "").lstrip().upper().startswith("CREATE VIRTUAL"):
                raise ReviewFileError(f"{path}: revlog is a {'virtual table' if kind == 'table' else kind}, "
                                      "not a table; refused (an Anki collection keeps its reviews in a table)")
            self.scheduler_v1 = self._timed(self._on_scheduler_v1)
        except BaseException:
            self.close()
            raise

    def _revlog_schema(self) -> list[tuple]:
        self._conn.execute("PRAGMA query_only = ON")
        self._conn.execute("PRAGMA trusted_schema = OFF")
        return self._conn.execute("SELECT type, sql FROM sqlite_master WHERE lower(name) = 'revlog'").fetchall()

    def _on_scheduler_v1(self) -> bool:
        learning_eases = dict(self._conn.execute(
            "SELECT ease, count(*) FROM revlog WHERE type IN (0, 2) AND ease IN (2, 3, 4) GROUP BY ease").fetchall())
        configured = None if self.path.suffix.lower() in ANKI_EXPORT_SUFFIXES else self._configured_scheduler()
        return anki_scheduler_v1(configured, learning_eases)

    def _configured_scheduler(self) -> int | None:
        """The collection's `schedVer` (1 where it is not set, as in Anki), or None where its configuration
        cannot be read: the `config` table from schema 15 on, `col.conf` (JSON) before."""
        try:
            tables = {name for (name,) in self._conn.execute(
                "SELECT lower(name) FROM sqlite_master WHERE type = 'table'").fetchall()}
            if "config" in tables:
                found = self._conn.execute("SELECT val FROM config WHERE key = 'schedVer'").fetchone()
                return 1 if found is None else int(json.loads(found[0]))
            if "col" in tables:
                found = self._conn.execute("SELECT conf FROM col").fetchone()
                return None if found is None else int(json.loads(found[0]).get("schedVer", 1))
        except sqlite3.Error:
            if time.monotonic() > self._deadline:
                raise  # the time limit, not a damaged configuration: _timed refuses the file
        except (ValueError, TypeError, AttributeError):  # a configuration that is not the JSON Anki writes
            pass
        return None

    def _timed(self, read):
        """`read()`, its SQLite time counted against the limit of one reading of the collection."""
        started = time.monotonic()
        self._deadline = started + self.seconds - self._spent_s
        try:
            return read()
        except sqlite3.Error as error:
            if time.monotonic() > self._deadline:
                raise ReviewFileError(f"{self.path}: reading revlog took longer than {self.seconds:g} s; refused "
                                      "(raise the limit with --anki-time-limit-s)") from error
            raise ReviewFileError(f"{self.path}: not an Anki collection with a revlog table ({error})") from error
        finally:
            self._spent_s += time.monotonic() - started

    def _chunks(self, columns: tuple[str, ...]) -> Iterator[RowChunk]:
        self._spent_s = 0.0
        cursor = self._timed(lambda: self._conn.execute("SELECT id, cid, ease, time, type FROM revlog ORDER BY id"))
        position = 0
        try:
            while rows := self._timed(lambda: cursor.fetchmany(self.chunk_rows)):
                reviews = [(number, row) for number, row in enumerate(rows, start=position + 1)
                           if not (row[2] == 0 or row[4] in ANKI_MANUAL_TYPES)]
                position += len(rows)
                n_remapped = 0
                if self.scheduler_v1:
                    reviews, n_remapped = _as_scheduler_v2(reviews)
                yield RowChunk(self._text(reviews, columns), len(rows) - len(reviews), n_remapped)
        finally:
            cursor.close()

    def _text(self, reviews: list[tuple[int, tuple]], columns: tuple[str, ...]) -> pd.DataFrame:
        review_time, read_error = _revlog_times([row[0] for _, row in reviews])
        text = pd.DataFrame({name: review_time if name == "review_time"
                             else _texts([row[self._TEXT_FIELDS[name]] for _, row in reviews])
                             for name in columns}, index=range(len(reviews)), dtype=object)
        text["line_number"] = np.array([number for number, _ in reviews], dtype=np.int64)
        text["_read_error"] = pd.Series(read_error, index=text.index, dtype=object)
        return text

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._scratch.cleanup()


def anki_scheduler_v1(configured: int | None, learning_eases: dict[int, int]) -> bool:
    """Whether a collection's learning and relearning answers have scheduler v1's meaning (three buttons).

    configured: its `schedVer` (None: not known, as in a deck export); learning_eases: how many learning and
    relearning answers it holds with ease 2, 3 and 4. A fourth button on such rows means v2's meaning whatever the
    configuration says; without a configuration, the usual answer tells: Good is ease 2 on v1, ease 3 on v2.
    """
    if learning_eases.get(4, 0):
        return False
    if configured is not None:
        return configured == 1
    return learning_eases.get(2, 0) > learning_eases.get(3, 0)


def _as_scheduler_v2(reviews: list[tuple[int, tuple]]) -> tuple[list[tuple[int, tuple]], int]:
    """Scheduler v1's learning and relearning answers (id, cid, ease, time, type) with v2's ease, and how many."""
    shifted, n_remapped = [], 0
    for number, row in reviews:
        if row[4] in ANKI_V1_SHIFTED_TYPES and row[2] in ANKI_V1_SHIFTED_EASES and type(row[2]) is int:
            row = (row[0], row[1], row[2] + 1, *row[3:])
            n_remapped += 1
        shifted.append((number, row))
    return shifted, n_remapped


def _open_read_only(path: Path, database: Path) -> sqlite3.Connection:
    uri = f"file:{urllib.parse.quote(str(database.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as error:
        raise ReviewFileError(f"{path}: cannot open as an Anki collection ({error})") from error
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _ANKI_MAX_VALUE_BYTES)
    return conn


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
        raise ReviewFileError(f"{path}: cannot unpack {name} ({one_line(error)})") from error


def _too_big(name: str, allowed: int, max_bytes: int, packed_size: int) -> str:
    if allowed < max_bytes:
        return (f"{name} grows more than {MAX_UNPACK_RATIO} times its packed size of {packed_size:,} bytes "
                "(a decompression bomb)")
    return f"{name} unpacks to more than {max_bytes / 2**20:g} MiB (raise the limit with --max-unpacked-mib)"
