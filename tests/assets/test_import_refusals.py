"""Bad input the importers meet in the wild: each bad row is rejected with its line and reason, the
good rows load, and a file that cannot be read at all is refused with one line naming it."""

import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import zstandard

from learning_pipelines.db import migrate
from learning_pipelines.db.engine import get_engine
from learning_pipelines.db.tables import concepts, review_log_imports, review_log_rejects, review_logs, users
from learning_pipelines.ingest.importer import import_review_file
from learning_pipelines.ingest.readers import ReadLimits
from learning_pipelines.ingest.validation import ReviewFileError, ReviewFileUsageError

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)
HEADER = "card_id,review_rating,review_time,review_duration,user_id"
ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "learning-pipelines")


def _rows(engine, table, *columns) -> list[tuple]:
    with engine.connect() as conn:
        selected = [table.c[c] for c in columns] if columns else list(table.c)
        return [tuple(r) for r in conn.execute(sa.select(*selected).order_by(*selected))]


def _rejects(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.select(review_log_rejects).order_by(review_log_rejects.c.reject_id), conn)


def _seed(engine, user_ids=(1,), concept_ids=(10, 11, 12)) -> None:
    with engine.begin() as conn:
        conn.execute(users.insert(), [{"user_id": u} for u in user_ids])
        conn.execute(concepts.insert(), [{"concept_id": c, "name": "c"} for c in concept_ids])


def _csv(path: Path, *lines: str) -> Path:
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


def _anki_collection(path: Path, revlog_rows=((1714557600000, 501, 3, 4000, 0),)) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE revlog (id INTEGER PRIMARY KEY, cid INTEGER, usn INTEGER, ease INTEGER, "
                     "ivl INTEGER, lastIvl INTEGER, factor INTEGER, time INTEGER, type INTEGER)")
        conn.executemany("INSERT INTO revlog VALUES (?, ?, -1, ?, 1, 0, 2500, ?, ?)", revlog_rows)
    return path


# --- 4: --register-unknown creates positive ids only ---

def test_register_unknown_creates_only_positive_ids_and_rejects_the_others(warehouse_engine, tmp_path):
    path = _csv(tmp_path / "reviews.csv",
                "10,3,2024-05-01T10:00:00Z,5000,1",
                "0,3,2024-05-02T10:00:00Z,5000,1",
                "-7,3,2024-05-03T10:00:00Z,5000,1",
                "11,3,2024-05-04T10:00:00Z,5000,0",
                "12,3,2024-05-05T10:00:00Z,5000,-3")
    summary = import_review_file(warehouse_engine, path, register_unknown=True, now=NOW)

    assert (summary.n_loaded, summary.n_rejected) == (1, 4)
    assert _rows(warehouse_engine, users, "user_id") == [(1,)]
    assert _rows(warehouse_engine, concepts, "concept_id") == [(10,)]
    reasons = dict(zip(_rejects(warehouse_engine)["line_number"], _rejects(warehouse_engine)["reason"]))
    assert "card_id 0 is not positive (only positive ids are registered)" in reasons[3]
    assert "card_id -7 is not positive" in reasons[4]
    assert "user_id 0 is not positive" in reasons[5]
    assert "user_id -3 is not positive" in reasons[6]


# --- 11: CSV text that used to load wrong or not at all ---

def test_a_utf8_byte_order_mark_does_not_hide_the_first_column(warehouse_engine, tmp_path):
    _seed(warehouse_engine)
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{HEADER}\r\n10,3,2024-05-01T10:00:00Z,5000,1\r\n".encode())
    summary = import_review_file(warehouse_engine, path, now=NOW)
    assert (summary.n_rows, summary.n_loaded, summary.n_rejected) == (1, 1, 0)


def test_an_unbalanced_quote_rejects_its_own_line_and_every_later_line_is_read(warehouse_engine, tmp_path):
    _seed(warehouse_engine)
    path = _csv(tmp_path / "quote.csv",
                "10,3,2024-05-01T10:00:00Z,5000,1",
                '11,"3,2024-05-02T10:00:00Z,5000,1',
                "12,3,2024-05-03T10:00:00Z,5000,1",
                '"10",4,2024-05-04T10:00:00Z,"5000",1')  # well-formed quotes still read
    summary = import_review_file(warehouse_engine, path, now=NOW)

    assert (summary.n_rows, summary.n_loaded, summary.n_rejected) == (4, 3, 1)
    reject = _rejects(warehouse_engine).iloc[0]
    assert reject["line_number"] == 3
    assert "unbalanced quote" in reject["reason"]
    assert json.loads(reject["raw_row"])["card_id"] == "11"
    assert _rows(warehouse_engine, review_logs, "concept_id") == [(10,), (10,), (12,)]


