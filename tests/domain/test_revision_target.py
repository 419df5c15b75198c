"""The queue follows the learner's daily target: today's concepts are the due ones, overdue first by recall lost,
then the others by recall lost, at most the target; themes count them, rank by them and recommend the themes that
hold them; without a target the queue is as it always was."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from learning_pipelines.domain import fsrs
from learning_pipelines.domain.revision import build_queues

DAY = dt.date(2026, 3, 10)
DAY_START = pd.Timestamp("2026-03-10T04:00", tz="UTC")  # a UTC learner whose day starts at 04:00
DECAY = 0.1542
N_OVERDUE, N_DUE_LATER, N_NOT_DUE = 120, 180, 60


def learner(user_id, daily_target=None, retention=0.9):
    return {"user_id": user_id, "timezone": "UTC", "day_start_hour": 4, "retention_target": retention,
            "spacing_multiplier": 1.0, "revision_daily_target": np.nan if daily_target is None else daily_target}


def three_hundred_due(user_id: int) -> pd.DataFrame:
    """120 overdue cards (due up to 10 days before the day, stabilities unrelated to their due times, so recall lost
    and due time disagree on the order), 180 due later in the day, 60 due after it. At retention 0.9 and spacing 1 a
    card falls due `stability` days after its last review."""
    concept_id = np.arange(1, N_OVERDUE + N_DUE_LATER + N_NOT_DUE + 1)
    stability = 2.0 + (concept_id * 7 % 50)
    due_at = np.where(concept_id <= N_OVERDUE, DAY_START - pd.to_timedelta(concept_id * 2, unit="h"),
                      np.where(concept_id <= N_OVERDUE + N_DUE_LATER,
                               DAY_START + pd.to_timedelta(concept_id - N_OVERDUE, unit="min"),
                               DAY_START + pd.to_timedelta(2 + concept_id % 5, unit="D")))
    return pd.DataFrame({"user_id": user_id, "concept_id": concept_id, "stability_days": stability,
                         "last_review_at": pd.to_datetime(due_at, utc=True) - pd.to_timedelta(stability, unit="D"),
                         "decay": DECAY})


THEMES = pd.DataFrame({"concept_id": np.arange(1, 401), "theme_key": (np.arange(1, 401) % 6 + 1).astype(str),
                       "is_fallback": False})


def expected_order(cards: pd.DataFrame, retention: float) -> pd.DataFrame:
    """The due cards in today's order, computed card by card: overdue first, most recall lost first, concept id."""
    elapsed = (DAY_START - cards["last_review_at"]).dt.total_seconds().clip(lower=0) / 86_400
    recall = fsrs.retrievability(elapsed.to_numpy(), cards["stability_days"].to_numpy(),
                                 fsrs.decay_only_weights(cards["decay"]))
    due_at = cards["last_review_at"] + pd.to_timedelta(
        fsrs.next_interval_days(cards["stability_days"].to_numpy(), retention, fsrs.decay_only_weights(cards["decay"])),
        unit="D")
    ordered = cards.assign(recall_lost=retention - recall, overdue=due_at < DAY_START,
                           due=due_at <= DAY_START + pd.Timedelta(days=1))
    return ordered.loc[ordered["due"]].sort_values(["overdue", "recall_lost", "concept_id"],
                                                   ascending=[False, False, True]).reset_index(drop=True)


@pytest.mark.parametrize("daily_target", [50, 200])
def test_a_target_of_50_among_300_due_takes_the_overdue_first_by_recall_lost(daily_target):
    cards = three_hundred_due(1)
    queues = build_queues(cards, pd.DataFrame([learner(1, daily_target)]), THEMES, DAY)
    expected = expected_order(cards, 0.9)
    assert len(expected) == 300 and expected["overdue"].sum() == N_OVERDUE

    target = queues.target_concepts
    assert len(target) == daily_target
    assert target["position"].tolist() == list(range(1, daily_target + 1))
    assert target["concept_id"].tolist() == expected["concept_id"].head(daily_target).tolist()
    assert target["overdue"].tolist() == [True] * min(daily_target, N_OVERDUE) + [False] * max(
        daily_target - N_OVERDUE, 0)
    np.testing.assert_allclose(target["recall_lost"], expected["recall_lost"].head(daily_target))
    for _, part in target.groupby("overdue"):
        assert part["recall_lost"].is_monotonic_decreasing
    assert (target["theme_key"] == target["concept_id"].map(THEMES.set_index("concept_id")["theme_key"])).all()

    themes = queues.themes.set_index("theme_key")
    assert themes["due_in_target"].sum() == daily_target
    assert (themes["due_in_target"] == target.groupby("theme_key").size().reindex(themes.index, fill_value=0)).all()
    summary = queues.summaries.iloc[0]
    assert (summary["due_today_total"], summary["overdue_total"]) == (300, N_OVERDUE)
    recommended = json.loads(summary["recommended_theme_ids"])
    assert set(recommended) == set(target["theme_key"])
    assert themes.loc[recommended, "due_in_target"].sum() == daily_target, "the recommended themes hold the target"
    ranked = queues.themes.sort_values("rank")
    assert ranked.loc[ranked["due_in_target"] > 0, "theme_key"].tolist() == recommended
    assert ranked["due_in_target"].is_monotonic_decreasing


def test_recall_lost_is_the_retention_target_minus_recall_at_the_start_of_the_day():
    cards = three_hundred_due(1)
    queues = build_queues(cards, pd.DataFrame([learner(1, 30, retention=0.95)]), THEMES, DAY)
    expected = expected_order(cards, 0.95)
    assert queues.target_concepts["concept_id"].tolist() == expected["concept_id"].head(30).tolist()
    np.testing.assert_allclose(queues.target_concepts["recall_lost"], expected["recall_lost"].head(30))


