"""Property tests of the CSV and Parquet importers (Hypothesis).

Whatever the bytes, and whatever mix of good and bad cells the rows hold, an import ends either in
its summary or in the documented refusal (ReviewFileError), never another exception; every row
read is loaded or rejected; the rows expected to load are exactly the rows loaded; and no loaded
row breaks a rule, whatever the chunk size the rows are read in. 2,000 examples a run in all; one migrated SQLite
warehouse serves every example and is emptied between them.
"""

import csv
import datetime as dt
import io
import re

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from learning_pipelines.db import bulk, migrate
from learning_pipelines.db.engine import get_engine
from learning_pipelines.db.tables import concepts, review_log_imports, review_log_rejects, review_logs, users
from learning_pipelines.ingest import validation
from learning_pipelines.ingest.importer import import_review_file
from learning_pipelines.ingest.readers import DEFAULT_CHUNK_ROWS
from learning_pipelines.ingest.validation import ReviewFileError

pytestmark = pytest.mark.slow

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)
SEEDED_USERS = (1, 2)
SEEDED_CONCEPTS = (10, 11, 12, 13, 14)
COLUMNS = ("user_id", "card_id", "review_rating", "review_time", "review_duration", "state")
# Files are read a chunk of rows at a time: half the examples read theirs 2 or 3 rows at a time,
# which puts a row's duplicates in other chunks.
CHUNK_ROWS = st.sampled_from([2, 3, DEFAULT_CHUNK_ROWS, DEFAULT_CHUNK_ROWS])
PROPERTY_SETTINGS = dict(deadline=None, database=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                HealthCheck.data_too_large, HealthCheck.large_base_example])


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    folder = tmp_path_factory.mktemp("properties")
    url = f"sqlite:///{folder / 'warehouse.db'}"
    migrate.upgrade(url)
    engine = get_engine(url)
    # Each example commits a few times; durability across a power cut is not what is tested here.
    sa.event.listen(engine, "connect", lambda connection, _: connection.execute("PRAGMA synchronous=OFF"))
    _empty(engine)
    yield engine, folder
    engine.dispose()


def _empty(engine) -> None:
    with engine.begin() as conn:
        for table in (review_logs, review_log_rejects, review_log_imports, users, concepts):
            conn.execute(table.delete())
        conn.execute(users.insert(), [{"user_id": u} for u in SEEDED_USERS])
        conn.execute(concepts.insert(), [{"concept_id": c, "name": "c"} for c in SEEDED_CONCEPTS])


def _import(engine, path, register_unknown: bool, chunk_rows: int = DEFAULT_CHUNK_ROWS):
    """The summary, or None when the file was refused (the one exception an import may end in)."""
    try:
        return import_review_file(engine, path, user_id=1, register_unknown=register_unknown, now=NOW,
                                  chunk_rows=chunk_rows)
    except ReviewFileError as refusal:
        assert str(refusal).startswith(f"{path}: ") and "\n" not in str(refusal)
        return None


def _check_warehouse(engine, summary, expected: list[bool] | None = None, first_line: int = 2) -> None:
    """Counts agree with the summary (a refusal stores no review and one reject at most), every
    registered id is positive, every stored review passes the rules, and with `expected` (per row,
    whether it should load) the rows expected to load are the ones loaded: every other line is a reject."""
    with engine.connect() as conn:
        stored = bulk.read_frame(conn, sa.select(review_logs))
        rejected = list(conn.execute(sa.select(review_log_rejects.c.line_number)).scalars())
        known_users = set(conn.execute(sa.select(users.c.user_id)).scalars())
        known_concepts = set(conn.execute(sa.select(concepts.c.concept_id)).scalars())
    if summary is None:
        assert stored.empty and len(rejected) <= 1
        return
    assert summary.n_loaded + summary.n_already_present + summary.n_rejected == summary.n_rows
    assert (len(stored), len(rejected), summary.n_already_present) == (summary.n_loaded, summary.n_rejected, 0)
    assert min(known_users | known_concepts) > 0
    typed = stored.assign(rating=stored["rating"].astype("Int64"), state=stored["state"].astype("Int64"),
                          review_duration_ms=stored["review_duration_ms"].astype("Int64"))
    broken = validation.review_rule_violations(typed, NOW, known_users, known_concepts)
    assert (broken == "").all(), broken[broken != ""].tolist()
    if expected is not None:
        assert summary.n_rows == len(expected) and summary.n_loaded == sum(expected)
        assert set(rejected) == {line for line, good in enumerate(expected, start=first_line) if not good}