def test_a_nul_inside_a_number_is_rejected_not_read_as_the_digits_around_it(warehouse_engine, tmp_path):
    _seed(warehouse_engine, concept_ids=(10, 15))
    path = tmp_path / "nul.csv"
    path.write_bytes(f"{HEADER}\n1\x005,3,2024-05-01T10:00:00Z,5000,1\n10,3,2024-05-02T10:00:00Z,5000,1\n".encode())
    summary = import_review_file(warehouse_engine, path, now=NOW)

    assert (summary.n_loaded, summary.n_rejected) == (1, 1)
    assert _rows(warehouse_engine, review_logs, "concept_id") == [(10,)]
    reject = _rejects(warehouse_engine).iloc[0]
    assert (reject["line_number"], reject["reason"]) == (2, r"card_id '1\x005' is not a whole number")


@pytest.mark.parametrize("line, column", [
    ("１０,3,2024-05-01T10:00:00Z,5000,1", "card_id"),  # full-width digits
    ("10,٣,2024-05-01T10:00:00Z,5000,1", "review_rating"),  # Arabic-Indic three
    ("10,3,2024-05-01T10:00:00Z,۵۰۰۰,1", "review_duration"),  # Extended Arabic-Indic
    ("10,3,2024-05-01T10:00:00Z,5000,１", "user_id"),
    ("10,3,now,5000,1", "review_time"),  # pandas reads "now" and "today" as times
    ("10,3,today,5000,1", "review_time"),
])
def test_digits_outside_ascii_and_words_are_not_numbers_or_times(warehouse_engine, tmp_path, line, column):
    _seed(warehouse_engine)
    summary = import_review_file(warehouse_engine, _csv(tmp_path / "digits.csv", line), now=NOW)
    assert (summary.n_loaded, summary.n_rejected) == (0, 1)
    reason = _rejects(warehouse_engine)["reason"].iloc[0]
    assert reason.startswith(f"{column} '") and " is not a" in reason, reason


# --- 12: files that cannot be read are refused, never a traceback ---

def _binary(path: Path) -> Path:
    path.write_bytes(bytes(range(256)) * 40)
    return path


def _duplicate_column(path: Path) -> Path:
    path.write_text("card_id,review_rating,card_id,review_time,review_duration\n10,3,11,2024-05-01T10:00:00Z,5000\n")
    return path


def _huge_field(path: Path) -> Path:
    return _csv(path, "10,3,2024-05-01T10:00:00Z,5000,1", "10," + "3" * (129 * 1024) + ",2024-05-01T10:00:00Z,5000,1")


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


