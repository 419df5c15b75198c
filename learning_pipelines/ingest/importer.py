"""Import a review file into the warehouse: read, validate, quarantine, load — in one transaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import bulk
from learning_pipelines.db.tables import concepts, review_log_imports, review_log_rejects, review_logs, users
from learning_pipelines.ingest import validation
from learning_pipelines.ingest.readers import read_review_file
from learning_pipelines.ingest.validation import ReviewFileError

_ID_CHUNK = 5000


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

    def message(self) -> str:
        lines = [f"{self.source}: {self.n_rows} row(s) read, {self.n_loaded} loaded, "
                 f"{self.n_already_present} already present, {self.n_rejected} rejected"
                 + (f", {self.n_not_reviews} non-review entries skipped" if self.n_not_reviews else "")]
        if self.n_registered_users or self.n_registered_concepts:
            lines.append(f"  registered {self.n_registered_users} new learner(s), "
                         f"{self.n_registered_concepts} new concept(s)")
        for reason, count in self.reject_reasons.items():
            lines.append(f"  rejected {count} x {reason}")
        if self.n_rejected:
            lines.append("  details: table review_log_rejects (line_number, raw_row, reason)")
        return "\n".join(lines)


def import_review_file(
    engine: sa.Engine,
    path: str | Path,
    *,
    user_id: int | None = None,
    register_unknown: bool = False,
    now: dt.datetime | None = None,
) -> ImportSummary:
    """Load the good rows of a review file; record every bad row with its reason.

    Idempotent: review ids already in the warehouse are counted, not loaded again, and a file
    imported before (same bytes) does not record its rejects twice. With `register_unknown`,
    learners and concepts seen for the first time are created (an Anki collection brings its own
    cards); without it they are rejected as unknown.
    """
    path = Path(path)
    now = now or dt.datetime.now(dt.timezone.utc)
    source = str(path)
    try:
        raw, n_not_reviews = read_review_file(path)
        validation.check_columns(raw.columns, source, has_default_user=user_id is not None)
    except ReviewFileError as error:
        _record_file_reject(engine, source, str(error), now)
        raise
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    raw, typed, reasons = validation.parse_file_rows(raw, default_user_id=user_id)

    with engine.begin() as conn:
        known_users, known_concepts = _known_ids(conn, typed)
        new_users, new_concepts = set(), set()
        if register_unknown:
            clean = validation.join_reasons(reasons, validation.review_rule_violations(typed, now)) == ""
            new_users = set(typed.loc[clean, "user_id"].dropna().astype(int)) - known_users
            new_concepts = set(typed.loc[clean, "concept_id"].dropna().astype(int)) - known_concepts
            _register(conn, new_users, new_concepts, source)
            known_users |= new_users
            known_concepts |= new_concepts
        rule_reasons = validation.review_rule_violations(typed, now, known_users, known_concepts)
        result = validation.split_valid(raw, typed, validation.join_reasons(reasons, rule_reasons))

        present = _present(conn, review_logs.c.id, result.good["id"])
        fresh = result.good.loc[~result.good["id"].isin(present)].drop(columns=["line_number"])
        bulk.insert_review_logs(conn, fresh)
        seen_before = conn.execute(
            sa.select(sa.func.count()).select_from(review_log_imports).where(review_log_imports.c.file_sha256 == digest)
        ).scalar()
        if not seen_before:
            bulk.bulk_insert(conn, review_log_rejects, result.rejects.assign(source=source, rejected_at=now))
        summary = ImportSummary(
            source=source, n_rows=len(raw), n_loaded=len(fresh), n_already_present=len(result.good) - len(fresh),
            n_rejected=len(result.rejects), n_not_reviews=n_not_reviews, n_registered_users=len(new_users),
            n_registered_concepts=len(new_concepts),
            reject_reasons=dict(Counter(_reason_kind(r) for r in result.rejects["reason"]).most_common()),
            loaded_by_month=_count_by_month(fresh["reviewed_at"]),
        )
        conn.execute(review_log_imports.insert().values(
            source=source, file_sha256=digest, n_rows=summary.n_rows, n_loaded=summary.n_loaded,
            n_already_present=summary.n_already_present, n_rejected=summary.n_rejected,
            n_not_reviews=n_not_reviews, imported_at=now))
    return summary


_VALUE = re.compile(r"'[^']*'|\d{4}-\d{2}-\d{2}[ T][\d:.+]+|(?<![.\w])-?\d+(?![.\w])")


def _reason_kind(reason: str) -> str:
    """'review_rating 5 outside 1..4' -> 'review_rating … outside 1..4', to count reasons by kind."""
    return _VALUE.sub("…", reason.split("; ")[0].split(" (")[0])


def _count_by_month(reviewed_at: pd.Series) -> dict[str, int]:
    months = pd.to_datetime(reviewed_at, utc=True).dt.strftime("%Y-%m-01")
    return {month: int(n) for month, n in months.value_counts().sort_index().items()}


def _known_ids(conn: sa.Connection, typed: pd.DataFrame) -> tuple[set[int], set[int]]:
    return (_present(conn, users.c.user_id, typed["user_id"]),
            _present(conn, concepts.c.concept_id, typed["concept_id"]))


def _present(conn: sa.Connection, column: sa.Column, values: pd.Series) -> set[int]:
    """Which of `values` exist in `column`, asked in chunks so any file size works."""
    wanted = sorted(set(values.dropna().astype("int64").tolist()))
    found: set[int] = set()
    for start in range(0, len(wanted), _ID_CHUNK):
        chunk = wanted[start:start + _ID_CHUNK]
        found.update(conn.execute(sa.select(column).where(column.in_(chunk))).scalars())
    return found


def _register(conn: sa.Connection, new_users: set[int], new_concepts: set[int], source: str) -> None:
    ref = f"import:{Path(source).name}"[:200]
    bulk.bulk_insert(conn, users, pd.DataFrame({"user_id": sorted(new_users), "external_ref": ref}))
    bulk.bulk_insert(conn, concepts, pd.DataFrame({
        "concept_id": sorted(new_concepts), "name": [f"card {c}" for c in sorted(new_concepts)], "external_ref": ref}))


def _record_file_reject(engine: sa.Engine, source: str, reason: str, now: dt.datetime) -> None:
    with engine.begin() as conn:
        conn.execute(review_log_rejects.insert().values(
            source=source, raw_row=json.dumps({"file": source}), reason=reason, rejected_at=now))