# --- cells: each strategy draws (value, whether the cell is good); a row is good when all its cells are ---

POISON = "x５٣\x00½²\",;eE\u00a0𝟙"
OTHER_SPACES = ["\u00a0", "\u3000", "\x1c", "\u2028"]  # Python's strip() removes them; a blank cell has none
_EPOCH_2000 = int(dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc).timestamp())
_NOW_S = int(NOW.timestamp())


def _instants(low_s: int, high_s: int):
    return st.integers(low_s, high_s).map(lambda s: dt.datetime.fromtimestamp(s, dt.timezone.utc))


# A few instants recur, so rows share a learner, card and instant (one review id) now and then.
TIMES = st.one_of(_instants(_EPOCH_2000 + 1, _NOW_S - 2 * 86_400),
                  st.sampled_from([dt.datetime(2024, 5, 1, 10, tzinfo=dt.timezone.utc),
                                   dt.datetime(2024, 5, 1, 10, 0, 1, tzinfo=dt.timezone.utc)]))
FUTURE = _instants(_NOW_S + 3_600, _NOW_S + 200 * 365 * 86_400)
PAST = _instants(_EPOCH_2000 - 100 * 365 * 86_400, _EPOCH_2000 - 3 * 3_600)
INTEGER_FORMATS = ("{}", " {}", "{}.0", "+{}")
TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S+00:00", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S")


def _poisoned(text: str, poison: str, at: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + poison + text[at:]


def _garbage(allow_newlines: bool):
    """Text holding at least one character that no number or ISO time has."""
    alphabet = st.characters(codec="utf-8", exclude_characters=None if allow_newlines else "\r\n")
    return st.builds(_poisoned, st.text(alphabet, max_size=8), st.sampled_from(POISON), st.integers(0, 8))


def _bad(texts) -> st.SearchStrategy:
    return texts.map(lambda text: (text, False))


def _whole(values, good: bool) -> st.SearchStrategy:
    return st.tuples(values, st.sampled_from(INTEGER_FORMATS)).map(
        lambda pair: (pair[1].format(pair[0]).replace("+-", "-"), good))


def _mostly_good(good, *bad):
    """Three draws in four good: rows then hold one or two bad cells, as real damaged rows do."""
    return st.tuples(st.integers(0, 3), good, st.one_of(*bad)).map(lambda t: t[2] if t[0] == 3 else t[1])


def _id_cell(seeded, register_unknown: bool, allow_newlines: bool):
    unknown = [i for i in range(-5, 40) if i not in seeded]
    return _mostly_good(_whole(st.sampled_from(seeded), True),
                        st.sampled_from(unknown).map(lambda i: (str(i), register_unknown and i > 0)),
                        _bad(st.sampled_from(["", " ", *OTHER_SPACES, "99999999999999999999"])),
                        _bad(_garbage(allow_newlines)))


def _range_cell(low: int, high: int, allow_newlines: bool, blank_ok: bool = False):
    outside = st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1, max_value=2**62))
    return _mostly_good(_whole(st.integers(low, high), True), _whole(outside, False), _bad(_garbage(allow_newlines)),
                        _bad(st.sampled_from(OTHER_SPACES)), st.sampled_from([("", blank_ok), (" \t", blank_ok)]))


def _time_text(moment: dt.datetime, style: int) -> str:
    if style == len(TIME_FORMATS):  # the same instant two hours east
        return moment.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    return moment.strftime(TIME_FORMATS[style])


def _time_cell(allow_newlines: bool):
    """(text, good, the UTC instant when good): the instant and the learner and card make the review id."""
    styles = st.integers(0, len(TIME_FORMATS))
    good = st.tuples(TIMES, styles).map(lambda pair: (_time_text(*pair), True, pair[0]))
    outside = st.tuples(st.one_of(FUTURE, PAST), styles).map(lambda pair: _time_text(*pair))
    words = st.sampled_from(["now", "today", "2024-02-30T10:00:00Z", "2024-05-01T25:00:00Z",
                             "٢٠٢٤-05-01T10:00:00Z", "２０２４-05-01", "", *OTHER_SPACES])
    return _mostly_good(good, st.one_of(outside, words, _garbage(allow_newlines)).map(lambda text: (text, False, None)))


def _row(register_unknown: bool, allow_newlines: bool):
    return st.tuples(_id_cell(SEEDED_USERS, register_unknown, allow_newlines),
                     _id_cell(SEEDED_CONCEPTS, register_unknown, allow_newlines),
                     _range_cell(1, 4, allow_newlines), _time_cell(allow_newlines),
                     _range_cell(0, validation.MAX_REVIEW_DURATION_MS, allow_newlines),
                     _range_cell(0, 3, allow_newlines, blank_ok=True))


