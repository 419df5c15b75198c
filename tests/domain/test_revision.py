import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from learning_pipelines.domain.complexity import complexity_scores
from learning_pipelines.domain.revision import (
    InvalidPreference,
    build_queues,
    concept_theme_keys,
    preference_problems,
    validate_preferences,
)

DAY = dt.date(2026, 3, 10)


def t(text):
    return pd.Timestamp(text, tz="UTC")


def learner(user_id, timezone="UTC", retention=0.9, spacing=1.0):
    return {"user_id": user_id, "timezone": timezone, "day_start_hour": 4, "retention_target": retention,
            "spacing_multiplier": spacing}


def card(user_id, concept_id, due_at, stability=10.0):
    """At retention 0.9 and spacing 1 a card falls due exactly `stability` days after its last review."""
    return {"user_id": user_id, "concept_id": concept_id, "stability_days": stability,
            "last_review_at": t(due_at) - pd.Timedelta(days=stability), "decay": 0.1542}


THEMES = pd.DataFrame({"concept_id": [10, 11, 12, 13, 14, 15], "theme_key": ["1", "1", "2", "2", "3", "3"],
                       "is_fallback": False})


def queues(cards, learners, themes=THEMES):
    return build_queues(pd.DataFrame(cards), pd.DataFrame(learners), themes, DAY)


def test_due_and_overdue_at_the_learners_day_boundaries():
    # UTC learner, days start 04:00: 2026-03-10 runs from 03-10 04:00 to 03-11 04:00 UTC.
    result = queues([card(1, 10, "2026-03-10T03:59"), card(1, 11, "2026-03-11T04:00"),
                     card(1, 12, "2026-03-11T04:01"), card(1, 13, "2026-03-10T04:00")], [learner(1)])
    summary = result.summaries.iloc[0]
    assert (summary["due_today_total"], summary["overdue_total"]) == (3, 1)
    rows = result.themes.set_index("theme_key")
    assert (rows.loc["1", "due_today"], rows.loc["1", "overdue"]) == (2, 1)
    assert (rows.loc["2", "due_today"], rows.loc["2", "overdue"]) == (1, 0)


def test_time_zone_moves_the_day():
    # Tokyo (UTC+9), day start 04:00 local: the day is 03-09 19:00 .. 03-10 19:00 UTC.
    cards = [card(2, 10, "2026-03-10T18:59"), card(2, 11, "2026-03-10T19:01"), card(2, 12, "2026-03-09T18:59")]
    tokyo = queues(cards, [learner(2, "Asia/Tokyo")]).summaries.iloc[0]
    assert (tokyo["due_today_total"], tokyo["overdue_total"]) == (2, 1)
    # The same cards in New York (UTC-4 after the 03-08 DST change): the day is 03-10 08:00 .. 03-11 08:00 UTC.
    new_york = queues([{**c, "user_id": 3} for c in cards], [learner(3, "America/New_York")]).summaries.iloc[0]
    assert (new_york["due_today_total"], new_york["overdue_total"]) == (3, 1)


def test_retention_target_and_spacing_move_due_dates():
    cards = [card(1, 10, "2026-03-12T12:00", stability=10.0)]  # due in two days at 0.9
    assert queues(cards, [learner(1)]).summaries["due_today_total"].iloc[0] == 0
    assert queues(cards, [learner(1, retention=0.95)]).summaries["due_today_total"].iloc[0] == 1
    early = [card(1, 10, "2026-03-08T12:00", stability=10.0)]  # overdue at 0.9 and spacing 1
    assert queues(early, [learner(1, spacing=2.0)]).summaries["due_today_total"].iloc[0] == 0


def test_themes_ranked_by_due_today_then_weaker_mastery():
    cards = [
        card(1, 10, "2026-03-10T12:00"), card(1, 11, "2026-03-10T12:00"),  # theme 1: 2 due
        card(1, 12, "2026-03-10T12:00"),  # theme 2: 1 due
        card(1, 14, "2026-03-10T12:00"), card(1, 15, "2026-09-01T00:00", stability=200.0),  # theme 3: 1 due, stronger
    ]
    result = queues(cards, [learner(1)])
    assert result.themes["theme_key"].tolist() == ["1", "2", "3"]
    assert result.themes["rank"].tolist() == [1, 2, 3]
    assert json.loads(result.summaries["recommended_theme_ids"].iloc[0]) == ["1", "2", "3"]
    mastery = result.themes.set_index("theme_key")["mastery"]
    assert mastery["2"] < mastery["3"]


