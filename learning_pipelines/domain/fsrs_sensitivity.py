"""Forward-mode derivatives of the FSRS-6 replay: every prediction's gradient with respect to its
learner's 21 weights, carried through the recurrence alongside the memory state.

Each step updates d(stability)/dw and d(difficulty)/dw (arrays of shape (cards, 21)) from the
partial derivatives of that step's formulas, so one pass over the histories yields the Jacobian
that a Gauss-Newton fit needs — no autograd graph, no backward pass.
"""

from __future__ import annotations

import numpy as np

from learning_pipelines.domain import fsrs

_LN_09 = np.log(0.9)


def _retrievability_and_partials(elapsed, stability, decay):
    """R, dR/dS, dR/d(w20)."""
    base = 0.9 ** (-1.0 / decay)
    factor = base - 1.0
    u = 1.0 + factor * elapsed / stability
    r = u ** -decay
    d_factor = base * _LN_09 / decay**2
    dr_ds = r * decay * factor * elapsed / (u * stability**2)
    dr_ddecay = r * (-np.log(u) - decay * (elapsed / stability) * d_factor / u)
    return r, dr_ds, dr_ddecay


def replay_with_jacobian(elapsed_days, ratings, active_counts, card_weights):
    """Like fsrs_replay.replay (numpy), also returning d(prediction)/d(weights): (M, 21)."""
    w = np.asarray(card_weights, dtype=float)
    n_cards = w.shape[0]
    rows = np.arange(n_cards)
    g0 = ratings[0].astype(int)
    stability = w[rows, g0 - 1].copy()
    j_s = np.zeros((n_cards, fsrs.N_WEIGHTS))
    j_s[rows, g0 - 1] = 1.0
    raw_d = w[:, 4] - np.exp(w[:, 5] * (g0 - 1)) + 1.0
    difficulty = np.clip(raw_d, fsrs.D_MIN, fsrs.D_MAX)
    j_d = np.zeros((n_cards, fsrs.N_WEIGHTS))
    inside = (raw_d > fsrs.D_MIN) & (raw_d < fsrs.D_MAX)
    j_d[:, 4] = inside
    j_d[:, 5] = np.where(inside, -(g0 - 1) * np.exp(w[:, 5] * (g0 - 1)), 0.0)
    predictions, jacobians = [], []
    for step in range(1, len(active_counts)):
        n = int(active_counts[step])
        stability, difficulty, j_s, j_d, wn = stability[:n], difficulty[:n], j_s[:n], j_d[:n], w[:n]
        e = elapsed_days[step, :n].astype(float)
        g = ratings[step, :n].astype(int)
        r, dr_ds, dr_ddecay = _retrievability_and_partials(e, stability, wn[:, 20])
        j_r = dr_ds[:, None] * j_s
        j_r[:, 20] += dr_ddecay
        predictions.append(r)
        jacobians.append(j_r.copy())
        stability, difficulty, j_s, j_d = _step(stability, difficulty, j_s, j_d, j_r, r, e, g, wn)
    empty = np.zeros((0, fsrs.N_WEIGHTS))
    return (np.concatenate(predictions) if predictions else np.zeros(0),
            np.concatenate(jacobians) if jacobians else empty)


