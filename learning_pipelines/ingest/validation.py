"""Row-level validation of review logs: every bad row gets a reason that names its value.

Two steps, both pure pandas: `parse_reviews` turns text columns into typed ones (a value
that does not parse is a reason), `review_rule_violations` checks typed rows against the
platform's rules. The importers use both; the `review_logs` asset re-checks the warehouse
with the second.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re

import numpy as np
import pandas as pd

from learning_pipelines.domain.review_ids import derive_review_ids

REQUIRED_COLUMNS = ("card_id", "review_rating", "review_time", "review_duration")
OPTIONAL_COLUMNS = ("user_id", "review_id", "state")
EARLIEST_REVIEW = pd.Timestamp("2000-01-01", tz="UTC")  # the platform has no data before 2000
CLOCK_SKEW = pd.Timedelta(minutes=5)  # client clocks run a little ahead; more is a bad row
MAX_REVIEW_DURATION_MS = 3_600_000  # an hour on one card is not a review, it is an idle screen
TYPED_COLUMNS = ("id", "user_id", "concept_id", "rating", "reviewed_at", "review_duration_ms", "state")
# ASCII digits only: int() also reads full-width and Arabic-Indic digits, which no review file means.
_INTEGER_TEXT = re.compile(r"[ \t]*[+-]?[0-9]+(\.0*)?[ \t]*")
# A four-digit year first, then only the characters of an ISO-8601 time: pandas alone also reads
# "now" and "today" as timestamps.
_ISO_TEXT = re.compile(r"[0-9]{4}[-0-9T:.,+ Z]*")
_INT64_MAX = 2**63 - 1
_BLANK = " \t"  # a cell of these only is empty; other spaces (no-break, ideographic) are content


class ReviewFileError(ValueError):
    """The file as a whole cannot be read (missing column, not the format it claims, unreadable)."""


class ReviewFileUsageError(ReviewFileError):
    """The file does not fit the command as given (a required column missing, no user_id column and no --user-id):
    a refusal of the file, not of its rows, so nothing is recorded in review_log_rejects."""


@dataclasses.dataclass(frozen=True)
class ValidatedReviews:
    good: pd.DataFrame  # TYPED_COLUMNS + line_number
    rejects: pd.DataFrame  # line_number, review_id, reviewed_at, raw_row, reason


def check_columns(columns, source: str, has_default_user: bool) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ReviewFileUsageError(f"{source}: missing required column(s) {', '.join(missing)}; "
                              f"expected {', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(OPTIONAL_COLUMNS)})")
    if "user_id" not in columns and not has_default_user:
        raise ReviewFileUsageError(f"{source}: no user_id column; say whose reviews these are (--user-id)")


def _texts(cells: pd.Series) -> list[str]:
    """The cells as text, a missing one (None, NaN, NA) as "". A list, not a Series of strings: a chunk of a few
    rows is read in a fraction of the time (a file is checked a chunk at a time)."""
    return [cell if isinstance(cell, str) else "" if cell is None or cell is pd.NA or cell != cell else str(cell)
            for cell in cells.tolist()]


def _parse_integers(text: pd.Series, name: str) -> tuple[pd.Series, pd.Series]:
    """Whole numbers ("3" or "3.0") as Int64, and a reason where a value is not one."""
    values, missing, reasons = [], [], []
    for value in _texts(text):
        if _INTEGER_TEXT.fullmatch(value) and abs(number := int(value.strip().split(".")[0])) <= _INT64_MAX:
            values.append(number)
            missing.append(False)
            reasons.append("")
        else:
            values.append(0)
            missing.append(True)
            reasons.append(f"{name} {value!r} is not a whole number" if value.strip(_BLANK) else f"{name} is missing")
    integers = pd.arrays.IntegerArray(np.array(values, dtype=np.int64), np.array(missing, dtype=bool))
    return pd.Series(integers, index=text.index), pd.Series(reasons, index=text.index, dtype=object)


def join_reasons(*parts: pd.Series) -> pd.Series:
    """Per row, the non-empty reasons of every part joined by '; '."""
    joined = np.full(len(parts[0]), "", dtype=object)
    for part in parts:
        text = part.fillna("").to_numpy(dtype=object)
        has = text != ""
        joined = np.where(has & (joined != ""), joined + "; " + text, np.where(has, text, joined))
    return pd.Series(joined, index=parts[0].index, dtype=object)


def parse_reviews(raw: pd.DataFrame, default_user_id: int | None) -> tuple[pd.DataFrame, pd.Series]:
    """Typed review rows from text rows, plus each row's parse problems ("" when none)."""
    concept_id, concept_reason = _parse_integers(raw["card_id"], "card_id")
    rating, rating_reason = _parse_integers(raw["review_rating"], "review_rating")
    duration, duration_reason = _parse_integers(raw["review_duration"], "review_duration")
    reviewed_at, time_reason = _parse_times(raw["review_time"])
    reasons = [concept_reason, rating_reason, duration_reason, time_reason]
    if "user_id" in raw:
        user_id, user_reason = _parse_integers(raw["user_id"], "user_id")
        reasons.append(user_reason)
    else:
        user_id = pd.Series(default_user_id, index=raw.index, dtype="Int64")
    state = pd.Series(pd.NA, index=raw.index, dtype="Int64")
    if "state" in raw:
        state, state_reason = _parse_integers(raw["state"], "state")
        given = np.array([value.strip(_BLANK) != "" for value in _texts(raw["state"])], dtype=bool)
        reasons.append(state_reason.where(given, ""))  # state is optional: a blank cell is no reason
    typed = pd.DataFrame({"user_id": user_id, "concept_id": concept_id, "rating": rating,
                          "reviewed_at": reviewed_at, "review_duration_ms": duration, "state": state})
    if "review_id" in raw:
        typed["id"], id_reason = _parse_integers(raw["review_id"], "review_id")
        reasons.append(id_reason)
    else:
        typed["id"] = _derived_ids(typed)
    return typed[list(TYPED_COLUMNS)], join_reasons(*reasons)


