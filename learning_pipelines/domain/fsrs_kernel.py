"""Compiled (numba) FSRS-6 replay that accumulates, per learner, the recency-weighted log loss,
its gradient with respect to the learner's 21 weights and the Gauss-Newton (Fisher) matrix.

Each card is replayed once per evaluation, carrying d(stability)/dw and d(difficulty)/dw (21
numbers each) through the recurrence (forward mode), and every scored review adds its term to
its learner's 21 + 21x21 sums straight away: no (reviews, 21) arrays, no autograd graph.
Learners run in parallel. The formulas are fsrs.py's, differentiated by hand; a test compares
the gradient and the Fisher matrix with finite differences of fsrs_replay.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from learning_pipelines.domain import fsrs

N_WEIGHTS = fsrs.N_WEIGHTS
EPS = 1e-6
_S_MIN, _S_MAX, _D_MIN, _D_MAX = fsrs.S_MIN, fsrs.S_MAX, fsrs.D_MIN, fsrs.D_MAX
_LN_09 = math.log(0.9)


@numba.njit(cache=True, parallel=True)
def loss_grad_fisher(elapsed, ratings, lengths, sample_weight, learner_start, learner_cards, weights, learners):
    """For each learner in `learners`: (sum of weighted log loss, gradient (21,), Fisher (21, 21)).

    elapsed, ratings, sample_weight: ReviewSequences' (step, card) grids; a review scores when its
    sample weight is > 0. (Reading them in place beats transposing them for every fit.)
    learner_cards[learner_start[l]:learner_start[l + 1]] are learner l's cards.
    """
    n = len(learners)
    loss = np.zeros(n)
    grad = np.zeros((n, N_WEIGHTS))
    fisher = np.zeros((n, N_WEIGHTS, N_WEIGHTS))
    for k in numba.prange(n):
        learner = learners[k]
        w = weights[learner]
        js = np.empty(N_WEIGHTS)
        jd = np.empty(N_WEIGHTS)
        jr = np.empty(N_WEIGHTS)
        for position in range(learner_start[learner], learner_start[learner + 1]):
            card = learner_cards[position]
            loss[k] += _replay_card(elapsed, ratings, card, lengths[card], sample_weight, w,
                                    js, jd, jr, grad[k], fisher[k])
        for i in range(N_WEIGHTS):
            for j in range(i):
                fisher[k, i, j] = fisher[k, j, i]
    return loss, grad, fisher


@numba.njit(cache=True)
def _replay_card(elapsed, ratings, card, length, sample_weight, w, js, jd, jr, grad, fisher):
    first = ratings[0, card]
    s = w[first - 1]
    js[:] = 0.0
    js[first - 1] = 1.0
    raw_d = w[4] - math.exp(w[5] * (first - 1)) + 1.0
    jd[:] = 0.0
    if _D_MIN < raw_d < _D_MAX:
        jd[4] = 1.0
        jd[5] = -(first - 1) * math.exp(w[5] * (first - 1))
    d = min(max(raw_d, _D_MIN), _D_MAX)
    decay = w[20]
    base = 0.9 ** (-1.0 / decay)
    factor = base - 1.0
    d_factor = base * _LN_09 / decay**2
    exp_w8 = math.exp(w[8])
    exp_3w5 = math.exp(3.0 * w[5])
    loss = 0.0
    for t in range(1, length):
        e = float(elapsed[t, card])
        g = ratings[t, card]
        u = 1.0 + factor * e / s
        log_u = math.log(u)
        r = math.exp(-decay * log_u)
        dr_ds = r * decay * factor * e / (u * s * s)
        for i in range(N_WEIGHTS):
            jr[i] = dr_ds * js[i]
        jr[20] += r * (-log_u - decay * (e / s) * d_factor / u)
        weight = sample_weight[t, card]
        if weight > 0.0:
            p = min(max(r, EPS), 1.0 - EPS)
            y = 1.0 if g > fsrs.AGAIN else 0.0
            loss -= weight * (y * math.log(p) + (1.0 - y) * math.log(1.0 - p))
            slope = weight * (p - y) / (p * (1.0 - p))
            curvature = weight / (p * (1.0 - p))
            for i in range(N_WEIGHTS):
                if jr[i] != 0.0:
                    grad[i] += slope * jr[i]
                    c = curvature * jr[i]
                    for j in range(i, N_WEIGHTS):
                        fisher[i, j] += c * jr[j]
        s = _next_stability(s, d, r, e, g, w, exp_w8, js, jd, jr)
        d = _next_difficulty(d, g, w, exp_3w5, jd)
    return loss


@numba.njit(cache=True)
def _next_stability(s, d, r, e, g, w, exp_w8, js, jd, jr):
    """New stability; js becomes its derivative (from the old js, the old jd and this review's jr).

    Besides the chain through S, D and R, each regime depends directly on up to four weights:
    (i0, v0) .. (i3, v3) are their indices and partial derivatives (-1: unused).
    """
    log_s = math.log(s)
    ds_dd = 0.0
    ds_dr = 0.0
    i0 = i1 = i2 = i3 = -1
    v0 = v1 = v2 = v3 = 0.0
    if e > 0 and g > fsrs.AGAIN:  # recall
        hard = w[15] if g == fsrs.HARD else 1.0
        easy = w[16] if g == fsrs.EASY else 1.0
        abc = exp_w8 * (11.0 - d) * math.exp(-w[9] * log_s)
        grow_r = math.exp(w[10] * (1.0 - r))
        growth = abc * (grow_r - 1.0) * hard * easy
        new_s = s * (1.0 + growth)
        ds_ds = 1.0 + growth * (1.0 - w[9])
        ds_dd = -s * growth / (11.0 - d)
        ds_dr = -s * abc * hard * easy * grow_r * w[10]
        i0, v0 = 8, s * growth
        i1, v1 = 9, -s * growth * log_s
        i2, v2 = 10, s * abc * hard * easy * grow_r * (1.0 - r)
        if g == fsrs.HARD:
            i3, v3 = 15, s * abc * (grow_r - 1.0)
        elif g == fsrs.EASY:
            i3, v3 = 16, s * abc * (grow_r - 1.0)
    elif e > 0:  # lapse
        log_d = math.log(d)
        log_s1 = math.log(s + 1.0)
        dp = math.exp(-w[12] * log_d)
        q1 = math.exp(w[13] * log_s1)
        ex = math.exp(w[14] * (1.0 - r))
        lapsed = w[11] * dp * (q1 - 1.0) * ex
        cap = s * math.exp(-w[17] * w[18])
        if cap < lapsed:
            new_s = cap
            ds_ds = cap / s
            i0, v0 = 17, -w[18] * cap
            i1, v1 = 18, -w[17] * cap
        else:
            new_s = lapsed
            ds_ds = w[11] * dp * ex * w[13] * q1 / (s + 1.0)
            ds_dd = -lapsed * w[12] / d
            ds_dr = -lapsed * w[14]
            i0, v0 = 11, dp * (q1 - 1.0) * ex
            i1, v1 = 12, -lapsed * log_d
            i2, v2 = 13, w[11] * dp * ex * q1 * log_s1
            i3, v3 = 14, lapsed * (1.0 - r)
    else:  # same day; Good and Easy never shrink stability
        shift = g - 3.0 + w[18]
        increase = math.exp(w[17] * shift - w[19] * log_s)
        if g >= fsrs.GOOD and increase <= 1.0:
            new_s = s
            ds_ds = 1.0
        else:
            new_s = s * increase
            ds_ds = increase * (1.0 - w[19])
            i0, v0 = 17, new_s * shift
            i1, v1 = 18, new_s * w[17]
            i2, v2 = 19, -new_s * log_s
    for i in range(N_WEIGHTS):
        js[i] = ds_ds * js[i] + ds_dd * jd[i] + ds_dr * jr[i]
    if i0 >= 0:
        js[i0] += v0
    if i1 >= 0:
        js[i1] += v1
    if i2 >= 0:
        js[i2] += v2
    if i3 >= 0:
        js[i3] += v3
    if new_s < _S_MIN or new_s > _S_MAX:
        js[:] = 0.0
        new_s = min(max(new_s, _S_MIN), _S_MAX)
    return new_s


@numba.njit(cache=True)
def _next_difficulty(d, g, w, exp_3w5, jd):
    """New difficulty (linear damping, mean reversion to Easy's initial difficulty); jd its derivative."""
    delta = -w[6] * (g - 3.0)
    damped = d + (10.0 - d) / 9.0 * delta
    init_easy = w[4] - exp_3w5 + 1.0
    reverted = w[7] * init_easy + (1.0 - w[7]) * damped
    if not (_D_MIN < reverted < _D_MAX):
        jd[:] = 0.0
        return min(max(reverted, _D_MIN), _D_MAX)
    scale = (1.0 - w[7]) * (1.0 - delta / 9.0)
    for i in range(N_WEIGHTS):
        jd[i] *= scale
    jd[4] += w[7]
    jd[5] += -w[7] * 3.0 * exp_3w5
    jd[6] += (1.0 - w[7]) * (10.0 - d) / 9.0 * -(g - 3.0)
    jd[7] += init_easy - damped
    return reverted
