"""A file is read, checked and written a chunk of rows at a time (issue 13, item 9): what it stores
does not depend on the chunk size, a failure in a later chunk stores nothing of the earlier ones,
and the memory an import takes follows the chunk, not the file."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from learning_pipelines.db import bulk
from learning_pipelines.db.engine import DATABASE_URL_ENV
from learning_pipelines.db.tables import concepts, review_log_imports, review_log_rejects, review_logs, users
from learning_pipelines.ingest.importer import import_review_file
from learning_pipelines.ingest.readers import MAX_CSV_FIELD_CHARS
from learning_pipelines.ingest.validation import ReviewFileError

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)
HEADER = "review_id,card_id,review_rating,review_time,review_duration,user_id"
STORED_BEFORE = [  # already in the warehouse when the file comes
    "900,10,3,2024-04-01T10:00:00Z,5000,1",
    "901,11,3,2024-04-02T10:00:00Z,5000,1",
]
LINES = [
    "1,10,3,2024-05-01T10:00:00Z,5000,1",
    "2,11,4,2024-05-02T10:00:00Z,5000,1",
    "3,12,0,2024-05-03T10:00:00Z,5000,1",   # rating outside 1..4
    "900,10,3,2024-04-01T10:00:00Z,5000,1",  # stored before, same content: already present
    "4,10,2,2024-06-01T10:00:00Z,5000,2",   # a new month
    "1,10,3,2024-05-01T10:00:00Z,5000,1",   # repeats line 2 of the file, chunks apart
    "901,11,1,2024-04-02T10:00:00Z,5000,1",  # stored before with another rating: a conflict
    "5,11,3,2024-06-02T10:00:00Z,5000,2",
    "6,99,3,2024-06-03T10:00:00Z,5000,2",   # unknown concept
    "2,12,3,2024-07-01T10:00:00Z,5000,2",   # review id of line 3 with other content: duplicate
    "900,10,3,2024-04-01T10:00:00Z,5000,1",  # repeats line 5: a duplicate
    "7,12,3,2024-07-02T10:00:00Z,5000,1",
    "3,12,3,2024-05-03T10:00:00Z,5000,1",   # line 4's id; that row was rejected, so this one loads
]
CHUNK_SIZES = [1, 2, 3, 5, 100_000]


def _reset(engine) -> None:
    with engine.begin() as conn:
        for table in (review_logs, review_log_rejects, review_log_imports, users, concepts):
            conn.execute(table.delete())
        conn.execute(users.insert(), [{"user_id": 1}, {"user_id": 2}])
        conn.execute(concepts.insert(), [{"concept_id": c, "name": f"c{c}"} for c in (10, 11, 12)])


def _outcome(engine, path: Path, chunk_rows: int) -> tuple[dict, list, list]:
    """(summary, stored reviews, rejects) of importing `path` into the seeded warehouse."""
    _reset(engine)
    before = path.with_name("stored_before.csv")
    before.write_text("\n".join([HEADER, *STORED_BEFORE]) + "\n")
    import_review_file(engine, before, now=NOW)
    summary = import_review_file(engine, path, now=NOW, chunk_rows=chunk_rows)
    with engine.connect() as conn:
        stored = bulk.read_frame(conn, sa.select(review_logs.c.id, review_logs.c.user_id, review_logs.c.concept_id,
                                                 review_logs.c.rating, review_logs.c.reviewed_at)
                                 .order_by(review_logs.c.id))
        rejects = conn.execute(sa.select(review_log_rejects.c.line_number, review_log_rejects.c.reason)
                               .where(review_log_rejects.c.source == str(path))
                               .order_by(review_log_rejects.c.line_number)).all()
    return summary, stored.astype(str).values.tolist(), [tuple(row) for row in rejects]


def test_a_file_stores_the_same_whatever_its_chunk_size(warehouse_engine, tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join([HEADER, *LINES]) + "\n")

    outcomes = {size: _outcome(warehouse_engine, path, size) for size in CHUNK_SIZES}

    summary, stored, rejects = outcomes[100_000]  # one chunk: the whole file at once
    assert (summary.n_rows, summary.n_loaded, summary.n_already_present, summary.n_rejected) == (13, 6, 1, 6)
    assert summary.loaded_by_month == {"2024-05-01": 3, "2024-06-01": 2, "2024-07-01": 1}
    assert [line for line, _ in rejects] == [4, 7, 8, 10, 11, 12]
    reasons = dict(rejects)
    assert "duplicate review id 1 (first on line 2)" in reasons[7]
    assert "conflicts with stored review 901" in reasons[8]
    assert "duplicate review id 2 (first on line 3)" in reasons[11]
    assert "duplicate review id 900 (first on line 5)" in reasons[12], "a stored review repeated: the file's own line"
    for size, (chunked_summary, chunked_stored, chunked_rejects) in outcomes.items():
        assert chunked_summary == summary, size
        assert (chunked_stored, chunked_rejects) == (stored, rejects), size


def test_a_file_refused_after_its_first_chunks_stores_none_of_them(warehouse_engine, tmp_path):
    path = tmp_path / "reviews.csv"
    too_long = "1" * (MAX_CSV_FIELD_CHARS + 1)
    path.write_text("\n".join([HEADER, *LINES[:9], f"8,10,3,2024-08-01T10:00:00Z,{too_long},1"]) + "\n")
    _reset(warehouse_engine)

    with pytest.raises(ReviewFileError, match=r"line 11 has a field over 128 KiB"):
        import_review_file(warehouse_engine, path, now=NOW, chunk_rows=2)

    with warehouse_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(review_logs)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(review_log_imports)).scalar() == 0
        rejects = conn.execute(sa.select(review_log_rejects.c.line_number, review_log_rejects.c.reason)).all()
    assert len(rejects) == 1 and rejects[0].line_number is None and "line 11" in rejects[0].reason


def _refuse_review_7(engine) -> None:
    """A trigger that makes the database refuse review 7 (line 13, in the last chunks of the file)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text(
                "CREATE FUNCTION refuse_review_7() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN IF NEW.id = 7 THEN RAISE EXCEPTION 'review 7 refused'; END IF; RETURN NEW; END $$"))
            conn.execute(sa.text("CREATE TRIGGER refuse_review_7 AFTER INSERT ON review_logs "
                                 "FOR EACH ROW EXECUTE FUNCTION refuse_review_7()"))
        else:
            conn.execute(sa.text("CREATE TRIGGER refuse_review_7 BEFORE INSERT ON review_logs WHEN NEW.id = 7 "
                                 "BEGIN SELECT RAISE(ABORT, 'review 7 refused'); END"))


