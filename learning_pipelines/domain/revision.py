"""Daily revision queues: what each learner has due today, grouped into themes and ranked.

Pure numpy over card-state arrays, one chunk of learners at a time: a chunk's cards are
flagged due/overdue against each learner's own day (time zone and day start), mapped to
themes (a concept without a mapping falls back to a theme inferred from its prerequisite
graph, `THEME::<id>`, or to `UNMAPPED`, and is logged as tag-quality debt), counted per
(learner, theme) with bincount, and ranked: most of today's target first, then most due today,
weaker mastery first on ties.

A learner's daily target (`revision_daily_target`) picks today's concepts among those due: overdue
ones first, by recall lost, then the others by recall lost, at most the target in all (every due
concept without a target). Recall lost = the learner's retention target minus the card's recall
probability at the start of their day (fsrs.retrievability, the value the theme's `mastery`
averages): how far below the level it is scheduled for the card has fallen (negative while above).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd

from learning_pipelines.domain import fsrs, learner_calendar

UNMAPPED = "UNMAPPED"
FALLBACK_PREFIX = "THEME::"
# tag_quality_debt_log.reason of a due concept without a theme of its own
DEBT_INFERRED_FROM_GRAPH = "no theme mapping; theme inferred from prerequisite graph"
DEBT_UNMAPPED = "no theme mapping and no mapped graph neighbour"
# Recall probability a card is scheduled for when the learner sets none (FSRS's usual target).
DEFAULT_RETENTION_TARGET = 0.9
DEFAULT_SPACING_MULTIPLIER = 1.0
NS_PER_DAY = 86_400 * 10**9
# Learner preference ranges (platform rule): outside them the scheduler's guarantees break.
SPACING_MULTIPLIER_RANGE = (0.5, 2.0)
RETENTION_TARGET_RANGE = (0.7, 0.95)


class InvalidPreference(ValueError):
    """A learner preference outside its allowed range."""


def _preference_values(values: pd.Series, nan_means_unset: bool) -> tuple[pd.Series, pd.Series, pd.Series]:
    """A preference column as floats, with the rows left unset (None or pd.NA; NaN too when
    `nan_means_unset`) and the rows set to something that is not a finite number."""
    objects = values.astype(object)
    unset = values.isna() if nan_means_unset else objects.map(lambda v: v is None or v is pd.NA).astype(bool)
    numbers = pd.to_numeric(objects.where(~unset), errors="coerce").astype(float)
    return numbers, unset, ~unset & ~np.isfinite(numbers)


def preference_problems(prefs: pd.DataFrame, nan_means_unset: bool = True) -> pd.Series:
    """Per row of user_learning_prefs, what is missing, not a finite number or out of range ("" when
    nothing). The retention target and daily target may be unset (None or pd.NA); NaN counts as unset
    only with `nan_means_unset`, as in frames read from the warehouse, where NULL reads as NaN."""
    problems = pd.Series("", index=prefs.index, dtype=object)

    def check(column: str, optional: bool, in_range, rule: str) -> None:
        numbers, unset, not_finite = _preference_values(prefs[column], nan_means_unset)
        if not optional:
            problems[unset] += f"{column} is missing; "
        if not_finite.any():
            hint = np.where(numbers[not_finite].isna() & optional, " (None or pd.NA leaves it unset)", "")
            problems[not_finite] += (column + " " + prefs.loc[not_finite, column].astype(object).map(str)
                                     + " is not a finite number" + hint + "; ")
        bad = ~unset & ~not_finite & ~in_range(numbers)
        if bad.any():
            problems[bad] += column + " " + numbers[bad].map("{:g}".format).astype(str) + rule + "; "

    low, high = SPACING_MULTIPLIER_RANGE
    check("spacing_multiplier", False, lambda v: v.between(low, high), f" outside [{low}, {high}]")
    target_low, target_high = RETENTION_TARGET_RANGE
    check("retention_target_override", True, lambda v: v.between(target_low, target_high),
          f" outside [{target_low}, {target_high}]")
    if "revision_daily_target" in prefs:
        check("revision_daily_target", True, lambda v: v > 0, " must be positive")
    return problems.str.rstrip("; ")


def validate_preferences(prefs: pd.DataFrame) -> None:
    """Raise InvalidPreference naming every learner and value missing, not a finite number or out of
    range. A NaN is refused, never taken for unset: an unset target is None or pd.NA."""
    problems = preference_problems(prefs, nan_means_unset=False)
    bad = problems != ""
    if bad.any():
        details = "; ".join(f"user {u}: {p}" for u, p in zip(prefs.loc[bad, "user_id"], problems[bad]))
        raise InvalidPreference(f"{int(bad.sum())} learning preference row(s) rejected: {details}")


def effective_preferences(learners: pd.DataFrame, preferences: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`learners` (one row each, with user_id) with the retention_target, spacing_multiplier and
    revision_daily_target their cards are scheduled with: their own where valid, else the defaults.
    Second frame: the preference rows ignored because a value is out of range, with the `problem`."""
    problems = preference_problems(preferences)
    rejected = preferences.loc[problems != ""].assign(problem=problems[problems != ""])
    valid = preferences.loc[problems == "", ["user_id", "spacing_multiplier", "retention_target_override",
                                             "revision_daily_target"]]
    learners = learners.drop(columns=[c for c in valid.columns if c != "user_id" and c in learners])
    learners = learners.merge(valid, on="user_id", how="left")
    learners["retention_target"] = learners.pop("retention_target_override").astype(float).fillna(
        DEFAULT_RETENTION_TARGET)
    learners["spacing_multiplier"] = learners["spacing_multiplier"].astype(float).fillna(DEFAULT_SPACING_MULTIPLIER)
    return learners, rejected