def _parse_times(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """ISO-8601 times as UTC timestamps (no offset: UTC), and a reason where a value is not one."""
    values = _texts(text)
    iso_looking = pd.Series([value if _ISO_TEXT.fullmatch(value) else "" for value in values], index=text.index,
                            dtype=object)
    reviewed_at = pd.to_datetime(iso_looking, utc=True, format="ISO8601", errors="coerce")
    reasons = ["" if parsed else f"review_time {value!r} is not an ISO-8601 timestamp" if value.strip(_BLANK)
               else "review_time is missing" for value, parsed in zip(values, reviewed_at.notna().tolist())]
    return reviewed_at, pd.Series(reasons, index=text.index, dtype=object)


def _derived_ids(typed: pd.DataFrame) -> pd.Series:
    user, concept, when = typed["user_id"].array, typed["concept_id"].array, typed["reviewed_at"].array
    ok = ~(np.asarray(user.isna()) | np.asarray(concept.isna()) | np.asarray(when.isna()))
    ids = np.zeros(len(typed), dtype=np.int64)
    if ok.any():
        ids[ok] = derive_review_ids(user.to_numpy("int64", na_value=0)[ok], concept.to_numpy("int64", na_value=0)[ok],
                                    when[ok].as_unit("ms").asi8)
    return pd.Series(pd.arrays.IntegerArray(ids, ~ok), index=typed.index)


def _utc(moment: dt.datetime) -> pd.Timestamp:
    return pd.Timestamp(moment).tz_convert("UTC") if pd.Timestamp(moment).tzinfo else pd.Timestamp(moment, tz="UTC")


def times_within_rules(text: pd.Series, now: dt.datetime) -> pd.Series:
    """The review times (text) that parse and break no rule on times, as UTC timestamps: a row with
    any other time is never loaded."""
    reviewed_at, _ = _parse_times(text)
    now = _utc(now)
    return reviewed_at[(reviewed_at >= EARLIEST_REVIEW) & (reviewed_at <= now + CLOCK_SKEW)]


def review_rule_violations(
    typed: pd.DataFrame,
    now: dt.datetime,
    known_users: set[int] | None = None,
    known_concepts: set[int] | None = None,
) -> pd.Series:
    """Each row's broken rules ("" when none). Missing values are left to the parser's reasons."""
    now = _utc(now)
    reasons = np.full(len(typed), "", dtype=object)

    def rule(broken: np.ndarray, column: str, message: str) -> None:
        """`message` with '{}' standing for the row's value in `column`, on the `broken` rows."""
        if broken.any():
            text = np.array([message.format(v) for v in typed.loc[broken, column].astype(str)], dtype=object)
            before = reasons[broken]
            reasons[broken] = np.where(before == "", text, before + "; " + text)

    def numbers(column: str) -> np.ndarray:  # missing values are NaN, which breaks no rule
        return typed[column].to_numpy(dtype="float64", na_value=np.nan)

    rating, duration, state = numbers("rating"), numbers("review_duration_ms"), numbers("state")
    when = typed["reviewed_at"]
    rule((rating < 1) | (rating > 4), "rating", "review_rating {} outside 1..4")
    rule(duration < 0, "review_duration_ms", "review_duration {} ms is negative")
    rule(duration > MAX_REVIEW_DURATION_MS, "review_duration_ms",
         f"review_duration {{}} ms is over {MAX_REVIEW_DURATION_MS} ms (1 hour)")
    rule((when > now + CLOCK_SKEW).to_numpy(bool), "reviewed_at", "review_time {} is in the future")
    rule((when < EARLIEST_REVIEW).to_numpy(bool), "reviewed_at", "review_time {} is before 2000-01-01")
    rule((state < 0) | (state > 3), "state", "state {} outside 0..3")
    if known_users is not None:
        rule((typed["user_id"].notna() & ~typed["user_id"].isin(known_users)).to_numpy(bool), "user_id",
             "unknown user_id {}")
    if known_concepts is not None:
        rule((typed["concept_id"].notna() & ~typed["concept_id"].isin(known_concepts)).to_numpy(bool), "concept_id",
             "unknown concept (card_id) {}")
    return pd.Series(reasons, index=typed.index, dtype=object)


def split_valid(raw: pd.DataFrame, typed: pd.DataFrame, reasons: pd.Series,
                earlier_first_lines: pd.Series | None = None) -> ValidatedReviews:
    """Good rows, and rejects carrying their raw text; a repeated review id keeps its first good row,
    among these rows or, for a file read in chunks, the earlier chunks' (`earlier_first_lines`: the
    line of the earlier chunks' good row with each id they took, indexed by id)."""
    reasons = reasons.to_numpy(dtype=object).copy()
    candidate = reasons == ""
    ids = typed["id"].where(candidate)  # a rejected row's id is not taken
    duplicate = (ids.duplicated(keep="first") & ids.notna()).to_numpy(bool)
    first_line = raw["line_number"].groupby(ids).transform("first").to_numpy()
    if earlier_first_lines is not None and len(earlier_first_lines):
        earlier = ids.astype("Int64").map(earlier_first_lines).fillna(0).to_numpy("int64")
        duplicate = duplicate | (earlier > 0)
        first_line = np.where(earlier > 0, earlier, first_line)
    if duplicate.any():
        reasons[duplicate] = [f"duplicate review id {i} (first on line {int(line)})"
                              for i, line in zip(ids[duplicate], first_line[duplicate])]
    bad = reasons != ""
    good = typed.loc[~bad].assign(line_number=raw.loc[~bad, "line_number"])
    raw_columns = [c for c in raw.columns if c != "line_number"]
    rejects = pd.DataFrame({
        "line_number": raw.loc[bad, "line_number"],
        "review_id": typed.loc[bad, "id"],
        "reviewed_at": typed.loc[bad, "reviewed_at"],
        "raw_row": [json.dumps(dict(zip(raw_columns, cells)), default=str)
                    for cells in zip(*(raw[column].to_numpy(dtype=object)[bad] for column in raw_columns))],
        "reason": reasons[bad],
    })
    return ValidatedReviews(good.reset_index(drop=True), rejects.reset_index(drop=True))


def parse_file_rows(raw: pd.DataFrame, default_user_id: int | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """(raw rows of the known columns, typed rows, reasons so far) for rows a reader returned."""
    read_reasons = raw.get("_read_error", pd.Series("", index=raw.index))
    raw = raw[[c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, "line_number") if c in raw.columns]]
    typed, parse_reasons = parse_reviews(raw, default_user_id=default_user_id)
    return raw, typed, join_reasons(read_reasons, parse_reasons)