def test_a_file_failing_in_the_database_after_its_first_chunks_stores_none_of_them(warehouse_engine, tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join([HEADER, *LINES]) + "\n")
    _reset(warehouse_engine)
    _refuse_review_7(warehouse_engine)

    with pytest.raises(sa.exc.DBAPIError, match="review 7 refused"):
        import_review_file(warehouse_engine, path, now=NOW, chunk_rows=2)

    with warehouse_engine.connect() as conn:
        for table in (review_logs, review_log_imports, review_log_rejects):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0, table.name


MEMORY_ROWS, MEMORY_CHUNK_ROWS = 100_000, 5_000
# Holding 100,000 rows took 113 MiB more at peak before chunked reading (2.2 GB for 2,000,000 rows);
# with chunks of 5,000 the peak grows by about 30 MiB (the chunk, buffers and allocator slack).
MEMORY_GROWTH_LIMIT_MIB = 50


@pytest.mark.slow
def test_the_memory_an_import_takes_follows_the_chunk_not_the_file(empty_sqlite_url, tmp_path):
    from learning_pipelines.db import migrate

    helper = Path(__file__).resolve().parents[1] / "support" / "import_peak_rss.py"
    path = tmp_path / "reviews.csv"
    subprocess.run([sys.executable, str(helper), "write", str(path), str(MEMORY_ROWS)], check=True)
    migrate.upgrade(empty_sqlite_url)
    result = subprocess.run([sys.executable, str(helper), "import", str(path), "--chunk-rows", str(MEMORY_CHUNK_ROWS)],
                            env={**os.environ, DATABASE_URL_ENV: empty_sqlite_url},
                            capture_output=True, text=True, check=True)
    measured = json.loads(result.stdout)
    assert measured["n_loaded"] == MEMORY_ROWS
    growth = measured["peak_mib"] - measured["peak_before_mib"]
    assert growth < MEMORY_GROWTH_LIMIT_MIB, f"importing {MEMORY_ROWS:,} rows raised the peak RSS by {growth:.0f} MiB"