def _no_revlog(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE cards (id INTEGER PRIMARY KEY)")
    return path


def _garbage_anki(path: Path) -> Path:
    path.write_bytes(b"SQLite format 2\x00" + b"\x07" * 5000)
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


REFUSED_FILES = {
    "binary.csv": (_binary, "not a text CSV file"),
    "duplicate.csv": (_duplicate_column, "column(s) card_id appear more than once in the header"),
    "huge_field.csv": (_huge_field, "line 3 has a field over 128 KiB"),
    "folder.csv": (_directory, "is a directory"),
    "no_revlog.anki2": (_no_revlog, "not an Anki collection (no revlog table)"),
    "garbage.anki2": (_garbage_anki, "not an Anki collection with a revlog table (file is not a database)"),
    "empty.anki2": (_empty, "not an Anki collection (no revlog table)"),
    "empty.csv": (_empty, "empty file"),
}


@pytest.mark.parametrize("name", REFUSED_FILES)
def test_an_unreadable_file_is_refused_with_its_name_and_why(warehouse_engine, tmp_path, name):
    make, message = REFUSED_FILES[name]
    path = make(tmp_path / name)
    with pytest.raises(ReviewFileError) as refused:
        import_review_file(warehouse_engine, path, user_id=1, register_unknown=True, now=NOW)
    assert str(refused.value).startswith(f"{path}: ") and message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert _rows(warehouse_engine, review_logs) == []


def test_the_command_refuses_each_unreadable_file_in_one_line_and_exits_2(empty_sqlite_url, tmp_path):
    migrate.upgrade(empty_sqlite_url)
    paths = [make(tmp_path / name) for name, (make, _) in REFUSED_FILES.items()]
    env = {**os.environ, "LEARNING_PIPELINES_DATABASE_URL": empty_sqlite_url}
    result = subprocess.run([CLI, "import", *map(str, paths), "--user-id", "1"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ")[1] for line in lines] == [str(p) for p in paths]
    for line, (_, message) in zip(lines, REFUSED_FILES.values()):
        assert message in line


def test_a_path_over_500_characters_is_stored_shortened_keeping_the_file_name(warehouse_engine, tmp_path):
    folder = tmp_path
    while len(str(folder)) < 520:
        folder = folder / ("d" * 100)
    folder.mkdir(parents=True)
    _seed(warehouse_engine)
    path = _csv(folder / "long.csv", "10,3,2024-05-01T10:00:00Z,5000,1", "10,9,2024-05-02T10:00:00Z,5000,1")
    summary = import_review_file(warehouse_engine, path, now=NOW)

    assert (summary.source, summary.n_loaded, summary.n_rejected) == (str(path), 1, 1)
    [(stored,)] = _rows(warehouse_engine, review_log_imports, "source")
    assert len(stored) == 500 and stored.startswith("…") and stored.endswith("/long.csv")
    assert _rejects(warehouse_engine)["source"].tolist() == [stored]


def test_an_anki_answer_time_out_of_range_is_a_rejected_row(warehouse_engine, tmp_path):
    path = _anki_collection(tmp_path / "collection.anki2",
                            [(10**17, 501, 3, 4000, 0), (1714557600000, 501, 3, 4000, 1)])
    summary = import_review_file(warehouse_engine, path, user_id=7, register_unknown=True, now=NOW)
    assert (summary.n_loaded, summary.n_rejected) == (1, 1)
    reject = _rejects(warehouse_engine).iloc[0]
    assert reject["line_number"] == 2
    assert reject["reason"].startswith(f"revlog id {10**17} is not an answer time in ms")


def test_revlog_values_of_the_wrong_type_are_rejected_rows(warehouse_engine, tmp_path):
    path = _anki_collection(tmp_path / "collection.anki2", [(1714557600000, "abc", 3, 4000, 0),
                                                             (1714557700000, 501, None, 4000, 1),
                                                             (1714557800000, 501, 3, 2.5, 1),
                                                             (1714557900000, 502, 3, 4000, 1)])
    summary = import_review_file(warehouse_engine, path, user_id=7, register_unknown=True, now=NOW)
    assert (summary.n_loaded, summary.n_rejected) == (1, 3)
    reasons = _rejects(warehouse_engine)["reason"].tolist()
    assert [reason.split("; ")[0] for reason in reasons] == [
        "card_id 'abc' is not a whole number", "review_rating is missing", "review_duration '2.5' is not a whole number"]


def test_a_collection_of_manual_entries_only_loads_nothing_and_counts_them(warehouse_engine, tmp_path):
    path = _anki_collection(tmp_path / "collection.anki2",
                            [(1714557600000, 501, 0, 0, 4), (1714557700000, 501, 3, 0, 5)])
    summary = import_review_file(warehouse_engine, path, user_id=7, register_unknown=True, now=NOW)
    assert (summary.n_rows, summary.n_loaded, summary.n_not_reviews) == (0, 0, 2)


# --- 13: hostile Anki collections ---

def test_a_view_named_revlog_is_refused_without_reading_it(warehouse_engine, tmp_path):
    path = tmp_path / "collection.anki2"
    with sqlite3.connect(path) as conn:  # reading this view never ends
        conn.execute("CREATE VIEW revlog AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                     "SELECT i AS id, i AS cid, 3 AS ease, 1000 AS time, 0 AS type FROM n")
    before = path.read_bytes()
    with pytest.raises(ReviewFileError, match="revlog is a view, not a table; refused"):
        import_review_file(warehouse_engine, path, user_id=1, register_unknown=True, now=NOW,
                           limits=ReadLimits(anki_read_seconds=10))
    assert path.read_bytes() == before


def test_reading_revlog_past_the_time_limit_is_refused(warehouse_engine, tmp_path):
    path = _anki_collection(tmp_path / "collection.anki2",
                            [(1714557600000 + i, 501, 3, 4000, 0) for i in range(50_000)])
    with pytest.raises(ReviewFileError, match=r"reading revlog took longer than 0\.001 s; refused"):
        import_review_file(warehouse_engine, path, user_id=1, register_unknown=True, now=NOW,
                           limits=ReadLimits(anki_read_seconds=0.001))


def _colpkg(path: Path, member: str, payload_chunks, compress: bool) -> Path:
    with zipfile.ZipFile(path, "w") as archive, archive.open(member, "w", force_zip64=True) as sink:
        if compress:
            with zstandard.ZstdCompressor(level=1).stream_writer(sink, closefd=False) as writer:
                for chunk in payload_chunks:
                    writer.write(chunk)
        else:
            for chunk in payload_chunks:
                sink.write(chunk)
    return path


def test_a_zstd_bomb_is_refused_after_a_few_mib_not_unpacked_in_full(warehouse_engine, tmp_path):
    path = _colpkg(tmp_path / "bomb.colpkg", "collection.anki21b", (bytes(1 << 20) for _ in range(1024)), True)
    assert path.stat().st_size < 256 * 1024  # 1 GiB of zeros
    with pytest.raises(ReviewFileError, match=r"collection\.anki21b grows more than 1000 times its packed size"):
        import_review_file(warehouse_engine, path, user_id=1, register_unknown=True, now=NOW)


def test_the_unpacked_size_cap_is_configurable(warehouse_engine, tmp_path):
    path = _colpkg(tmp_path / "big.colpkg", "collection.anki21", (os.urandom(1 << 20) for _ in range(3)), False)
    with pytest.raises(ReviewFileError, match=r"collection\.anki21 unpacks to more than 2 MiB \(raise the limit"):
        import_review_file(warehouse_engine, path, user_id=1, now=NOW, limits=ReadLimits(max_unpacked_bytes=2 << 20))


def test_the_command_takes_the_unpacked_size_cap_in_mib(empty_sqlite_url, tmp_path):
    migrate.upgrade(empty_sqlite_url)
    path = _colpkg(tmp_path / "big.colpkg", "collection.anki21", (os.urandom(1 << 20) for _ in range(3)), False)
    result = subprocess.run([CLI, "import", str(path), "--user-id", "1", "--max-unpacked-mib", "2"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "LEARNING_PIPELINES_DATABASE_URL": empty_sqlite_url})
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {path}: collection.anki21 unpacks to more than 2 MiB "
                                     "(raise the limit with --max-unpacked-mib); refused")


# --- 14: a review id seen again ---

def test_a_review_id_imported_again_with_other_content_is_rejected_as_a_conflict(warehouse_engine, tmp_path):
    _seed(warehouse_engine)
    header = HEADER + ",review_id"
    first = tmp_path / "first.csv"
    first.write_text(f"{header}\n10,3,2024-05-01T10:00:00.123456789Z,5000,1,77\n11,3,2024-05-02T10:00:00Z,5000,1,78\n")
    again = tmp_path / "again.csv"  # 77 again as it was (to the stored microsecond), 78 with another rating
    again.write_text(f"{header}\n10,3,2024-05-01T10:00:00.123456Z,5000,1,77\n11,4,2024-05-02T10:00:00Z,5000,1,78\n")

    assert import_review_file(warehouse_engine, first, now=NOW).n_loaded == 2
    summary = import_review_file(warehouse_engine, again, now=NOW)

    assert (summary.n_loaded, summary.n_already_present, summary.n_rejected) == (0, 1, 1)
    reject = _rejects(warehouse_engine).iloc[0]
    assert (reject["line_number"], reject["review_id"]) == (3, 78)
    assert reject["reason"] == "review_id 78 conflicts with stored review 78 (review_rating 3 stored, 4 here)"
    assert _rows(warehouse_engine, review_logs, "id", "rating") == [(77, 3), (78, 3)]


def test_a_derived_review_id_with_other_content_is_a_conflict(warehouse_engine, tmp_path):
    _seed(warehouse_engine)
    import_review_file(warehouse_engine, _csv(tmp_path / "a.csv", "10,3,2024-05-01T10:00:00Z,5000,1"), now=NOW)
    again = _csv(tmp_path / "b.csv", "10,3,2024-05-01T10:00:00Z,6500,1")
    summary = import_review_file(warehouse_engine, again, now=NOW)
    assert (summary.n_loaded, summary.n_already_present, summary.n_rejected) == (0, 0, 1)
    assert "(review_duration 5000 stored, 6500 here)" in _rejects(warehouse_engine)["reason"].iloc[0]


# --- 15: a refused file imported again ---

def test_a_refused_file_imported_twice_records_its_reject_once(warehouse_engine, tmp_path):
    path = _duplicate_column(tmp_path / "duplicate.csv")
    for _ in range(2):
        with pytest.raises(ReviewFileError, match="appear more than once"):
            import_review_file(warehouse_engine, path, user_id=1, now=NOW)
    rejects = _rejects(warehouse_engine)
    assert len(rejects) == 1 and rejects["line_number"].isna().all()
    assert json.loads(rejects["raw_row"].iloc[0])["file"] == str(path)

    path.write_text("card_id,review_rating,card_id,review_time,review_duration\n11,3,12,2024-05-01T10:00:00Z,5000\n")
    with pytest.raises(ReviewFileError):  # other bytes: another reject
        import_review_file(warehouse_engine, path, user_id=1, now=NOW)
    assert len(_rejects(warehouse_engine)) == 2


@pytest.mark.parametrize("content, user_id, message", [
    ("card_id,review_rating,review_time\n10,3,2024-05-01T10:00:00Z\n", 1, "missing required column(s) review_duration"),
    ("card_id,review_rating,review_time,review_duration\n10,3,2024-05-01T10:00:00Z,5000\n", None,
     "no user_id column; say whose reviews these are (--user-id)"),
])
def test_a_usage_error_refuses_the_file_and_adds_no_rejected_row(warehouse_engine, tmp_path, content, user_id,
                                                                  message):
    """A file that does not fit the command as given is the command's usage, not bad rows: the rejects (and their
    metric) count only rows."""
    path = tmp_path / "reviews.csv"
    path.write_text(content)
    for _ in range(2):
        with pytest.raises(ReviewFileUsageError, match=re.escape(message)):
            import_review_file(warehouse_engine, path, user_id=user_id, now=NOW)
    assert _rejects(warehouse_engine).empty


# --- 7 (importer side): a database error is one line ---

def test_a_database_error_is_one_line_naming_the_file_and_the_error_class(warehouse_url, tmp_path):
    engine = get_engine(warehouse_url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("CREATE FUNCTION deadlock() RETURNS trigger LANGUAGE plpgsql AS "
                                 "$$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$"))
            conn.execute(sa.text("CREATE TRIGGER deadlock BEFORE INSERT ON review_log_imports "
                                 "FOR EACH ROW EXECUTE FUNCTION deadlock()"))
        else:
            conn.execute(sa.text("CREATE TRIGGER deadlock BEFORE INSERT ON review_log_imports "
                                 "BEGIN SELECT RAISE(ABORT, 'deadlock detected'); END"))
    path = _csv(tmp_path / "reviews.csv", *(f"{10 + i},3,2024-05-01T10:{i:02d}:00Z,5000,1" for i in range(50)))
    result = subprocess.run([CLI, "import", str(path), "--register-unknown"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "LEARNING_PIPELINES_DATABASE_URL": warehouse_url})

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    error_class = "DeadlockDetected" if engine.dialect.name == "postgresql" else "IntegrityError"
    assert line == f"error: {path}: not imported, nothing was stored (database error {error_class}: deadlock detected)"
    assert _rows(engine, review_logs) == [] and _rows(engine, users) == []


# --- found by the property tests ---

def test_a_rejected_row_does_not_make_a_later_good_row_with_its_id_a_duplicate(warehouse_engine, tmp_path):
    _seed(warehouse_engine)
    path = _csv(tmp_path / "retyped.csv",
                "10,9,2024-05-01T10:00:00Z,5000,1",  # a typo, corrected on the next line: same learner, card, time
                "10,3,2024-05-01T10:00:00Z,5000,1")
    summary = import_review_file(warehouse_engine, path, now=NOW)
    assert (summary.n_loaded, summary.n_rejected) == (1, 1)
    assert _rejects(warehouse_engine)["reason"].tolist() == ["review_rating 9 outside 1..4"]