def due_times(last_review_ns: np.ndarray, stability_days, decay, retention_target, spacing_multiplier) -> np.ndarray:
    """When each card falls due (ns since the epoch, UTC): its recall reaches the learner's retention
    target, the interval stretched by the learner's spacing multiplier."""
    interval_days = fsrs.next_interval_days(np.asarray(stability_days, dtype=float),
                                            np.asarray(retention_target, dtype=float),
                                            fsrs.decay_only_weights(decay)) * np.asarray(spacing_multiplier, dtype=float)
    return np.asarray(last_review_ns, dtype=np.int64) + (interval_days * NS_PER_DAY).astype(np.int64)


def learner_day_bounds(day: dt.date, timezones: pd.Series, day_start_hours: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """UTC start and end (as int64 ns) of `day` on each learner's calendar (domain/learner_calendar.py: exact on
    daylight-saving changes)."""
    return learner_calendar.day_bounds_ns(day, timezones, day_start_hours)


def fallback_themes(concept_ids: np.ndarray, concept_theme_map: pd.DataFrame, concept_edges: pd.DataFrame) -> pd.Series:
    """For concepts without a theme: the most common theme among their graph neighbours, as
    `THEME::<id>`, else `UNMAPPED`. Indexed by concept_id."""
    mapped = concept_theme_map.drop_duplicates("concept_id").set_index("concept_id")["theme_id"]
    orphans = pd.Index(np.setdiff1d(concept_ids, mapped.index.to_numpy()), name="concept_id")
    if not len(orphans):
        return pd.Series(dtype=object)
    neighbours = pd.concat([
        concept_edges.rename(columns={"concept_id": "orphan", "prerequisite_id": "neighbour"}),
        concept_edges.rename(columns={"prerequisite_id": "orphan", "concept_id": "neighbour"}),
    ])[["orphan", "neighbour"]]
    neighbours = neighbours.loc[neighbours["orphan"].isin(orphans)]
    neighbours = neighbours.assign(theme_id=neighbours["neighbour"].map(mapped)).dropna(subset=["theme_id"])
    votes = neighbours.groupby(["orphan", "theme_id"]).size().rename("n").reset_index()
    best = votes.sort_values(["orphan", "n", "theme_id"], ascending=[True, False, True]).drop_duplicates("orphan")
    keys = pd.Series(UNMAPPED, index=orphans, dtype=object)
    keys[best["orphan"].to_numpy()] = [f"{FALLBACK_PREFIX}{int(t)}" for t in best["theme_id"]]
    return keys


@dataclasses.dataclass(frozen=True)
class QueueChunk:
    themes: pd.DataFrame  # user_id, theme_key, due_today, overdue, mastery, due_in_target, rank
    summaries: pd.DataFrame  # user_id, due_today_total, overdue_total, recommended_theme_ids
    debt: pd.DataFrame  # user_id, concept_id, fallback_key, reason
    # Today's concepts of the learners with a daily target, in order: user_id, position (1 first), concept_id,
    # theme_key, overdue, recall_lost. Learners without a target have none: every due concept is theirs.
    target_concepts: pd.DataFrame


def build_queues(states: pd.DataFrame, learners: pd.DataFrame, concept_themes: pd.DataFrame, day: dt.date) -> QueueChunk:
    """Queues of one chunk of learners for `day`.

    states: user_id, concept_id, stability_days, last_review_at, decay (card_memory_states).
    learners: user_id, timezone, day_start_hour, retention_target, spacing_multiplier (one row each),
    optionally revision_daily_target (NaN: none); a card is due when its recall falls to the learner's
    retention target, its interval stretched by the learner's spacing multiplier.
    concept_themes: concept_id, theme_key, is_fallback — one row per concept (concept_theme_keys).
    """
    learners = learners.reset_index(drop=True)
    learner_index = pd.Index(learners["user_id"]).get_indexer(states["user_id"])
    if (learner_index < 0).any():
        raise ValueError("card states for learners missing from `learners`")
    day_start, day_end = learner_day_bounds(day, learners["timezone"], learners["day_start_hour"])
    stability = states["stability_days"].to_numpy(float)
    weights = fsrs.decay_only_weights(states["decay"])
    last_review = to_utc_ns(states["last_review_at"])
    due_ns = due_times(last_review, stability, states["decay"], learners["retention_target"].to_numpy(float)[learner_index],
                       learners["spacing_multiplier"].to_numpy(float)[learner_index])
    due_today = due_ns <= day_end[learner_index]
    overdue = due_ns < day_start[learner_index]
    elapsed_days = np.maximum(day_start[learner_index] - last_review, 0) / NS_PER_DAY
    mastery = fsrs.retrievability(elapsed_days, stability, weights)
    recall_lost = learners["retention_target"].to_numpy(float)[learner_index] - mastery

    theme_codes, theme_keys = pd.factorize(concept_themes["theme_key"])
    # -1 (a concept absent from concept_themes altogether) picks the appended element
    concept_at = pd.Index(concept_themes["concept_id"]).get_indexer(states["concept_id"])
    theme = np.append(theme_codes, -1)[concept_at]
    fallback = np.append(concept_themes["is_fallback"].to_numpy(bool), True)[concept_at]
    missing = concept_at < 0
    if missing.any():
        theme_keys = theme_keys.append(pd.Index([UNMAPPED])) if UNMAPPED not in theme_keys else theme_keys
        theme[missing] = theme_keys.get_loc(UNMAPPED)
    n_themes = len(theme_keys)
    key = learner_index * n_themes + theme
    size = len(learners) * n_themes
    count = np.bincount(key, minlength=size)
    due_count = np.bincount(key, due_today, size).astype(int)
    overdue_count = np.bincount(key, overdue, size).astype(int)
    mastery_mean = np.bincount(key, mastery, size) / np.maximum(count, 1)
    targets = (learners["revision_daily_target"].to_numpy(float) if "revision_daily_target" in learners
               else np.full(len(learners), np.nan))
    in_target, target_cards, positions = todays_target(learner_index, due_today, overdue, recall_lost,
                                                       states["concept_id"].to_numpy(), targets)
    in_target_count = np.bincount(key, in_target, size).astype(int)
    present = np.flatnonzero(count)
    user_pos, theme_pos = np.divmod(present, n_themes)
    themes = pd.DataFrame({
        "user_id": learners["user_id"].to_numpy()[user_pos],
        "theme_key": np.asarray(theme_keys, dtype=object)[theme_pos],
        "due_today": due_count[present], "overdue": overdue_count[present], "mastery": mastery_mean[present],
        "due_in_target": in_target_count[present],
    })
    # Rank within each learner: most of today's target (all due ones without a target), due today desc, then
    # weaker mastery first, then key for stability.
    order = np.lexsort((themes["theme_key"].to_numpy(str), themes["mastery"].to_numpy(), -themes["due_today"].to_numpy(),
                        -themes["due_in_target"].to_numpy(), user_pos))
    themes = themes.iloc[order].reset_index(drop=True)
    learner_of_row = user_pos[order]
    themes["rank"] = np.arange(len(themes)) - np.searchsorted(learner_of_row, learner_of_row) + 1

    # Each learner's themes with a card of today's target, best first: theme rows are in learner order, then rank.
    with_due = themes["due_in_target"].to_numpy() > 0
    key_as_json = np.array([json.dumps(key) for key in theme_keys], dtype=object)
    due_keys = key_as_json[theme_pos[order]][with_due]
    bounds = np.searchsorted(learner_of_row[with_due], np.arange(len(learners) + 1))
    summaries = pd.DataFrame({
        "user_id": learners["user_id"],
        "due_today_total": np.bincount(learner_index, due_today, len(learners)).astype(int),
        "overdue_total": np.bincount(learner_index, overdue, len(learners)).astype(int),
        "recommended_theme_ids": ["[" + ", ".join(due_keys[begin:end]) + "]"  # as json.dumps writes a list
                                  for begin, end in zip(bounds[:-1], bounds[1:])],
    })
    fallback_due = fallback & due_today
    debt_cards = np.flatnonzero(fallback_due)
    debt = pd.DataFrame({
        "user_id": states["user_id"].to_numpy()[debt_cards],
        "concept_id": states["concept_id"].to_numpy()[debt_cards],
        "fallback_key": np.asarray(theme_keys, dtype=object)[theme[fallback_due]],
    })
    debt["reason"] = np.where(debt["fallback_key"] == UNMAPPED, DEBT_UNMAPPED, DEBT_INFERRED_FROM_GRAPH)
    target_concepts = pd.DataFrame({
        "user_id": states["user_id"].to_numpy()[target_cards], "position": positions,
        "concept_id": states["concept_id"].to_numpy()[target_cards],
        "theme_key": np.asarray(theme_keys, dtype=object)[theme[target_cards]],
        "overdue": overdue[target_cards], "recall_lost": recall_lost[target_cards],
    })
    return QueueChunk(themes, summaries, debt.drop_duplicates(["user_id", "concept_id"]), target_concepts)


def todays_target(learner_index: np.ndarray, due_today: np.ndarray, overdue: np.ndarray, recall_lost: np.ndarray,
                  concept_ids: np.ndarray, daily_targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per card (of the learner `learner_index` points to in `daily_targets`, NaN: no target): whether it is among
    today's concepts. A learner's due cards in order: overdue first, most recall lost first, then concept id; the
    first `daily_target` of them, or all without a target. Also the cards of learners with a target that are in,
    in that order (learner by learner), and their positions (1 first)."""
    in_target = due_today.copy()
    has_target = ~np.isnan(daily_targets)
    candidates = np.flatnonzero(due_today & has_target[learner_index])
    ordered = candidates[np.lexsort((concept_ids[candidates], -recall_lost[candidates], ~overdue[candidates],
                                     learner_index[candidates]))]
    learner_of = learner_index[ordered]
    positions = np.arange(len(ordered)) - np.searchsorted(learner_of, learner_of) + 1
    kept = positions <= daily_targets[learner_of]
    in_target[ordered[~kept]] = False
    return in_target, ordered[kept], positions[kept]


def to_utc_ns(values: pd.Series) -> np.ndarray:
    return pd.to_datetime(values, utc=True).dt.as_unit("ns").astype("int64").to_numpy()


def concept_theme_keys(concept_ids: np.ndarray, concept_theme_map: pd.DataFrame,
                       concept_edges: pd.DataFrame) -> pd.DataFrame:
    """concept_id, theme_key, is_fallback: one theme per concept, its lowest mapped theme id (so a
    card counts in exactly one theme and theme rows add up to the learner's totals), else a fallback."""
    mapped = concept_theme_map.loc[concept_theme_map["concept_id"].isin(concept_ids)]
    mapped = mapped.sort_values(["concept_id", "theme_id"]).drop_duplicates("concept_id")
    mapped = pd.DataFrame({"concept_id": mapped["concept_id"].to_numpy(),
                           "theme_key": mapped["theme_id"].astype(int).astype(str).to_numpy(), "is_fallback": False})
    fallback = fallback_themes(np.asarray(concept_ids), concept_theme_map, concept_edges)
    fallback = pd.DataFrame({"concept_id": fallback.index.to_numpy(), "theme_key": fallback.to_numpy(),
                             "is_fallback": True})
    return pd.concat([mapped, fallback], ignore_index=True)


ALL_THEMES = "*"


def window_theme_totals(queues: QueueChunk, build_of: pd.DataFrame) -> pd.DataFrame:
    """One chunk's contribution to the stats of each build (`build_of`: learner_shard, window_start by user_id):
    learner_shard, window_start, theme_key (ALL_THEMES: every theme), learners with a card due today, due and overdue
    cards; counted in one pass over every build."""
    themes, summaries = queues.themes, queues.summaries
    group_codes, groups = pd.factorize(pd.MultiIndex.from_frame(
        build_of.reindex(summaries["user_id"].to_numpy())[["learner_shard", "window_start"]]))
    groups = groups.to_frame(index=False, name=["learner_shard", "window_start"])  # factorize drops the names
    theme_groups = pd.Series(group_codes, index=summaries["user_id"].to_numpy()).reindex(
        themes["user_id"].to_numpy()).to_numpy()
    theme_codes, keys = pd.factorize(themes["theme_key"])
    size = len(groups) * len(keys)
    key = theme_groups * len(keys) + theme_codes
    due = themes["due_today"].to_numpy()
    present = np.flatnonzero(np.bincount(key, minlength=size))
    per_theme = groups.iloc[present // max(len(keys), 1)].reset_index(drop=True).assign(
        theme_key=np.asarray(keys, dtype=object)[present % max(len(keys), 1)],
        n_learners=np.bincount(key, due > 0, size)[present], due_today=np.bincount(key, due, size)[present],
        overdue=np.bincount(key, themes["overdue"].to_numpy(), size)[present])
    due_total = summaries["due_today_total"].to_numpy()
    everything = groups.assign(theme_key=ALL_THEMES, n_learners=np.bincount(group_codes, due_total > 0, len(groups)),
                               due_today=np.bincount(group_codes, due_total, len(groups)),
                               overdue=np.bincount(group_codes, summaries["overdue_total"].to_numpy(), len(groups)))
    return pd.concat([per_theme, everything], ignore_index=True)


def window_stats(chunk_totals: list[pd.DataFrame], builds: pd.DataFrame) -> pd.DataFrame:
    """queue_stats_daily rows of each of `builds` (learner_shard, window_start: one row per build) from every
    chunk's window_theme_totals: learner_shard, window_start, theme_key, n_learners, due_today, overdue; a build
    without learners has its ALL_THEMES row, at 0."""
    empty = builds[["learner_shard", "window_start"]].assign(theme_key=ALL_THEMES, n_learners=0, due_today=0,
                                                             overdue=0)
    stats = pd.concat([empty, *chunk_totals], ignore_index=True)
    return stats.groupby(["learner_shard", "window_start", "theme_key"], as_index=False, sort=True).sum().astype(
        {"n_learners": int, "due_today": int, "overdue": int})


def days_stats(stats: pd.DataFrame) -> pd.DataFrame:
    """The day's totals by theme (theme_key, n_learners, due_today, overdue) of window_stats; the ALL_THEMES row at 0
    when no window was built."""
    every = pd.DataFrame({"theme_key": [ALL_THEMES], "n_learners": [0], "due_today": [0], "overdue": [0]})
    return pd.concat([every, stats.drop(columns=["learner_shard", "window_start"])]).groupby(
        "theme_key", as_index=False).sum()