def _expected(drawn, damaged: list[bool] | None = None) -> tuple[list[list[str]], list[bool]]:
    """(rows, per row whether it should load): a row loads when every cell is good, the row is not
    `damaged` and no earlier row that loads has its learner, card and instant (the same derived
    review id). A row drawn with `repeat` takes the learner, card and time of that earlier row, so
    ids meet often."""
    rows, expected, seen, cells_so_far = [], [], set(), []
    for (cells, repeat), row_damaged in zip(drawn, damaged or [False] * len(drawn)):
        if repeat is not None and repeat < len(cells_so_far):
            earlier = cells_so_far[repeat]
            cells = (earlier[0], earlier[1], cells[2], earlier[3], cells[4], cells[5])
        cells_so_far.append(cells)
        (user, user_ok), (card, card_ok), (rating, rating_ok), (when, when_ok, instant), \
            (duration, duration_ok), (state, state_ok) = cells
        good = user_ok and card_ok and rating_ok and when_ok and duration_ok and state_ok and not row_damaged
        if good:
            key = (int(float(user)), int(float(card)), instant)
            good, _ = key not in seen, seen.add(key)
        rows.append([user, card, rating, when, duration, state])
        expected.append(good)
    return rows, expected


REPEAT = st.one_of(st.none(), st.none(), st.integers(0, 9))


def _review_rows(register_unknown: bool, allow_newlines: bool):
    return st.lists(st.tuples(_row(register_unknown, allow_newlines), REPEAT), max_size=10)


# Built once: (register_unknown, allow_newlines) -> rows of (text, good) cells, for _expected.
REVIEW_ROWS = {(register, newlines): _review_rows(register, newlines) for register in (False, True)
               for newlines in (False, True)}