def test_without_a_target_the_queue_is_as_before():
    cards = three_hundred_due(1)
    unset = build_queues(cards, pd.DataFrame([learner(1)]), THEMES, DAY)
    no_column = build_queues(cards, pd.DataFrame([learner(1)]).drop(columns="revision_daily_target"), THEMES, DAY)
    for queues in (unset, no_column):
        assert queues.target_concepts.empty
        assert (queues.themes["due_in_target"] == queues.themes["due_today"]).all()
    pd.testing.assert_frame_equal(unset.themes, no_column.themes)
    pd.testing.assert_frame_equal(unset.summaries, no_column.summaries)
    # As ranked before targets: most due first, then weaker mastery; every theme with a due concept recommended.
    expected = unset.themes.sort_values(["due_today", "mastery", "theme_key"], ascending=[False, True, True])
    assert unset.themes["theme_key"].tolist() == expected["theme_key"].tolist()
    assert json.loads(unset.summaries["recommended_theme_ids"].iloc[0]) == unset.themes.loc[
        unset.themes["due_today"] > 0, "theme_key"].tolist()


def test_a_target_changes_only_what_it_shapes():
    cards = three_hundred_due(1)
    unset = build_queues(cards, pd.DataFrame([learner(1)]), THEMES, DAY)
    targeted = build_queues(cards, pd.DataFrame([learner(1, 50)]), THEMES, DAY)
    counted = ["theme_key", "due_today", "overdue", "mastery"]
    pd.testing.assert_frame_equal(unset.themes[counted].sort_values("theme_key", ignore_index=True),
                                  targeted.themes[counted].sort_values("theme_key", ignore_index=True))
    totals = ["user_id", "due_today_total", "overdue_total"]
    pd.testing.assert_frame_equal(unset.summaries[totals], targeted.summaries[totals])
    pd.testing.assert_frame_equal(unset.debt, targeted.debt)
    above_everything = build_queues(cards, pd.DataFrame([learner(1, 1000)]), THEMES, DAY)
    pd.testing.assert_frame_equal(above_everything.themes, unset.themes)
    pd.testing.assert_frame_equal(above_everything.summaries, unset.summaries)
    assert len(above_everything.target_concepts) == 300


def test_the_target_ranks_the_themes_that_hold_it_first():
    # Theme "A": 5 cards due late in the day; theme "B": 2 overdue cards. A target of 2 is B's two.
    cards = pd.concat([three_hundred_due(1).iloc[[N_OVERDUE + i for i in range(5)]].assign(concept_id=range(1, 6)),
                       three_hundred_due(1).iloc[[0, 1]].assign(concept_id=[6, 7])], ignore_index=True)
    themes = pd.DataFrame({"concept_id": range(1, 8), "theme_key": ["A"] * 5 + ["B"] * 2, "is_fallback": False})
    unset = build_queues(cards, pd.DataFrame([learner(1)]), themes, DAY)
    assert json.loads(unset.summaries["recommended_theme_ids"].iloc[0]) == ["A", "B"]
    targeted = build_queues(cards, pd.DataFrame([learner(1, 2)]), themes, DAY)
    assert targeted.themes["theme_key"].tolist() == ["B", "A"]
    assert targeted.themes["due_in_target"].tolist() == [2, 0]
    assert json.loads(targeted.summaries["recommended_theme_ids"].iloc[0]) == ["B"]


def test_each_learner_of_a_chunk_has_their_own_target():
    cards = pd.concat([three_hundred_due(1), three_hundred_due(2), three_hundred_due(3).head(4)], ignore_index=True)
    queues = build_queues(cards, pd.DataFrame([learner(1, 50), learner(2), learner(3, 10)]), THEMES, DAY)
    target = queues.target_concepts
    assert target.groupby("user_id").size().to_dict() == {1: 50, 3: 4}, "no rows without a target; fewer due: all"
    assert target.loc[target["user_id"] == 3, "position"].tolist() == [1, 2, 3, 4]
    in_target = queues.themes.groupby("user_id")["due_in_target"].sum()
    assert in_target.to_dict() == {1: 50, 2: 300, 3: 4}
    alone = build_queues(three_hundred_due(1), pd.DataFrame([learner(1, 50)]), THEMES, DAY)
    pd.testing.assert_frame_equal(target.loc[target["user_id"] == 1].reset_index(drop=True), alone.target_concepts)


def test_overdue_comes_first_even_where_recall_lost_says_otherwise():
    # With spacing 0.5 a card falls due at a recall that depends on its decay (0.936 at decay 0.1, 0.947 at 0.8): an
    # overdue card (decay 0.8, recall 0.944) can have lost less than one due later in the day (decay 0.1, 0.940).
    def reviewed_for(recall, decay, stability=10.0):
        factor = fsrs.forgetting_factor(fsrs.decay_only_weights([decay]))[0]
        elapsed = stability / factor * (recall ** (-1 / decay) - 1)
        return {"user_id": 1, "stability_days": stability, "decay": decay,
                "last_review_at": DAY_START - pd.Timedelta(days=elapsed)}

    cards = pd.DataFrame([{**reviewed_for(0.944, 0.8), "concept_id": 1}, {**reviewed_for(0.940, 0.1), "concept_id": 2}])
    halved = pd.DataFrame([{**learner(1, 2), "spacing_multiplier": 0.5}])
    queues = build_queues(cards, halved, THEMES, DAY)
    target = queues.target_concepts
    assert target["overdue"].tolist() == [True, False] and target["concept_id"].tolist() == [1, 2]
    assert target["recall_lost"].iloc[0] < target["recall_lost"].iloc[1]
    assert (queues.summaries["due_today_total"].iloc[0], queues.summaries["overdue_total"].iloc[0]) == (2, 1)
