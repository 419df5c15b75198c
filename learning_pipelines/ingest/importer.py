"""Import a review file into the warehouse: read, validate, quarantine, load, a chunk of rows at a
time, all in one transaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import shlex
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk, partitions, review_imports
from learning_pipelines.db.stored_reviews import stored_reviews
from learning_pipelines.db.tables import concepts, review_log_rejects, users
from learning_pipelines.db.taken_review_ids import TakenReviewIds
from learning_pipelines.domain import time_zones
from learning_pipelines.ingest import validation
from learning_pipelines.ingest.readers import DEFAULT_CHUNK_ROWS, ReadLimits, ReviewSource, open_review_file
from learning_pipelines.ingest.validation import ReviewFileError, ReviewFileUsageError

FIRST_REJECTS_SHOWN = 5  # the summary's rejected lines; `learning-pipelines rejects --file F` lists them all


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    source: str
    n_rows: int
    n_loaded: int
    n_already_present: int
    n_rejected: int
    n_not_reviews: int
    n_registered_users: int
    n_registered_concepts: int
    reject_reasons: dict[str, int]
    loaded_by_month: dict[str, int]  # review_logs partition key (YYYY-MM-01) -> reviews loaded
    n_remapped: int = 0  # Anki scheduler v1 learning/relearning answers read with v2's meaning (ingest.readers)
    first_rejects: tuple[tuple[int | None, str], ...] = ()  # (line number, reason) of the first rejected rows

    def message(self) -> str:
        lines = [f"{self.source}: {self.n_rows} row(s) read, {self.n_loaded} loaded, "
                 f"{self.n_already_present} already present, {self.n_rejected} rejected"
                 + (f", {self.n_not_reviews} non-review entries skipped" if self.n_not_reviews else "")]
        if self.n_remapped:
            lines.append(f"  scheduler v1 collection: {self.n_remapped} learning/relearning answer(s) remapped as "
                         "Anki's upgrade does (ease 2 -> Good, 3 -> Easy)")
        if self.n_registered_users or self.n_registered_concepts:
            lines.append(f"  registered {self.n_registered_users} new learner(s), "
                         f"{self.n_registered_concepts} new concept(s)")
        for reason, count in self.reject_reasons.items():
            lines.append(f"  rejected {count} x {reason}")
        if self.first_rejects:
            shown = "the first" if self.n_rejected > len(self.first_rejects) else "every"
            lines.append(f"  {shown} rejected line{'s' if len(self.first_rejects) > 1 else ''}:")
            lines += [f"    line {line}: {reason}" if line is not None else f"    {reason}"
                      for line, reason in self.first_rejects]
        if self.n_rejected:
            lines.append(f"  all of them, with their raw rows: learning-pipelines rejects --file {_quoted(self.source)}")
        return "\n".join(lines)


def _quoted(path: str) -> str:
    """A path as a shell reads it back (quoted only when it needs it)."""
    return shlex.quote(path)


def import_review_file(
    engine: sa.Engine,
    path: str | Path,
    *,
    user_id: int | None = None,
    register_unknown: bool = False,
    register_timezone: str = "UTC",
    now: dt.datetime | None = None,
    limits: ReadLimits = ReadLimits(),
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ImportSummary:
    """Load the good rows of a review file; record every bad row with its reason.

    Idempotent: a review already stored with the same content is counted, not loaded again (with
    other content it is rejected as a conflict), and a file imported or refused before (same
    bytes) does not record its rejects twice. With `register_unknown`, learners and concepts with
    positive ids seen for the first time are created (an Anki collection brings its own cards), the
    learners in `register_timezone` (a key of tzdata, else time_zones.InvalidTimeZone before anything
    is read or stored); without it they are rejected as unknown.

    The file is read, checked and written `chunk_rows` rows at a time, so memory follows the chunk,
    not the file; every chunk is written in the one transaction of the file, so a failure stores
    nothing. The ids the good rows have taken so far wait in a temporary table of the transaction,
    where later chunks find their duplicates (db/taken_review_ids.py).
    """
    path = Path(path)
    now = now or dt.datetime.now(dt.timezone.utc)
    if register_unknown:
        time_zones.require_valid([register_timezone], ["the learners this import registers"])
    try:
        with open_review_file(path, limits, chunk_rows) as source:
            validation.check_columns(source.columns, str(path), has_default_user=user_id is not None)
            return _import(engine, source, _Options(str(path), user_id, register_unknown, register_timezone, now))
    except ReviewFileUsageError:
        raise  # the command's usage, not the file's content: nothing to keep among the rejects
    except ReviewFileError as error:
        _record_refusal(engine, path, str(error), now)
        raise


@dataclasses.dataclass(frozen=True)
class _Options:
    source: str  # the path as given
    user_id: int | None
    register_unknown: bool
    register_timezone: str
    now: dt.datetime


@dataclasses.dataclass
class _Tally:
    """What the chunks of one file added up to."""

    n_rows: int = 0
    n_loaded: int = 0
    n_already_present: int = 0
    n_rejected: int = 0
    n_not_reviews: int = 0
    n_remapped: int = 0
    n_registered_users: int = 0
    n_registered_concepts: int = 0
    reject_reasons: Counter = dataclasses.field(default_factory=Counter)
    loaded_by_month: Counter = dataclasses.field(default_factory=Counter)
    first_rejects: list = dataclasses.field(default_factory=list)

    def summary(self, source: str) -> ImportSummary:
        return ImportSummary(
            source=source, n_rows=self.n_rows, n_loaded=self.n_loaded, n_already_present=self.n_already_present,
            n_rejected=self.n_rejected, n_not_reviews=self.n_not_reviews, n_registered_users=self.n_registered_users,
            n_registered_concepts=self.n_registered_concepts, reject_reasons=dict(self.reject_reasons.most_common()),
            loaded_by_month=dict(sorted(self.loaded_by_month.items())), n_remapped=self.n_remapped,
            first_rejects=tuple(self.first_rejects))


def _import(engine: sa.Engine, source: ReviewSource, options: _Options) -> ImportSummary:
    if review_imports.has_month_partitions(engine):
        # Before the transaction: creating a partition inside it deadlocks with concurrent imports.
        partitions.create_month_partitions(engine, _months_to_load(source, options.now))
    digest = _sha256(source.path)
    stored_source = _storable(options.source, _SOURCE_CHARS)
    tally = _Tally()
    with engine.begin() as conn:
        review_imports.lock_file(conn, digest)
        taken = TakenReviewIds(conn)
        seen_before = review_imports.times_imported(conn, digest)
        for chunk in source.chunks():
            tally.n_not_reviews += chunk.n_not_reviews
            tally.n_remapped += chunk.n_remapped
            if not chunk.rows.empty:
                rejects = _load_chunk(conn, chunk.rows, options, taken, tally)
                if not seen_before and not rejects.empty:
                    bulk.bulk_insert(conn, review_log_rejects, rejects.assign(source=stored_source, rejected_at=options.now))
        taken.drop()
        review_imports.record_import(
            conn, source=stored_source, file_sha256=digest, n_rows=tally.n_rows, n_loaded=tally.n_loaded,
            n_already_present=tally.n_already_present, n_rejected=tally.n_rejected,
            n_not_reviews=tally.n_not_reviews, imported_at=options.now)
    return tally.summary(options.source)


def _load_chunk(conn: sa.Connection, rows: pd.DataFrame, options: _Options, taken: TakenReviewIds,
                tally: _Tally) -> pd.DataFrame:
    """Validate one chunk's rows against the rules, the warehouse and the file's earlier chunks;
    store its new good rows and count it. Returns its rejects."""
    raw, typed, reasons = validation.parse_file_rows(rows, default_user_id=options.user_id)
    known_users, known_concepts = _known_ids(conn, typed)
    new_users, new_concepts = set(), set()
    if options.register_unknown:
        clean = validation.join_reasons(reasons, validation.review_rule_violations(typed, options.now)) == ""
        loadable = (clean & _known_or_positive(typed["user_id"], known_users)
                    & _known_or_positive(typed["concept_id"], known_concepts))
        new_users = set(typed.loc[loadable, "user_id"].astype(int)) - known_users
        new_concepts = set(typed.loc[loadable, "concept_id"].astype(int)) - known_concepts
        review_imports.register(conn, new_users, new_concepts, f"import:{Path(options.source).name}"[:200],
                                options.register_timezone)
        known_users |= new_users
        known_concepts |= new_concepts
    reasons = validation.join_reasons(
        reasons, validation.review_rule_violations(typed, options.now, known_users, known_concepts),
        *([_not_registrable(typed, known_users, known_concepts)] if options.register_unknown else []))
    candidates = typed.loc[reasons == "", "id"].dropna().astype("int64").to_numpy()
    earlier = taken.among(candidates)
    stored = _stored_reviews(conn, candidates)
    # Rows an earlier chunk stored are this file's own: a repeat of one is a duplicate, not a review found stored.
    stored = stored.loc[~stored["id"].isin(earlier.index[earlier["fresh"].to_numpy(bool)])]
    reasons = validation.join_reasons(reasons, _conflicts(typed, stored))
    result = validation.split_valid(raw, typed, reasons, earlier["first_line"])

    is_fresh = ~result.good["id"].isin(stored["id"]).to_numpy(bool)
    fresh = result.good.loc[is_fresh].drop(columns=["line_number"])
    bulk.insert_review_logs(conn, fresh)
    taken.take(result.good["id"].to_numpy("int64"), result.good["line_number"].to_numpy("int64"), is_fresh)

    tally.n_rows += len(raw)
    tally.n_loaded += len(fresh)
    tally.n_already_present += len(result.good) - len(fresh)
    tally.n_rejected += len(result.rejects)
    tally.n_registered_users += len(new_users)
    tally.n_registered_concepts += len(new_concepts)
    tally.reject_reasons.update(_reason_kind(reason) for reason in result.rejects["reason"])
    first = result.rejects.sort_values("line_number").head(FIRST_REJECTS_SHOWN - len(tally.first_rejects))
    tally.first_rejects += [(None if pd.isna(line) else int(line), reason)
                            for line, reason in zip(first["line_number"], first["reason"])]
    tally.loaded_by_month.update(_count_by_month(fresh["reviewed_at"]))
    return result.rejects


def _months_to_load(source: ReviewSource, now: dt.datetime) -> list[dt.date]:
    """Every month a row of the file may be stored in (its time parses and breaks no rule on times),
    from a first reading of the file that parses the review times alone."""
    months: set[dt.date] = set()
    for chunk in source.chunks(["review_time"]):
        readable = chunk.rows.loc[chunk.rows["_read_error"] == "", "review_time"]
        months.update(bulk.review_log_months(validation.times_within_rules(readable, now)))
    return sorted(months)


_VALUE = re.compile(r"'[^']*'|\d{4}-\d{2}-\d{2}[ T][\d:.+]+|(?<![.\w])-?\d+(?![.\w])")


def _reason_kind(reason: str) -> str:
    """'review_rating 5 outside 1..4' -> 'review_rating <value> outside 1..4', to count reasons by kind."""
    return _VALUE.sub("<value>", reason.split("; ")[0].split(" (")[0])


def _count_by_month(reviewed_at: pd.Series) -> dict[str, int]:
    months = pd.to_datetime(reviewed_at, utc=True).dt.tz_localize(None).to_numpy().astype("datetime64[M]")
    values, counts = np.unique(months, return_counts=True)
    return {f"{month}-01": int(n) for month, n in zip(values, counts)}


def _known_ids(conn: sa.Connection, typed: pd.DataFrame) -> tuple[set[int], set[int]]:
    return (review_imports.known_ids(conn, users.c.user_id, typed["user_id"]),
            review_imports.known_ids(conn, concepts.c.concept_id, typed["concept_id"]))


def _known_or_positive(ids: pd.Series, known: set[int]) -> pd.Series:
    return (ids.isin(known) | (ids > 0)).fillna(False).astype(bool)


def _not_registrable(typed: pd.DataFrame, known_users: set[int], known_concepts: set[int]) -> pd.Series:
    """Why an unknown id was not registered: only positive ids are."""
    reasons = pd.Series("", index=typed.index, dtype=object)
    for column, known, name in (("user_id", known_users, "user_id"), ("concept_id", known_concepts, "card_id")):
        refused = ~_known_or_positive(typed[column], known) & typed[column].notna()
        if refused.any():
            reasons = validation.join_reasons(reasons, pd.Series(
                [f"{name} {i} is not positive (only positive ids are registered)" if r else ""
                 for i, r in zip(typed[column].tolist(), refused.tolist())], index=typed.index, dtype=object))
    return reasons


_COMPARED = (("user_id", "user_id"), ("concept_id", "card_id"), ("rating", "review_rating"),
             ("reviewed_at", "review_time"), ("review_duration_ms", "review_duration"), ("state", "state"))


def _stored_reviews(conn: sa.Connection, ids: np.ndarray) -> pd.DataFrame:
    return stored_reviews(conn, ids, [name for name, _ in _COMPARED])


def _conflicts(typed: pd.DataFrame, stored: pd.DataFrame) -> pd.Series:
    """For each row whose id is stored with other content: which values differ."""
    reasons = pd.Series("", index=typed.index, dtype=object)
    if stored.empty:
        return reasons
    mine = typed.loc[typed["id"].isin(stored["id"])]
    if mine.empty:
        return reasons
    theirs = stored.set_index("id").loc[mine["id"].astype("int64").to_numpy()].set_axis(mine.index)
    differs = pd.DataFrame(index=mine.index)
    for column, _ in _COMPARED:
        here, there = _comparable(mine[column]), _comparable(theirs[column])
        differs[column] = ~((here == there).fillna(False).astype(bool) | (here.isna() & there.isna()))
    for index in differs.index[differs.any(axis=1)]:
        changes = [f"{name} {_shown(theirs.at[index, column])} stored, {_shown(mine.at[index, column])} here"
                   for column, name in _COMPARED if differs.at[index, column]]
        review_id = mine.at[index, "id"]
        reasons[index] = f"review_id {review_id} conflicts with stored review {review_id} ({', '.join(changes)})"
    return reasons


def _comparable(values: pd.Series) -> pd.Series:
    """Times to the microsecond the warehouse keeps, whole numbers as Int64 whatever the driver returned."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.tz_convert("UTC").dt.floor("us")
    return pd.Series(pd.array(values, dtype="Int64"), index=values.index)


def _shown(value) -> str:
    if pd.isna(value):
        return "empty"
    return value.isoformat() if isinstance(value, pd.Timestamp) else str(int(value))


_SOURCE_CHARS = review_log_rejects.c.source.type.length


def _storable(text: str, limit: int | None = None) -> str:
    """`text` as the warehouse can keep it: valid UTF-8 (a file name need not be), at most `limit`
    characters, a long path keeping its end (the file name) behind a leading '…'."""
    text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    if limit is not None and len(text) > limit:
        return "…" + text[-(limit - 1):]
    return text


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _record_refusal(engine: sa.Engine, path: Path, reason: str, now: dt.datetime) -> None:
    """Keep a refused file's reason in the rejects, once per file content and reason; a path that
    is not a readable file has no content to key it by, and is not recorded."""
    try:
        digest = _sha256(path) if path.is_file() else None
    except OSError:
        digest = None
    if digest is None:
        return
    source = _storable(str(path), _SOURCE_CHARS)
    raw_row = json.dumps({"file": _storable(str(path)), "file_sha256": digest})
    reason = _storable(reason)
    with engine.begin() as conn:
        review_imports.lock_file(conn, digest)
        review_imports.record_file_refusal(conn, source, raw_row, reason, now)
