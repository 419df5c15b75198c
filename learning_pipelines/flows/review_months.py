"""One month of review_logs validated where it lies, and placed in each card's history (review_log_intervals)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import sqlalchemy as sa

from learning_pipelines.db import learner_calendars, learner_locks, partitions, review_logs
from learning_pipelines.domain.review_history import card_intervals, with_learner_days
from learning_pipelines.flows.summaries import preview
from learning_pipelines.ingest.validation import review_rule_violations


@dataclasses.dataclass(frozen=True)
class MonthValidation:
    reviews: pd.DataFrame  # the month's reviews that passed
    n_quarantined: int  # rows moved to review_log_rejects by this run
    intervals: pd.DataFrame  # what review_log_intervals holds for the month now
    counts: review_logs.MonthCounts
    calendar_fallbacks: pd.DataFrame  # user_id, timezone as stored: learners whose days were counted in UTC

    def metadata(self) -> dict:
        elapsed = self.intervals["elapsed_days"].dropna()
        return {
            "dagster/row_count": len(self.reviews),
            "preview": preview(self.reviews, ["id", "user_id", "concept_id", "reviewed_at", "rating"]),
            "n_learners": int(self.reviews["user_id"].nunique()),
            "n_cards": int(self.reviews[["user_id", "concept_id"]].drop_duplicates().shape[0]),
            "n_quarantined_now": self.n_quarantined,
            "n_rejects_in_month": self.counts.n_rejects,
            "reject_rate": float(self.counts.reject_rate),
            "mean_elapsed_days": float(elapsed.mean()) if len(elapsed) else 0.0,
            "same_day_share": float((elapsed == 0).mean()) if len(elapsed) else 0.0,
            "ratings": {str(k): int(v) for k, v in self.reviews["rating"].value_counts().sort_index().items()},
            "learners_on_utc_calendar_fallback": len(self.calendar_fallbacks),
        }


def revalidate_month(engine: sa.Engine, start: dt.datetime, end: dt.datetime, source: str,
                     now: dt.datetime) -> MonthValidation:
    """The reviews in [start, end) checked against the rules every importer applies: rows that break one (written
    by something other than our importers) move to review_log_rejects with their reason and `source`, the others
    stay; the month's review_log_intervals replaced. One transaction, after the month's partition exists.
    A learner whose time zone is not a key of tzdata has their days counted in UTC, and is logged in
    learner_calendar_fallbacks."""
    # Before the transaction: created inside it, the partition's locks would be held for the whole run.
    partitions.create_month_partitions(engine, [start.date()])
    with engine.begin() as conn:
        month = review_logs.month_reviews(conn, start, end)
        # The fallback log is their rows: locked before this transaction's first write, as every writer does
        # (db/learner_locks), so `learners forget` stays final for them.
        fallen_back = learner_calendars.fallbacks_among(conn, month["user_id"].unique())
        still_there = learner_locks.lock_existing(conn, fallen_back["user_id"]) if len(fallen_back) else []
        reasons = review_rule_violations(month, now)
        bad = month.loc[reasons != ""]
        if len(bad):
            review_logs.quarantine(conn, bad, reasons[reasons != ""], source, now, start, end)
        month = month.loc[reasons == ""]
        prior = with_learner_days(review_logs.earlier_card_history(conn, start, end), "last_reviewed_at",
                                  "last_learner_day")
        reviews = with_learner_days(month.rename(columns={"id": "review_id"}))
        intervals = card_intervals(reviews[["review_id", "user_id", "concept_id", "reviewed_at", "learner_day"]],
                                   prior[["user_id", "concept_id", "n_prior_reviews", "last_learner_day"]])
        review_logs.replace_intervals(conn, start, end, intervals)
        counts = review_logs.month_counts(conn, start, end, now)
        fallen_back = learner_calendars.record_fallbacks(conn, still_there, now)
    return MonthValidation(month, len(bad), intervals, counts, fallen_back)
