import datetime as dt
import json
import sqlite3
import zipfile

import pandas as pd
import pytest
import sqlalchemy as sa

from learning_pipelines.db.tables import review_log_rejects, review_logs
from learning_pipelines.ingest.importer import FIRST_REJECTS_SHOWN, import_review_file
from learning_pipelines.ingest.validation import ReviewFileError

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)
HEADER = "card_id,review_rating,review_time,review_duration,user_id"


def _count(engine, table=review_logs) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def _rejects(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.select(review_log_rejects).order_by(review_log_rejects.c.line_number), conn)


def _seed(engine, user_ids=(1,), concept_ids=(10, 11, 12)) -> None:
    with engine.begin() as conn:
        for user_id in user_ids:
            conn.execute(sa.text("INSERT INTO users (user_id) VALUES (:u)"), {"u": user_id})
        for concept_id in concept_ids:
            conn.execute(sa.text("INSERT INTO concepts (concept_id, name) VALUES (:c, 'c')"), {"c": concept_id})


def test_real_anki_file_loads_every_review_once(warehouse_engine, anki_csv):
    first = import_review_file(warehouse_engine, anki_csv, user_id=1, register_unknown=True)
    assert (first.n_rows, first.n_loaded, first.n_rejected) == (12_580, 12_580, 0)
    assert first.n_registered_concepts == 1_205
    second = import_review_file(warehouse_engine, anki_csv, user_id=1, register_unknown=True)
    assert (second.n_loaded, second.n_already_present, second.n_rejected) == (0, 12_580, 0)
    assert _count(warehouse_engine) == 12_580
    with warehouse_engine.connect() as conn:
        first_review = conn.execute(sa.select(review_logs).order_by(review_logs.c.reviewed_at).limit(1)).one()
    assert first_review.reviewed_at == dt.datetime(2024, 3, 29, 20, 32, 32, 250000, tzinfo=dt.timezone.utc)
    assert (first_review.concept_id, first_review.rating, first_review.review_duration_ms) == (1711684180217, 1, 25060)


# One good row and one bad row of every kind the platform has seen; each reason names its value.
GOOD_LINES = [
    "10,3,2024-05-01T10:00:00+00:00,5000,1",
    "11,1,2024-05-02T10:00:00Z,7000,1",
    "12,4,2024-05-03 10:00:00,3000,1",  # naive time: taken as UTC
]
BAD_LINES = {
    "10,0,2024-05-04T10:00:00Z,5000,1": "review_rating 0 outside 1..4",
    "10,5,2024-05-05T10:00:00Z,5000,1": "review_rating 5 outside 1..4",
    "10,3,2024-05-06T10:00:00Z,-20,1": "review_duration -20 ms is negative",
    "10,3,2024-05-07T10:00:00Z,99999999,1": "review_duration 99999999 ms is over 3600000 ms",
    "10,NaN,2024-05-08T10:00:00Z,5000,1": "review_rating 'NaN' is not a whole number",
    "10,3,2030-01-01T10:00:00Z,5000,1": "review_time 2030-01-01 10:00:00+00:00 is in the future",
    "10,3,1999-12-31T23:59:59Z,5000,1": "is before 2000-01-01",
    "10,3,2024-05-09T10:00:00Z,5000,42": "unknown user_id 42",
    "999,3,2024-05-10T10:00:00Z,5000,1": "unknown concept (card_id) 999",
    "10,3,2024-05-01T10:00:00+00:00,5000,1": "duplicate review id",  # same learner, card and time as line 2
    "ten,3,2024-05-11T10:00:00Z,5000,1": "card_id 'ten' is not a whole number",
    "10,3,yesterday,5000,1": "review_time 'yesterday' is not an ISO-8601 timestamp",
    "10,3,2024-05-12T10:00:00Z,,1": "review_duration is missing",
    "10,3,2024-05-13T10:00:00Z,5000,1,extra": "line has 6 field(s), expected 5",
}
TRUNCATED_LAST_LINE = "11,3,2024-05-1"