def _step(s, d, j_s, j_d, j_r, r, e, g, w):
    """One review for every card: new stability and difficulty with their Jacobians.

    The three regimes (recall, lapse, same day) are computed for all cards and selected with
    masks: cheaper here than gathering and scattering (cards, 21) blocks per regime.
    """
    n = len(s)
    recall = (e > 0) & (g > fsrs.AGAIN)
    lapse = (e > 0) & (g == fsrs.AGAIN)
    same_day = e == 0
    log_s = np.log(s)
    direct = np.zeros((n, 12))  # d(new S)/dw for w8..w19, the weights the stability formulas use

    # Recall: S * (1 + e^w8 (11 - D) S^-w9 (e^{w10 (1 - R)} - 1) hard easy)
    hard = np.where(g == fsrs.HARD, w[:, 15], 1.0)
    easy = np.where(g == fsrs.EASY, w[:, 16], 1.0)
    abc = np.exp(w[:, 8]) * (11.0 - d) * np.exp(-w[:, 9] * log_s)
    grow_r = np.exp(w[:, 10] * (1.0 - r))
    growth = abc * (grow_r - 1.0) * hard * easy
    recalled_s = s * (1.0 + growth)
    # Lapse: min(w11 D^-w12 ((S + 1)^w13 - 1) e^{w14 (1 - R)}, S / e^{w17 w18})
    dp = d ** -w[:, 12]
    q1 = (s + 1.0) ** w[:, 13]
    ex = np.exp(w[:, 14] * (1.0 - r))
    lapsed = w[:, 11] * dp * (q1 - 1.0) * ex
    cap = s * np.exp(-w[:, 17] * w[:, 18])
    capped = lapse & (cap < lapsed)
    lapse_free = lapse & ~capped
    # Same day: S e^{w17 (G - 3 + w18)} S^-w19, never below S for Good and Easy
    shift = g - 3.0 + w[:, 18]
    increase = np.exp(w[:, 17] * shift - w[:, 19] * log_s)
    floored = same_day & (g >= fsrs.GOOD) & (increase <= 1.0)
    short_moves = same_day & ~floored

    new_s = np.where(recall, recalled_s, np.where(capped, cap, np.where(lapse, lapsed, np.where(floored, s, s * increase))))
    ds_ds = np.where(recall, 1.0 + growth * (1.0 - w[:, 9]),
                     np.where(capped, cap / s,
                              np.where(lapse, w[:, 11] * dp * ex * w[:, 13] * q1 / (s + 1.0),
                                       np.where(floored, 1.0, increase * (1.0 - w[:, 19])))))
    ds_dd = np.where(recall, -s * growth / (11.0 - d), np.where(lapse_free, -lapsed * w[:, 12] / d, 0.0))
    ds_dr = np.where(recall, -s * abc * hard * easy * grow_r * w[:, 10], np.where(lapse_free, -lapsed * w[:, 14], 0.0))
    direct[:, 0] = np.where(recall, s * growth, 0.0)
    direct[:, 1] = np.where(recall, -s * growth * log_s, 0.0)
    direct[:, 2] = np.where(recall, s * abc * hard * easy * grow_r * (1.0 - r), 0.0)
    direct[:, 7] = np.where(recall & (g == fsrs.HARD), s * abc * (grow_r - 1.0), 0.0)
    direct[:, 8] = np.where(recall & (g == fsrs.EASY), s * abc * (grow_r - 1.0), 0.0)
    direct[:, 3] = np.where(lapse_free, dp * (q1 - 1.0) * ex, 0.0)
    direct[:, 4] = np.where(lapse_free, -lapsed * np.log(d), 0.0)
    direct[:, 5] = np.where(lapse_free, w[:, 11] * dp * ex * q1 * np.log(s + 1.0), 0.0)
    direct[:, 6] = np.where(lapse_free, lapsed * (1.0 - r), 0.0)
    short_s = s * increase
    direct[:, 9] = np.where(capped, -w[:, 18] * cap, np.where(short_moves, short_s * shift, 0.0))
    direct[:, 10] = np.where(capped, -w[:, 17] * cap, np.where(short_moves, short_s * w[:, 17], 0.0))
    direct[:, 11] = np.where(short_moves, -short_s * log_s, 0.0)

    j_s_new = ds_ds[:, None] * j_s
    j_s_new += ds_dd[:, None] * j_d
    j_r *= ds_dr[:, None]  # j_r is not needed after this step
    j_s_new += j_r
    j_s_new[:, 8:20] += direct
    j_s_new[(new_s < fsrs.S_MIN) | (new_s > fsrs.S_MAX)] = 0.0
    new_s = np.clip(new_s, fsrs.S_MIN, fsrs.S_MAX)

    delta = -w[:, 6] * (g - 3.0)
    damped = d + (10.0 - d) / 9.0 * delta
    init_easy = w[:, 4] - np.exp(3.0 * w[:, 5]) + 1.0
    reverted = w[:, 7] * init_easy + (1.0 - w[:, 7]) * damped
    inside = (reverted > fsrs.D_MIN) & (reverted < fsrs.D_MAX)
    j_d_new = j_d * ((1.0 - w[:, 7]) * (1.0 - delta / 9.0))[:, None]
    j_d_new[:, 4] += w[:, 7]
    j_d_new[:, 5] += -w[:, 7] * 3.0 * np.exp(3.0 * w[:, 5])
    j_d_new[:, 6] += (1.0 - w[:, 7]) * (10.0 - d) / 9.0 * -(g - 3.0)
    j_d_new[:, 7] += init_easy - damped
    j_d_new[~inside] = 0.0
    return new_s, np.clip(reverted, fsrs.D_MIN, fsrs.D_MAX), j_s_new, j_d_new
