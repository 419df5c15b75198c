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

import numpy as np
import pandas as pd

from learning_pipelines.domain.review_ids import derive_review_ids

REQUIRED_COLUMNS = ("card_id", "review_rating", "review_time", "review_duration")
OPTIONAL_COLUMNS = ("user_id", "review_id", "state")
EARLIEST_REVIEW = pd.Timestamp("2000-01-01", tz="UTC")  # the platform has no data before 2000
CLOCK_SKEW = pd.Timedelta(minutes=5)  # client clocks run a little ahead; more is a bad row
MAX_REVIEW_DURATION_MS = 3_600_000  # an hour on one card is not a review, it is an idle screen
TYPED_COLUMNS = ("id", "user_id", "concept_id", "rating", "reviewed_at", "review_duration_ms", "state")
_INTEGER_TEXT = r"\s*[+-]?\d+(\.0*)?\s*"
_INT64_MAX = 2**63 - 1


class ReviewFileError(ValueError):
    """The file as a whole cannot be read (missing column, not the format it claims, unreadable)."""


@dataclasses.dataclass(frozen=True)
class ValidatedReviews:
    good: pd.DataFrame  # TYPED_COLUMNS + line_number
    rejects: pd.DataFrame  # line_number, review_id, reviewed_at, raw_row, reason


def check_columns(columns, source: str, has_default_user: bool) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ReviewFileError(f"{source}: missing required column(s) {', '.join(missing)}; "
                              f"expected {', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(OPTIONAL_COLUMNS)})")
    if "user_id" not in columns and not has_default_user:
        raise ReviewFileError(f"{source}: no user_id column; say whose reviews these are (--user-id)")


def _parse_integers(text: pd.Series, name: str) -> tuple[pd.Series, pd.Series]:
    """Whole numbers ("3" or "3.0") as Int64, and a reason where a value is not one."""
    text = text.fillna("").astype(str)
    looks_integral = text.str.fullmatch(_INTEGER_TEXT)
    values = pd.Series(pd.NA, index=text.index, dtype="Int64")
    parsed = [int(v.strip().split(".")[0]) for v in text[looks_integral]]
    in_range = np.array([abs(v) <= _INT64_MAX for v in parsed], dtype=bool)
    ok_index = text.index[looks_integral][in_range]
    values.loc[ok_index] = [v for v, keep in zip(parsed, in_range) if keep]
    reason = pd.Series("", index=text.index)
    blank = text.str.strip() == ""
    reason[blank] = f"{name} is missing"
    bad = ~blank & values.isna()
    reason[bad] = name + " " + text[bad].map(repr) + " is not a whole number"
    return values, reason


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
    time_text = raw["review_time"].fillna("").astype(str)
    reviewed_at = pd.to_datetime(time_text, utc=True, format="ISO8601", errors="coerce")
    time_reason = pd.Series("", index=raw.index)
    time_reason[time_text.str.strip() == ""] = "review_time is missing"
    unparsed = (time_text.str.strip() != "") & reviewed_at.isna()
    time_reason[unparsed] = "review_time " + time_text[unparsed].map(repr) + " is not an ISO-8601 timestamp"
    reasons = [concept_reason, rating_reason, duration_reason, time_reason]
    if "user_id" in raw:
        user_id, user_reason = _parse_integers(raw["user_id"], "user_id")
        reasons.append(user_reason)
    else:
        user_id = pd.Series(default_user_id, index=raw.index, dtype="Int64")
    state = pd.Series(pd.NA, index=raw.index, dtype="Int64")
    if "state" in raw:
        state, state_reason = _parse_integers(raw["state"].replace("", np.nan), "state")
        reasons.append(state_reason.where(raw["state"].fillna("").astype(str).str.strip() != "", ""))
    typed = pd.DataFrame({"user_id": user_id, "concept_id": concept_id, "rating": rating,
                          "reviewed_at": reviewed_at, "review_duration_ms": duration, "state": state})
    if "review_id" in raw:
        typed["id"], id_reason = _parse_integers(raw["review_id"], "review_id")
        reasons.append(id_reason)
    else:
        typed["id"] = _derived_ids(typed)
    return typed[list(TYPED_COLUMNS)], join_reasons(*reasons)