def test_every_kind_of_bad_row_is_rejected_with_its_reason_and_good_rows_kept(warehouse_engine, tmp_path):
    _seed(warehouse_engine)
    path = tmp_path / "reviews.csv"
    lines = [HEADER, *GOOD_LINES, *BAD_LINES, TRUNCATED_LAST_LINE]
    path.write_text("\n".join(lines))  # no final newline: the file stops mid-row

    summary = import_review_file(warehouse_engine, path, now=NOW)

    assert summary.n_loaded == len(GOOD_LINES)
    assert summary.n_rejected == len(BAD_LINES) + 1
    assert _count(warehouse_engine) == len(GOOD_LINES)
    rejects = _rejects(warehouse_engine)
    assert len(rejects) == len(BAD_LINES) + 1
    expectations = [*BAD_LINES.items(), (TRUNCATED_LAST_LINE, "line has 3 field(s), expected 5")]
    for position, (line, expected) in enumerate(expectations):
        line_number = 2 + len(GOOD_LINES) + position  # after the header and the good lines
        row = rejects.loc[rejects["line_number"] == line_number]
        assert len(row) == 1, line
        assert expected in row["reason"].iloc[0], (line, row["reason"].iloc[0])
        assert row["source"].iloc[0] == str(path)
    duplicate = rejects.loc[rejects["reason"].str.contains("duplicate")].iloc[0]
    assert "(first on line 2)" in duplicate["reason"]
    assert json.loads(rejects.loc[rejects["line_number"] == 5, "raw_row"].iloc[0])["review_rating"] == "0"
    assert "rejected 2 x review_rating <value> outside 1..4" in summary.message()
    # The first rejected lines with their numbers and reasons, and the command that lists them all.
    first = sorted(zip(rejects["line_number"], rejects["reason"]))[:FIRST_REJECTS_SHOWN]
    assert [f"    line {line}: {reason}" for line, reason in first] == [
        line for line in summary.message().splitlines() if line.startswith("    line ")]
    assert summary.message().endswith(f"learning-pipelines rejects --file {path}")

    again = import_review_file(warehouse_engine, path, now=NOW)
    assert (again.n_loaded, again.n_already_present, again.n_rejected) == (0, len(GOOD_LINES), len(BAD_LINES) + 1)
    assert len(_rejects(warehouse_engine)) == len(BAD_LINES) + 1, "re-importing a file records its rejects once"


def test_a_missing_column_fails_the_file_with_a_clear_error_and_no_reject_row(warehouse_engine, tmp_path):
    path = tmp_path / "no_duration.csv"
    path.write_text("card_id,review_rating,review_time\n10,3,2024-05-01T10:00:00Z\n")
    with pytest.raises(ReviewFileError, match="missing required column.*review_duration"):
        import_review_file(warehouse_engine, path, user_id=1, now=NOW)
    assert _count(warehouse_engine) == 0
    assert _rejects(warehouse_engine).empty  # a refusal of the file, not a rejected row


def test_a_file_without_learner_needs_user_id(warehouse_engine, anki_csv):
    with pytest.raises(ReviewFileError, match="no user_id column"):
        import_review_file(warehouse_engine, anki_csv)


def test_a_truncated_parquet_file_is_refused_as_a_whole(warehouse_engine, tmp_path):
    path = tmp_path / "reviews.parquet"
    pd.DataFrame({"card_id": [10], "review_rating": [3], "review_time": ["2024-05-01T10:00:00Z"],
                  "review_duration": [5000]}).to_parquet(path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ReviewFileError, match="not a readable Parquet file"):
        import_review_file(warehouse_engine, path, user_id=1, now=NOW)


def test_parquet_with_typed_columns(warehouse_engine, tmp_path):
    _seed(warehouse_engine, user_ids=(1, 2))
    path = tmp_path / "reviews.parquet"
    pd.DataFrame({
        "user_id": [1, 2, 2],
        "card_id": [10, 11, 12],
        "review_rating": [3, 2, 7],
        "review_time": pd.to_datetime(["2024-05-01T10:00Z", "2024-05-01T11:00Z", "2024-05-01T12:00Z"], utc=True),
        "review_duration": [5000, 6000, 7000],
    }).to_parquet(path)
    summary = import_review_file(warehouse_engine, path, now=NOW)
    assert (summary.n_loaded, summary.n_rejected) == (2, 1)
    assert _rejects(warehouse_engine)["reason"].tolist() == ["review_rating 7 outside 1..4"]


