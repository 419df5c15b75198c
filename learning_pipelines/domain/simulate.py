"""Synthetic learners whose reviews follow FSRS-6 with known per-learner weights.

Everything the warehouse holds for a platform is generated here: themes, concepts with a
prerequisite graph, learners with time zones and preferences, their review logs, and
resources with implicit-feedback interactions. The ground truth (each learner's weights,
each concept's inherent complexity) comes back with the data, so the optimizer and the
complexity score can be tested for recovery.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd

from learning_pipelines.domain import fsrs
from learning_pipelines.domain.review_ids import derive_review_ids

# Learners around the world, half- and three-quarter-hour offsets included, so a day's queues are built in windows
# spread over the clock.
TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "America/Los_Angeles", "Asia/Kolkata",
             "America/St_Johns", "Australia/Adelaide", "Asia/Kathmandu")
DAY_START_HOUR = 4  # Anki's default "next day starts at"
RELEARN_STEP_MINUTES = 10
MAX_SAME_DAY_STEPS = 3
STATE_LEARNING, STATE_REVIEW, STATE_RELEARNING = 0, 1, 2
UNMAPPED_CONCEPT_SHARE = 0.03  # a few concepts lack a theme, as on the real platform
RESOURCE_KINDS = ("video", "article", "exercise", "quiz")


@dataclasses.dataclass(frozen=True)
class SimulatedPlatform:
    users: pd.DataFrame
    themes: pd.DataFrame
    concepts: pd.DataFrame
    concept_theme_map: pd.DataFrame
    concept_edges: pd.DataFrame
    user_learning_prefs: pd.DataFrame
    review_logs: pd.DataFrame
    resources: pd.DataFrame
    resource_concepts: pd.DataFrame
    user_interactions: pd.DataFrame
    true_weights: pd.DataFrame  # index user_id, columns w0..w20
    true_concept_complexity: pd.Series  # index concept_id, 0 easy .. 1 hard


def sample_learner_weights(n_learners: int, rng: np.random.Generator, spread: float = 0.25) -> np.ndarray:
    """Default FSRS-6 weights scaled by log-normal noise, kept inside the optimizer's bounds."""
    noise = np.exp(rng.normal(0.0, spread, size=(n_learners, fsrs.N_WEIGHTS)))
    return fsrs.clip_weights(fsrs.DEFAULT_WEIGHTS * noise)


