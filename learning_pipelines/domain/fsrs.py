"""FSRS-6 memory model: a handful of pure, vectorized functions.

Follows fsrs-rs (open-spaced-repetition) for FSRS-6. `w` is either the 21 weights or an
array of shape (n, 21) holding one weight vector per card, so many learners' cards step
together. Elapsed time is in whole learner-days (FSRS-6 is day-based); a same-day review
(0 days) uses the short-term stability formula.

The optimizer differentiates these formulas by hand in fsrs_kernel.py (compiled): change one
here and change it and its derivative there (a test compares them with finite differences).
"""

from __future__ import annotations

import numpy as np

N_WEIGHTS = 21
AGAIN, HARD, GOOD, EASY = 1, 2, 3, 4

# Stability and difficulty ranges, as in fsrs-rs.
S_MIN, S_MAX = 0.001, 36500.0
D_MIN, D_MAX = 1.0, 10.0
INIT_S_MAX = 100.0

# FSRS-6 default weights (fsrs-rs FSRS6_DEFAULT_PARAMETERS).
DEFAULT_WEIGHTS = np.array([
    0.212, 1.2931, 2.3065, 8.2956, 6.4133, 0.8334, 3.0194, 0.001, 1.8722, 0.1666, 0.796,
    1.4835, 0.0614, 0.2629, 1.6483, 0.6014, 1.8729, 0.5425, 0.0912, 0.0658, 0.1542,
])

# Clamping bounds of each weight (fsrs-rs parameter_clipper_v6, short-term enabled,
# one relearning step).
WEIGHT_BOUNDS = np.array([
    (S_MIN, INIT_S_MAX), (S_MIN, INIT_S_MAX), (S_MIN, INIT_S_MAX), (S_MIN, INIT_S_MAX),
    (D_MIN, D_MAX), (0.001, 4.0), (0.001, 4.0), (0.001, 0.75), (0.0, 4.5), (0.0, 0.8),
    (0.001, 3.5), (0.001, 5.0), (0.001, 0.25), (0.001, 0.9), (0.0, 4.0), (0.0, 1.0),
    (1.0, 6.0), (0.0, 2.0), (0.0, 2.0), (0.01, 0.8), (0.1, 0.8),
])


def _w(w, i: int):
    return np.asarray(w)[..., i]


def clip_weights(w: np.ndarray) -> np.ndarray:
    return np.clip(w, WEIGHT_BOUNDS[:, 0], WEIGHT_BOUNDS[:, 1])


def decay_only_weights(decay) -> np.ndarray:
    """Per-card weights carrying only w20: all that retrievability and next_interval_days read, for
    callers that stored a card's decay rather than its learner's whole weight vector."""
    decay = np.asarray(decay, dtype=float)
    # Column-major: the zero columns are pages never written (calloc), so only w20's column costs memory.
    weights = np.zeros((len(decay), N_WEIGHTS), order="F")
    weights[:, 20] = decay
    return weights


def forgetting_factor(w):
    """The factor that makes R(S, S) = 0.9 under decay -w20."""
    return 0.9 ** (1.0 / -_w(w, 20)) - 1.0


def retrievability(elapsed_days, stability, w):
    """Probability of recall after `elapsed_days` at `stability` (power forgetting curve)."""
    return (1.0 + forgetting_factor(w) * elapsed_days / stability) ** -_w(w, 20)


def next_interval_days(stability, desired_retention, w):
    """Days until retrievability falls to `desired_retention` (fractional, not rounded)."""
    interval = stability / forgetting_factor(w) * (desired_retention ** (1.0 / -_w(w, 20)) - 1.0)
    return np.clip(interval, 0.0, S_MAX)


def initial_stability(rating, w):
    """w0..w3: the stability after a first Again, Hard, Good or Easy."""
    index = np.asarray(rating, dtype=int) - 1
    w = np.asarray(w)
    return w[index] if w.ndim == 1 else w[np.arange(len(index)), index]


def initial_difficulty(rating, w):
    """Unclamped, as used by mean reversion; clamp it for a card's first state."""
    return _w(w, 4) - np.exp(_w(w, 5) * (rating - 1)) + 1.0


def next_difficulty(difficulty, rating, w):
    """Linear damping toward 10, then mean reversion toward the initial difficulty of Easy."""
    delta = -_w(w, 6) * (rating - 3.0)
    damped = difficulty + (10.0 - difficulty) / 9.0 * delta
    reverted = _w(w, 7) * initial_difficulty(EASY, w) + (1.0 - _w(w, 7)) * damped
    return np.clip(reverted, D_MIN, D_MAX)


def stability_after_recall(stability, difficulty, r, rating, w):
    hard_penalty = np.where(rating == HARD, _w(w, 15), 1.0)
    easy_bonus = np.where(rating == EASY, _w(w, 16), 1.0)
    growth = (np.exp(_w(w, 8)) * (11.0 - difficulty) * stability ** -_w(w, 9)
              * (np.exp(_w(w, 10) * (1.0 - r)) - 1.0) * hard_penalty * easy_bonus)
    return stability * (growth + 1.0)


def stability_after_lapse(stability, difficulty, r, w):
    """Post-lapse stability, never above what a same-day Again would leave (FSRS-6)."""
    lapse = (_w(w, 11) * difficulty ** -_w(w, 12) * ((stability + 1.0) ** _w(w, 13) - 1.0)
             * np.exp(_w(w, 14) * (1.0 - r)))
    return np.minimum(lapse, stability / np.exp(_w(w, 17) * _w(w, 18)))


def short_term_stability(stability, rating, w):
    """Same-day review: Good and Easy never shrink stability."""
    increase = np.exp(_w(w, 17) * (rating - 3.0 + _w(w, 18))) * stability ** -_w(w, 19)
    return stability * np.where(rating >= GOOD, np.clip(increase, 1.0, None), increase)


def initial_state(rating, w):
    """(stability, difficulty) after a card's first review."""
    difficulty = initial_difficulty(rating, w)
    return initial_stability(rating, w), np.clip(difficulty, D_MIN, D_MAX)


def review_step(stability, difficulty, elapsed_days, rating, w):
    """(stability, difficulty) after a later review, `elapsed_days` (whole days) after the previous one."""
    r = retrievability(elapsed_days, stability, w)
    new_s = np.where(rating == AGAIN, stability_after_lapse(stability, difficulty, r, w),
                     stability_after_recall(stability, difficulty, r, rating, w))
    new_s = np.where(elapsed_days == 0, short_term_stability(stability, rating, w), new_s)
    return np.clip(new_s, S_MIN, S_MAX), next_difficulty(difficulty, rating, w)


def next_state(stability, difficulty, elapsed_days, rating, w) -> tuple[np.ndarray, np.ndarray]:
    """Memory state after a review (numpy). A card without a state (stability NaN) takes its initial one."""
    stability = np.asarray(stability, dtype=float)
    difficulty = np.asarray(difficulty, dtype=float)
    elapsed_days = np.maximum(np.round(np.asarray(elapsed_days, dtype=float)), 0.0)
    rating = np.asarray(rating)
    first = np.isnan(stability)
    s_new, d_new = review_step(np.where(first, 1.0, stability), np.where(first, 5.0, difficulty),
                               elapsed_days, rating, w)
    s_first, d_first = initial_state(rating, w)
    return np.where(first, np.clip(s_first, S_MIN, S_MAX), s_new), np.where(first, d_first, d_new)