def test_unmapped_concepts_fall_back_and_are_logged_as_debt():
    concept_map = pd.DataFrame({"concept_id": [10, 11], "theme_id": [5, 5]})
    edges = pd.DataFrame({"prerequisite_id": [10], "concept_id": [12]})  # 12 is linked to theme 5; 13 to nothing
    themes = concept_theme_keys(np.array([10, 11, 12, 13]), concept_map, edges).sort_values("concept_id")
    assert themes["theme_key"].tolist() == ["5", "5", "THEME::5", "UNMAPPED"]
    result = queues([card(1, c, "2026-03-10T12:00") for c in (10, 12, 13)] + [card(1, 11, "2026-04-30T00:00")],
                    [learner(1)], themes)
    debt = result.debt.set_index("concept_id")
    assert set(debt.index) == {12, 13}  # due fallbacks only
    assert debt.loc[12, "fallback_key"] == "THEME::5" and debt.loc[13, "fallback_key"] == "UNMAPPED"
    assert result.summaries["due_today_total"].iloc[0] == result.themes["due_today"].sum() == 3


def test_preference_ranges():
    prefs = pd.DataFrame({"user_id": [1, 2, 3, 4], "spacing_multiplier": [1.0, 2.5, 0.5, 1.0],
                          "retention_target_override": pd.array([None, 0.9, 0.69, 0.95], dtype="Float64"),
                          "revision_daily_target": [20, 10, 5, 0]})
    problems = preference_problems(prefs)
    assert problems.tolist() == ["", "spacing_multiplier 2.5 outside [0.5, 2.0]",
                                 "retention_target_override 0.69 outside [0.7, 0.95]",
                                 "revision_daily_target 0 must be positive"]
    with pytest.raises(InvalidPreference, match=r"3 learning preference row\(s\) rejected: user 2: spacing_multiplier 2.5"):
        validate_preferences(prefs)
    validate_preferences(prefs.iloc[:1])


@pytest.mark.parametrize("column, value, problem", [
    ("spacing_multiplier", float("nan"), "spacing_multiplier nan is not a finite number"),
    ("spacing_multiplier", float("inf"), "spacing_multiplier inf is not a finite number"),
    ("spacing_multiplier", None, "spacing_multiplier is missing"),
    ("retention_target_override", float("nan"), "retention_target_override nan is not a finite number"),
    ("retention_target_override", float("-inf"), "retention_target_override -inf is not a finite number"),
    ("revision_daily_target", float("inf"), "revision_daily_target inf is not a finite number"),
])
def test_nan_and_infinite_preferences_are_refused_naming_the_learner(column, value, problem):
    good = {"spacing_multiplier": 1.0, "retention_target_override": 0.9, "revision_daily_target": 20}
    prefs = pd.DataFrame({"user_id": [7, 8]} | {c: pd.Series([v, v], dtype=object) for c, v in good.items()})
    prefs.loc[1, column] = value
    with pytest.raises(InvalidPreference, match=rf"1 learning preference row\(s\) rejected: user 8: {problem}"):
        validate_preferences(prefs)
    validate_preferences(prefs.iloc[:1])


def test_only_nan_read_from_the_warehouse_counts_as_an_unset_target():
    unset = pd.DataFrame({"user_id": [1, 2], "spacing_multiplier": [1.0, 1.0],
                          "retention_target_override": [None, pd.NA], "revision_daily_target": [None, pd.NA]})
    validate_preferences(unset)
    read_back = pd.DataFrame({"user_id": [1], "spacing_multiplier": [1.0], "retention_target_override": [np.nan]})
    assert preference_problems(read_back).tolist() == [""]
    with pytest.raises(InvalidPreference, match=r"user 1: retention_target_override nan is not a finite number "
                                                r"\(None or pd.NA leaves it unset\)"):
        validate_preferences(read_back)


def test_complexity_shrinks_sparse_concepts_toward_their_theme_and_smooths_over_the_graph():
    signals = pd.DataFrame({
        "first_review_lapse_rate": [0.9, 0.1, 0.5, 0.2], "mean_difficulty": [9.0, 2.0, 5.0, 3.0],
        "stability_growth": [0.1, 1.0, 0.5, 0.9], "n_learners": [100, 100, 1, 100],
    }, index=pd.Index([1, 2, 3, 4], name="concept_id"))
    themes = pd.Series({1: "a", 2: "a", 3: "a", 4: "b", 5: "b"})
    no_edges = pd.DataFrame({"prerequisite_id": [], "concept_id": []})
    scores = complexity_scores(signals, themes, no_edges, np.array([1, 2, 3, 4, 5])).set_index("concept_id")
    assert scores.loc[1, "score"] > scores.loc[4, "score"] > scores.loc[2, "score"]
    assert scores["score"].between(0, 1).all()
    theme_a_mean = scores.loc[[1, 2, 3], "raw_score"].mean()
    assert abs(scores.loc[3, "score"] - theme_a_mean) < abs(scores.loc[3, "raw_score"] - theme_a_mean)
    assert scores.loc[5, "confidence"] == 0 and scores.loc[5, "score"] == pytest.approx(scores.loc[4, "raw_score"])
    linked = complexity_scores(signals, themes, pd.DataFrame({"prerequisite_id": [1], "concept_id": [2]}),
                               np.array([1, 2, 3, 4, 5])).set_index("concept_id")
    assert linked.loc[2, "score"] > scores.loc[2, "score"] and linked.loc[1, "score"] < scores.loc[1, "score"]