def test_a_parquet_time_beyond_pythons_calendar_is_a_rejected_row(warehouse_engine, tmp_path):
    """Year 11157 fits a Parquet timestamp but not a Python datetime: that row is refused, the others load."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    _seed(warehouse_engine, user_ids=(1,))
    path = tmp_path / "reviews.parquet"
    times = np.array(["2024-05-01T10:00:00", "11157-01-01T00:00:00"], dtype="datetime64[us]")
    pq.write_table(pa.table({"user_id": [1, 1], "card_id": [10, 11], "review_rating": [3, 3],
                             "review_time": pa.array(times, type=pa.timestamp("us", tz="UTC")),
                             "review_duration": [5000, 6000]}), path)
    summary = import_review_file(warehouse_engine, path, now=NOW)
    assert (summary.n_loaded, summary.n_rejected) == (1, 1)
    assert "review_time" in _rejects(warehouse_engine)["reason"].iloc[0]


def _anki_collection(path, revlog_rows) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE revlog (id INTEGER PRIMARY KEY, cid INTEGER, usn INTEGER, ease INTEGER, "
                     "ivl INTEGER, lastIvl INTEGER, factor INTEGER, time INTEGER, type INTEGER)")
        conn.executemany("INSERT INTO revlog VALUES (?, ?, -1, ?, 1, 0, 2500, ?, ?)", revlog_rows)


ANKI_REVLOG = [
    # id (answer time, ms), card id, ease, duration ms, type
    (1714557600000, 501, 3, 4000, 0),
    (1714644000000, 501, 1, 9000, 1),
    (1714644600000, 501, 3, 3000, 2),
    (1714730400000, 502, 4, 2000, 0),
    (1714816800000, 502, 0, 0, 4),  # manual reschedule: not a review
    (1714903200000, 502, 6, 2000, 1),  # ease out of range: rejected
]


@pytest.mark.parametrize("packaging", ["anki2", "colpkg", "colpkg-zstd"])
def test_anki_collection_revlog(warehouse_engine, tmp_path, packaging):
    database = tmp_path / "collection.anki2"
    _anki_collection(database, ANKI_REVLOG)
    path = database
    if packaging != "anki2":
        path = tmp_path / "backup.colpkg"
        with zipfile.ZipFile(path, "w") as archive:
            if packaging == "colpkg":
                archive.write(database, "collection.anki21")
            else:
                import zstandard

                archive.writestr("collection.anki21b", zstandard.ZstdCompressor().compress(database.read_bytes()))
    summary = import_review_file(warehouse_engine, path, user_id=7, register_unknown=True, now=NOW)
    assert (summary.n_loaded, summary.n_not_reviews, summary.n_rejected) == (4, 1, 1)
    with warehouse_engine.connect() as conn:
        rows = conn.execute(sa.select(review_logs.c.concept_id, review_logs.c.rating, review_logs.c.state)
                            .order_by(review_logs.c.reviewed_at)).all()
    assert [tuple(r) for r in rows] == [(501, 3, 0), (501, 1, 1), (501, 3, 2), (502, 4, 0)]
    assert "review_rating 6 outside 1..4" in _rejects(warehouse_engine)["reason"].iloc[0]


def test_not_an_anki_package(warehouse_engine, tmp_path):
    path = tmp_path / "broken.colpkg"
    path.write_bytes(b"definitely not a zip")
    with pytest.raises(ReviewFileError, match="not an Anki package"):
        import_review_file(warehouse_engine, path, user_id=1, now=NOW)


# Scheduler v1 (three buttons on learning and relearning cards): ease 2 is Good, 3 is Easy there.
V1_REVLOG = [
    # id (answer time, ms), card id, ease, duration ms, type (0 learning, 1 review, 2 relearning)
    (1714557600000, 601, 2, 4000, 0),  # learning Good
    (1714557660000, 601, 3, 3000, 0),  # learning Easy
    (1714644000000, 601, 1, 9000, 1),  # review Again: its meaning never changed
    (1714644600000, 601, 2, 3000, 2),  # relearning Good
    (1714730400000, 601, 2, 2000, 1),  # review Hard: a review card had four buttons on v1 too
    (1714816800000, 601, 3, 2000, 1),  # review Good
]
STORED_AS_V2 = [3, 4, 1, 3, 2, 3]  # learning/relearning answers one up, reviews as they are


def _anki_schema_11(path, revlog_rows, conf: dict | str) -> None:
    """A collection as Anki 2.1 (schema 11) keeps it: `col.conf` holds the configuration as JSON."""
    _anki_collection(path, revlog_rows)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE col (id INTEGER PRIMARY KEY, crt INTEGER, ver INTEGER, conf TEXT)")
        conn.execute("INSERT INTO col VALUES (1, 0, 11, ?)", (conf if isinstance(conf, str) else json.dumps(conf),))


def _anki_schema_18(path, revlog_rows, sched_ver: int | None) -> None:
    """A collection as current Anki keeps it: a `config` table of JSON values, `col.conf` left empty."""
    _anki_collection(path, revlog_rows)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE col (id INTEGER PRIMARY KEY, crt INTEGER, ver INTEGER, conf TEXT)")
        conn.execute("INSERT INTO col VALUES (1, 0, 18, '')")
        conn.execute("CREATE TABLE config (KEY TEXT PRIMARY KEY, usn INTEGER, mtime_secs INTEGER, val BLOB)")
        if sched_ver is not None:
            conn.execute("INSERT INTO config VALUES ('schedVer', 0, 0, ?)", (json.dumps(sched_ver).encode(),))


def _stored_ratings(engine) -> list[int]:
    with engine.connect() as conn:
        return [r for (r,) in conn.execute(sa.select(review_logs.c.rating).order_by(review_logs.c.reviewed_at))]


@pytest.mark.parametrize(("build", "remapped"), [
    (lambda path: _anki_schema_11(path, V1_REVLOG, {"schedVer": 1}), True),
    (lambda path: _anki_schema_11(path, V1_REVLOG, {"curModel": 1}), True),  # no schedVer: v1, as in Anki
    (lambda path: _anki_schema_18(path, V1_REVLOG, None), True),
    (lambda path: _anki_schema_11(path, V1_REVLOG, {"schedVer": 2}), False),
    (lambda path: _anki_schema_18(path, V1_REVLOG, 2), False),
    # A configuration that cannot be read costs no row: the answers tell (Good, the usual one, is ease 2 here).
    (lambda path: _anki_schema_11(path, V1_REVLOG, "{not json"), True),
], ids=["schema11-v1", "schema11-unset", "schema18-unset", "schema11-v2", "schema18-v2", "schema11-damaged"])
def test_scheduler_v1_learning_answers_are_stored_with_their_v2_meaning(warehouse_engine, tmp_path, build, remapped):
    path = tmp_path / "collection.anki2"
    build(path)
    summary = import_review_file(warehouse_engine, path, user_id=7, register_unknown=True, now=NOW)
    assert summary.n_loaded == len(V1_REVLOG)
    if remapped:
        assert _stored_ratings(warehouse_engine) == STORED_AS_V2
        assert summary.n_remapped == 3
        assert "3 learning/relearning answer(s) remapped" in summary.message()
    else:
        assert _stored_ratings(warehouse_engine) == [row[2] for row in V1_REVLOG]
        assert summary.n_remapped == 0 and "remapped" not in summary.message()


def test_a_fourth_button_on_learning_answers_means_v2_whatever_the_configuration_says(warehouse_engine, tmp_path):
    path = tmp_path / "collection.anki2"
    _anki_schema_11(path, [*V1_REVLOG, (1714903200000, 602, 4, 2000, 0)], {"schedVer": 1})
    summary = import_review_file(warehouse_engine, path, user_id=7, register_unknown=True, now=NOW)
    assert summary.n_remapped == 0
    assert _stored_ratings(warehouse_engine) == [row[2] for row in V1_REVLOG] + [4]


@pytest.mark.parametrize(("learning_eases", "remapped"), [((2, 2, 3), 3), ((3, 3, 2), 0)])
def test_a_deck_export_is_read_by_its_answers_not_the_configuration_it_carries(warehouse_engine, tmp_path,
                                                                               learning_eases, remapped):
    """An .apkg's configuration is the exporting program's: Good, the usual learning answer, is ease 2 on v1 and 3
    on v2; here the configuration says v2 both times."""
    database = tmp_path / "collection.anki2"
    rows = [(1714557600000 + 60_000 * i, 700 + i, ease, 3000, 0) for i, ease in enumerate(learning_eases)]
    _anki_schema_11(database, rows, {"schedVer": 2})
    path = tmp_path / "shared_deck.apkg"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(database, "collection.anki2")
    summary = import_review_file(warehouse_engine, path, user_id=7, register_unknown=True, now=NOW)
    assert summary.n_remapped == remapped
    assert _stored_ratings(warehouse_engine) == [e + 1 if remapped else e for e in learning_eases]


def test_import_command_says_how_many_answers_it_remapped(warehouse_url, tmp_path, capsys):
    from learning_pipelines.cli import main

    path = tmp_path / "collection.anki2"
    _anki_schema_11(path, V1_REVLOG, {"schedVer": 1})
    assert main(["import", str(path), "--user-id", "7", "--register-unknown", "--database-url", warehouse_url]) == 0
    assert "scheduler v1 collection: 3 learning/relearning answer(s) remapped" in capsys.readouterr().out