def _derived_ids(typed: pd.DataFrame) -> pd.Series:
    ids = pd.Series(pd.NA, index=typed.index, dtype="Int64")
    ok = typed["user_id"].notna() & typed["concept_id"].notna() & typed["reviewed_at"].notna()
    if ok.any():
        ms = typed.loc[ok, "reviewed_at"].dt.as_unit("ms").astype("int64")
        ids[ok] = derive_review_ids(typed.loc[ok, "user_id"].to_numpy("int64"),
                                    typed.loc[ok, "concept_id"].to_numpy("int64"), ms.to_numpy())
    return ids


def review_rule_violations(
    typed: pd.DataFrame,
    now: dt.datetime,
    known_users: set[int] | None = None,
    known_concepts: set[int] | None = None,
) -> pd.Series:
    """Each row's broken rules ("" when none). Missing values are left to the parser's reasons."""
    now = pd.Timestamp(now).tz_convert("UTC") if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz="UTC")
    reasons = []

    def rule(mask: pd.Series, message: pd.Series | str) -> None:
        mask = mask.fillna(False).astype(bool)
        reasons.append(pd.Series(np.where(mask, message, ""), index=typed.index))

    rating, duration, when = typed["rating"], typed["review_duration_ms"], typed["reviewed_at"]
    rule((rating < 1) | (rating > 4), "review_rating " + rating.astype(str) + " outside 1..4")
    rule(duration < 0, "review_duration " + duration.astype(str) + " ms is negative")
    rule(duration > MAX_REVIEW_DURATION_MS,
         "review_duration " + duration.astype(str) + f" ms is over {MAX_REVIEW_DURATION_MS} ms (1 hour)")
    when_text = when.astype(str)
    rule(when > now + CLOCK_SKEW, "review_time " + when_text + " is in the future")
    rule(when < EARLIEST_REVIEW, "review_time " + when_text + " is before 2000-01-01")
    rule((typed["state"] < 0) | (typed["state"] > 3), "state " + typed["state"].astype(str) + " outside 0..3")
    if known_users is not None:
        rule(typed["user_id"].notna() & ~typed["user_id"].isin(known_users),
             "unknown user_id " + typed["user_id"].astype(str))
    if known_concepts is not None:
        rule(typed["concept_id"].notna() & ~typed["concept_id"].isin(known_concepts),
             "unknown concept (card_id) " + typed["concept_id"].astype(str))
    return join_reasons(*reasons)


def split_valid(raw: pd.DataFrame, typed: pd.DataFrame, reasons: pd.Series) -> ValidatedReviews:
    """Good rows, and rejects carrying their raw text; a repeated review id keeps its first good row."""
    reasons = reasons.copy()
    candidate = reasons == ""
    duplicate = candidate & typed["id"].duplicated(keep="first") & typed["id"].notna()
    if duplicate.any():
        first_line = raw.loc[candidate].groupby(typed.loc[candidate, "id"])["line_number"].transform("first")
        reasons[duplicate] = ("duplicate review id " + typed.loc[duplicate, "id"].astype(str)
                              + " (first on line " + first_line[duplicate].astype(str) + ")")
    bad = reasons != ""
    good = typed.loc[~bad].assign(line_number=raw.loc[~bad, "line_number"])
    raw_columns = [c for c in raw.columns if c != "line_number"]
    rejects = pd.DataFrame({
        "line_number": raw.loc[bad, "line_number"],
        "review_id": typed.loc[bad, "id"],
        "reviewed_at": typed.loc[bad, "reviewed_at"],
        "raw_row": [json.dumps(row, default=str) for row in raw.loc[bad, raw_columns].to_dict("records")],
        "reason": reasons[bad],
    })
    return ValidatedReviews(good.reset_index(drop=True), rejects.reset_index(drop=True))


def parse_file_rows(raw: pd.DataFrame, default_user_id: int | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """(raw rows of the known columns, typed rows, reasons so far) for rows a reader returned."""
    width_reasons = raw.get("_field_count_error", pd.Series("", index=raw.index))
    raw = raw[[c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, "line_number") if c in raw.columns]]
    typed, parse_reasons = parse_reviews(raw, default_user_id=default_user_id)
    return raw, typed, join_reasons(width_reasons, parse_reasons)