def _csv_bytes(rows, width_changes) -> bytes:
    """The rows written by the csv module, some given a field more or less."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row, change in zip(rows, width_changes):
        writer.writerow(row + ["7"] if change == "extra" else row[:-1] if change == "short" else row)
    return buffer.getvalue().encode("utf-8")


@settings(max_examples=420, **PROPERTY_SETTINGS)
@given(data=st.data(), register_unknown=st.booleans(), chunk_rows=CHUNK_ROWS)
def test_csv_rows_of_mixed_cells_load_exactly_the_good_ones(warehouse, data, register_unknown, chunk_rows):
    engine, folder = warehouse
    drawn = data.draw(REVIEW_ROWS[register_unknown, False])
    changes = data.draw(st.lists(st.sampled_from(["same"] * 8 + ["extra", "short"]), min_size=len(drawn),
                                 max_size=len(drawn)))
    rows, expected = _expected(drawn, damaged=[change != "same" for change in changes])
    path = folder / "rows.csv"
    path.write_bytes(_csv_bytes(rows, changes))
    summary = _import(engine, path, register_unknown, chunk_rows)
    try:
        assert summary is not None
        _check_warehouse(engine, summary, expected, first_line=2)
    finally:
        _empty(engine)


def _typed_id(seeded, register_unknown: bool):
    unknown = [i for i in range(-5, 40) if i not in seeded]
    return _mostly_good(st.sampled_from(seeded).map(lambda i: (i, True)),
                        st.sampled_from(unknown).map(lambda i: (i, register_unknown and i > 0)), st.just((None, False)))


def _typed_range(low: int, high: int, missing_ok: bool = False):
    return _mostly_good(st.integers(low, high).map(lambda i: (i, True)),
                        st.one_of(st.integers(-2**62, low - 1), st.integers(high + 1, 2**62)).map(lambda i: (i, False)),
                        st.just((None, missing_ok)))


def _typed_frame(rows_and_expected) -> tuple[pd.DataFrame, list[bool]]:
    rows, expected = rows_and_expected
    frame = pd.DataFrame(rows, columns=list(COLUMNS), dtype=object)
    for column in ("user_id", "card_id", "review_rating", "review_duration", "state"):
        frame[column] = pd.array(frame[column], dtype="Int64")
    frame["review_time"] = pd.to_datetime(frame["review_time"], utc=True)
    return frame, expected


def _typed_review_rows(register_unknown: bool):
    """A frame of typed cells (Int64 with nulls, UTC timestamps), and per row whether it should load."""
    times = _mostly_good(TIMES.map(lambda t: (t, True, t)), st.one_of(FUTURE, PAST).map(lambda t: (t, False, None)),
                         st.just((None, False, None)))
    row = st.tuples(_typed_id(SEEDED_USERS, register_unknown), _typed_id(SEEDED_CONCEPTS, register_unknown),
                    _typed_range(1, 4), times, _typed_range(0, validation.MAX_REVIEW_DURATION_MS),
                    _typed_range(0, 3, missing_ok=True))
    return st.lists(st.tuples(row, REPEAT), max_size=10).map(_expected).map(_typed_frame)


TYPED_REVIEW_ROWS = {register: _typed_review_rows(register) for register in (False, True)}


@settings(max_examples=330, **PROPERTY_SETTINGS)
@given(data=st.data(), register_unknown=st.booleans(), typed=st.booleans(), chunk_rows=CHUNK_ROWS)
def test_parquet_rows_of_mixed_cells_load_exactly_the_good_ones(warehouse, data, register_unknown, typed, chunk_rows):
    engine, folder = warehouse
    if typed:
        frame, expected = data.draw(TYPED_REVIEW_ROWS[register_unknown])
    else:  # Parquet has no lines, so its text cells may hold line breaks
        rows, expected = _expected(data.draw(REVIEW_ROWS[register_unknown, True]))
        frame = pd.DataFrame(rows, columns=list(COLUMNS), dtype=object)
    path = folder / "rows.parquet"
    frame.to_parquet(path)
    summary = _import(engine, path, register_unknown, chunk_rows)
    try:
        assert summary is not None
        _check_warehouse(engine, summary, expected, first_line=1)
    finally:
        _empty(engine)


CSV_TOKENS = st.sampled_from([b",", b'"', b"\n", b"\r\n", b"\r", b"\x00", b"\xef\xbb\xbf", b"\xff", b"\xc3", b"1",
                              b"10", b"3", b"-2", b"2024-05-01T10:00:00Z", b"5000", b" ", b"\t", "５".encode(),
                              b"card_id", b"user_id", b"nan", b"1e9"])
HEADER = b"card_id,review_rating,review_time,review_duration,user_id\n"


def _physical_rows(content: bytes) -> int:
    lines = re.split(rb"\r\n|\r|\n", content.removeprefix(b"\xef\xbb\xbf"))
    return sum(1 for line in lines[1:] if line)


@settings(max_examples=500, **PROPERTY_SETTINGS)
@given(content=st.one_of(st.binary(max_size=600),
                         st.builds(lambda body: HEADER + body, st.binary(max_size=600)),
                         st.builds(lambda tokens: HEADER + b"".join(tokens), st.lists(CSV_TOKENS, max_size=120))))
def test_csv_bytes_end_in_a_summary_or_a_refusal_and_every_line_is_counted(warehouse, content):
    engine, folder = warehouse
    path = folder / "bytes.csv"
    path.write_bytes(content)
    summary = _import(engine, path, register_unknown=False)
    try:
        _check_warehouse(engine, summary)
        if summary is not None:
            assert summary.n_rows == _physical_rows(content)
    finally:
        _empty(engine)


def _valid_parquet() -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame({"card_id": [10, 11, 12], "review_rating": [3, 4, 9],
                  "review_time": pd.to_datetime(["2024-05-01T10:00Z", "2024-05-02T10:00Z", "2024-05-03T10:00Z"]),
                  "review_duration": [5000, 6000, 7000], "user_id": [1, 2, 1]}).to_parquet(buffer)
    return buffer.getvalue()


VALID_PARQUET = _valid_parquet()


def _damaged(cut: int, flips: list[tuple[int, int]]) -> bytes:
    content = bytearray(VALID_PARQUET[:len(VALID_PARQUET) - cut] if cut else VALID_PARQUET)
    for position, value in flips:
        if content:
            content[position % len(content)] = value
    return bytes(content)


@settings(max_examples=750, **PROPERTY_SETTINGS)
@given(content=st.one_of(st.binary(max_size=600),
                         st.builds(_damaged, st.integers(0, 64),
                                   st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4))))
@example(content=_damaged(0, [(42, 1)]))  # a page header pyarrow 26 decoded to no rows, without an error: refused
def test_parquet_bytes_end_in_a_summary_or_a_refusal(warehouse, content):
    engine, folder = warehouse
    path = folder / "bytes.parquet"
    path.write_bytes(content)
    summary = _import(engine, path, register_unknown=False)
    try:
        _check_warehouse(engine, summary)
        assert summary is None or summary.n_rows == 3  # damage that still reads leaves the three rows
    finally:
        _empty(engine)