def simulate_platform(
    n_learners: int = 1000,
    n_concepts: int = 300,
    n_themes: int = 12,
    n_resources: int = 400,
    days: int = 180,
    mean_cards_per_learner: float = 45.0,
    as_of: dt.datetime | None = None,
    seed: int = 7,
) -> SimulatedPlatform:
    """A platform's worth of data; every review happens before `as_of` (default: now, UTC)."""
    rng = np.random.default_rng(seed)
    as_of = (as_of or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    themes, concepts, concept_theme_map, concept_edges, complexity = _concept_graph(n_concepts, n_themes, rng)
    users, prefs, weights = _learners(n_learners, rng)
    reviews = _review_logs(users, prefs, weights, concept_theme_map, complexity, days, mean_cards_per_learner,
                           as_of, rng)
    resources, resource_concepts, interactions = _resources_and_interactions(
        users, concept_theme_map, n_resources, days, as_of, rng)
    true_weights = pd.DataFrame(weights, index=users["user_id"].rename("user_id"),
                                columns=[f"w{i}" for i in range(fsrs.N_WEIGHTS)])
    return SimulatedPlatform(users, themes, concepts, concept_theme_map, concept_edges, prefs, reviews,
                             resources, resource_concepts, interactions, true_weights, complexity)


def _concept_graph(n_concepts: int, n_themes: int, rng: np.random.Generator):
    themes = pd.DataFrame({"theme_id": np.arange(1, n_themes + 1),
                           "name": [f"Theme {i}" for i in range(1, n_themes + 1)]})
    concept_ids = np.arange(1, n_concepts + 1)
    concepts = pd.DataFrame({"concept_id": concept_ids, "name": [f"Concept {i}" for i in concept_ids],
                             "external_ref": [f"sim:{i}" for i in concept_ids]})
    theme_of = rng.integers(1, n_themes + 1, size=n_concepts)
    mapped = rng.random(n_concepts) >= UNMAPPED_CONCEPT_SHARE
    concept_theme_map = pd.DataFrame({"concept_id": concept_ids[mapped], "theme_id": theme_of[mapped]})
    complexity = pd.Series(rng.beta(2.0, 2.5, size=n_concepts), index=pd.Index(concept_ids, name="concept_id"),
                           name="true_complexity")
    edges = []
    for position, concept_id in enumerate(concept_ids):
        earlier = concept_ids[:position][theme_of[:position] == theme_of[position]]
        if len(earlier):
            for prerequisite in rng.choice(earlier, size=min(len(earlier), rng.integers(0, 3)), replace=False):
                edges.append((int(prerequisite), int(concept_id)))
    concept_edges = pd.DataFrame(edges, columns=["prerequisite_id", "concept_id"])
    return themes, concepts, concept_theme_map, concept_edges, complexity


def _learners(n_learners: int, rng: np.random.Generator):
    user_ids = np.arange(1, n_learners + 1)
    users = pd.DataFrame({
        "user_id": user_ids,
        "external_ref": [f"sim:{i}" for i in user_ids],
        "timezone": rng.choice(TIMEZONES, size=n_learners),
        "day_start_hour": DAY_START_HOUR,
    })
    has_prefs = rng.random(n_learners) < 0.7
    n_prefs = int(has_prefs.sum())
    override = np.where(rng.random(n_prefs) < 0.3, rng.choice([0.8, 0.85, 0.9, 0.95], size=n_prefs), np.nan)
    prefs = pd.DataFrame({
        "user_id": user_ids[has_prefs],
        "spacing_multiplier": rng.choice([0.8, 1.0, 1.0, 1.0, 1.2, 1.5], size=n_prefs),
        "retention_target_override": override,
        "revision_daily_target": rng.choice([20, 30, 50, 100], size=n_prefs),
    })
    return users, prefs, sample_learner_weights(n_learners, rng)


def _review_logs(users, prefs, weights, concept_theme_map, complexity, days, mean_cards, as_of, rng):
    """Every card's reviews, stepped together: one numpy pass per review round."""
    n_learners = len(users)
    concept_ids = complexity.index.to_numpy()
    cards_per_learner = np.clip(rng.lognormal(np.log(mean_cards), 0.5, size=n_learners).astype(int), 5,
                                len(concept_ids))
    card_user = np.repeat(np.arange(n_learners), cards_per_learner)
    card_concept = np.concatenate([rng.choice(concept_ids, size=k, replace=False) for k in cards_per_learner])
    learner_start = rng.integers(0, int(days * 0.6), size=n_learners)
    intro_day = learner_start[card_user] + (rng.random(len(card_user)) * (days - learner_start[card_user])).astype(int)

    prefs_by_user = prefs.set_index("user_id").reindex(users["user_id"])
    retention = prefs_by_user["retention_target_override"].fillna(0.9).to_numpy()[card_user]
    spacing = prefs_by_user["spacing_multiplier"].fillna(1.0).to_numpy()[card_user]
    session_minute = np.clip(rng.normal(19 * 60, 180, size=n_learners), 7 * 60, 22 * 60).astype(int)
    card_weights = weights[card_user]
    hardness = complexity.reindex(card_concept).to_numpy()

    n_cards = len(card_user)
    stability = np.full(n_cards, np.nan)
    difficulty = np.full(n_cards, np.nan)
    last_day = np.full(n_cards, -1)
    next_day = intro_day.copy()
    next_minute = session_minute[card_user] + rng.integers(0, 60, size=n_cards)
    same_day_steps = np.zeros(n_cards, dtype=int)
    events = []
    while True:
        active = np.flatnonzero(next_day < days)
        if not len(active):
            break
        w = card_weights[active]
        first = np.isnan(stability[active])
        elapsed = np.where(first, 0, next_day[active] - last_day[active])
        r = np.where(first, 0.0, fsrs.retrievability(elapsed, np.where(first, 1.0, stability[active]), w))
        # First exposure: harder concepts are answered Again more often.
        recalled = np.where(first, rng.random(len(active)) > 0.15 + 0.5 * hardness[active],
                            rng.random(len(active)) < r)
        success_rating = rng.choice([fsrs.HARD, fsrs.GOOD, fsrs.EASY], p=[0.15, 0.72, 0.13], size=len(active))
        rating = np.where(recalled, success_rating, fsrs.AGAIN)
        state = np.where(first, STATE_LEARNING,
                         np.where(elapsed == 0, np.where(same_day_steps[active] > 0, STATE_RELEARNING, STATE_LEARNING),
                                  STATE_REVIEW))
        events.append(np.column_stack([active, next_day[active], next_minute[active], rating, state]))
        stability[active], difficulty[active] = fsrs.next_state(stability[active], difficulty[active], elapsed,
                                                                 rating, w)
        last_day[active] = next_day[active]

        relearn = (rating == fsrs.AGAIN) & (same_day_steps[active] < MAX_SAME_DAY_STEPS) \
            & (next_minute[active] + RELEARN_STEP_MINUTES < 24 * 60 - 1)
        interval = np.maximum(1, np.round(
            fsrs.next_interval_days(stability[active], retention[active], w) * spacing[active])).astype(int)
        late = np.where(rng.random(len(active)) < 0.3, rng.geometric(0.5, size=len(active)), 0)
        next_day[active] = np.where(relearn, next_day[active], next_day[active] + interval + late)
        next_minute[active] = np.where(relearn, next_minute[active] + RELEARN_STEP_MINUTES,
                                       session_minute[card_user[active]] + rng.integers(0, 60, size=len(active)))
        same_day_steps[active] = np.where(relearn, same_day_steps[active] + 1, 0)

    card, day, minute, rating, state = np.concatenate(events).T
    # The last simulated local day is two days back, so no time zone puts a review after as_of.
    first_day = (as_of - dt.timedelta(days=days + 1)).date()
    reviewed_at = _local_to_utc(first_day, day, minute, users["timezone"].to_numpy()[card_user[card]])
    user_ids = users["user_id"].to_numpy()[card_user[card]]
    concept = card_concept[card]
    duration = np.clip(rng.lognormal(np.log(8000), 0.6, size=len(card)) * np.where(rating == 1, 1.6, 1.0),
                       500, 120_000).astype(int)
    logs = pd.DataFrame({
        "id": derive_review_ids(user_ids, concept, reviewed_at.astype("int64") // 1_000_000),
        "user_id": user_ids, "concept_id": concept, "rating": rating.astype(int),
        "reviewed_at": reviewed_at, "review_duration_ms": duration, "state": state.astype(int),
    })
    return logs.sort_values("reviewed_at", kind="stable").reset_index(drop=True)


def _local_to_utc(first_day: dt.date, day: np.ndarray, minute: np.ndarray, timezones: np.ndarray) -> pd.DatetimeIndex:
    """Local wall-clock times (day offset, minute of day) in each learner's zone, as UTC instants."""
    local = pd.Timestamp(first_day) + pd.to_timedelta(day, unit="D") + pd.to_timedelta(minute, unit="min")
    local = pd.Series(local)
    utc = pd.Series(pd.NaT, index=local.index, dtype="datetime64[ns, UTC]")
    for zone in np.unique(timezones):
        mask = timezones == zone
        utc[mask] = local[mask].dt.tz_localize(zone, ambiguous="NaT", nonexistent="shift_forward").dt.tz_convert("UTC")
    # The hour repeated when clocks go back is ambiguous: take its first occurrence.
    missing = utc.isna()
    if missing.any():
        utc[missing] = (local[missing] - pd.Timedelta(hours=1)).dt.tz_localize("UTC")
    return pd.DatetimeIndex(utc)


def _resources_and_interactions(users, concept_theme_map, n_resources, days, as_of, rng):
    """Resources cover concepts of one theme; learners favour a few themes and popular resources."""
    resource_ids = np.arange(1, n_resources + 1)
    theme_ids = np.sort(concept_theme_map["theme_id"].unique())
    resource_theme = rng.choice(theme_ids, size=n_resources)
    resources = pd.DataFrame({
        "resource_id": resource_ids,
        "title": [f"Resource {i}" for i in resource_ids],
        "kind": rng.choice(RESOURCE_KINDS, size=n_resources),
        "difficulty": np.round(rng.beta(2, 2, size=n_resources), 3),
    })
    concepts_by_theme = concept_theme_map.groupby("theme_id")["concept_id"].apply(np.asarray)
    covered = []
    for resource_id, theme in zip(resource_ids, resource_theme):
        pool = concepts_by_theme[theme]
        for concept_id in rng.choice(pool, size=min(len(pool), rng.integers(1, 4)), replace=False):
            covered.append((int(resource_id), int(concept_id)))
    resource_concepts = pd.DataFrame(covered, columns=["resource_id", "concept_id"])

    n_users = len(users)
    affinity = rng.gamma(0.4, 1.0, size=(n_users, len(theme_ids)))  # a few favourite themes each
    theme_index = np.searchsorted(theme_ids, resource_theme)
    popularity = rng.lognormal(0.0, 1.0, size=n_resources)
    rows = []
    for u in range(n_users):
        score = affinity[u, theme_index] * popularity + 1e-9
        k = min(n_resources, max(3, rng.poisson(25)))
        chosen = rng.choice(resource_ids, size=k, replace=False, p=score / score.sum())
        rows.append(np.column_stack([np.full(k, users["user_id"].iloc[u]), chosen]))
    pairs = np.concatenate(rows)
    occurred_at = as_of - pd.to_timedelta(rng.random(len(pairs)) * days, unit="D")
    interactions = pd.DataFrame({
        "user_id": pairs[:, 0], "resource_id": pairs[:, 1],
        "interaction_type": rng.choice(["view", "complete", "like", "bookmark"], p=[0.5, 0.3, 0.15, 0.05],
                                       size=len(pairs)),
        "occurred_at": occurred_at.floor("s"),
    })
    return resources, resource_concepts, interactions.sort_values("occurred_at").reset_index(drop=True)
