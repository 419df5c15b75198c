"""Compiled (numba) FSRS-6 replay that accumulates the recency-weighted log loss, its gradient with
respect to a learner's 21 weights and the Gauss-Newton (Fisher) matrix; and the card layout it reads.

Layout: every card's reviews lie next to each other in time order (`card_start`), a learner's cards
next to each other, so a card's replay reads consecutive memory. The work
is cut into units, runs of whole cards of one learner with about UNIT_REVIEWS reviews, replayed in
parallel: many small learners and one large learner (the pooled fit) both keep every core busy.

Each card is replayed once per evaluation, carrying d(stability)/dw and d(difficulty)/dw (21
numbers each) through the recurrence (forward mode); every scored review adds its term to its
unit's gradient and one column to its unit's Fisher factor: no autograd graph. The formulas are
fsrs.py's, differentiated by hand; a test compares the gradient and the Fisher matrix with finite
differences of fsrs_replay.

Scored reviews belong to one of two parts (`part`: 0 the reviews a fit learns from, 1 a validation split
held out of it): loss and gradient are summed per part, so one replay scores a fit on both. The Fisher
matrix reads predictions, never outcomes, and is summed over both parts.
"""

from __future__ import annotations

import math
import os

# Threads that finish their share of a parallel loop sleep instead of spinning (OpenMP's default):
# on a machine shared with other work (a Celery worker's, a CI runner's) the spinning thread takes
# the core its lagging sibling needs (fits took 1.3x as long with spinning, on 2 cores busy with other work).
# Read once, when numba starts OpenMP: a value already set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba
import numpy as np

from learning_pipelines.domain import fsrs

N_WEIGHTS = fsrs.N_WEIGHTS
EPS = 1e-6
UNIT_REVIEWS = 1024  # fewer: more units to sum afterwards; more: one large learner keeps fewer cores busy
# The Fisher matrix only shapes a step, which the exact loss then accepts or refuses: a unit's is
# estimated from about this many of its scored reviews (every k-th, counted k times).
FISHER_REVIEWS = 256
_S_MIN, _S_MAX, _D_MIN, _D_MAX = fsrs.S_MIN, fsrs.S_MAX, fsrs.D_MIN, fsrs.D_MAX
_LN_09 = math.log(0.9)


@numba.njit(cache=True)
def card_layout(card_of_row, day_of_row, n_cards):
    """Rows (in time order) regrouped card by card, keeping time order within a card (counting sort).

    Returns (order: the row at each position, card_start (n_cards + 1,), elapsed days at each position:
    whole days since the card's previous review, 0 at its first and never below 0, as in fsrs.next_state).
    """
    n = len(card_of_row)
    card_start = np.zeros(n_cards + 1, dtype=np.int64)
    for i in range(n):
        card_start[card_of_row[i] + 1] += 1
    for c in range(n_cards):
        card_start[c + 1] += card_start[c]
    fill = card_start[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    for i in range(n):
        c = card_of_row[i]
        order[fill[c]] = i
        fill[c] += 1
    elapsed = np.zeros(n)
    for c in range(n_cards):
        for p in range(card_start[c] + 1, card_start[c + 1]):
            elapsed[p] = max(day_of_row[order[p]] - day_of_row[order[p - 1]], 0)
    return order, card_start, elapsed


@numba.njit(cache=True)
def rank_within_learner(row, learner, counted, n_learners):
    """For each counted review (in the layout, `row` its place in time order): how many counted reviews
    of its learner came before it in time; and each learner's count."""
    position_of_row = np.empty(len(row), dtype=np.int64)
    for p in range(len(row)):
        position_of_row[row[p]] = p
    seen = np.zeros(n_learners, dtype=np.int64)
    rank = np.zeros(len(row), dtype=np.int64)
    for i in range(len(row)):
        p = position_of_row[i]
        if counted[p]:
            rank[p] = seen[learner[p]]
            seen[learner[p]] += 1
    return rank, seen


@numba.njit(cache=True)
def sum_runs(values, firsts):
    """Sums of consecutive runs of rows of `values` (n, k), run r starting at row firsts[r]."""
    sums = np.zeros((len(firsts), values.shape[1]))
    for r in range(len(firsts)):
        last = firsts[r + 1] if r + 1 < len(firsts) else len(values)
        for row in range(firsts[r], last):
            for j in range(values.shape[1]):
                sums[r, j] += values[row, j]
    return sums


def work_units(card_start: np.ndarray, card_learner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit_card_start (U + 1,), unit_learner (U,)): each learner's cards (consecutive) cut into
    runs of about UNIT_REVIEWS reviews; a learner's units are consecutive."""
    n_cards = len(card_learner)
    if not n_cards:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    sizes = np.diff(card_start)
    learner_reviews = np.bincount(card_learner, weights=sizes).astype(np.int64)
    n_units = np.maximum(1, np.round(learner_reviews / UNIT_REVIEWS)).astype(np.int64)
    learner_first_review = np.concatenate([[0], np.cumsum(learner_reviews)[:-1]])
    before = card_start[:-1] - learner_first_review[card_learner]
    unit_of_card = before * n_units[card_learner] // np.maximum(learner_reviews[card_learner], 1)
    starts = np.ones(n_cards, dtype=bool)
    starts[1:] = (card_learner[1:] != card_learner[:-1]) | (unit_of_card[1:] != unit_of_card[:-1])
    first_cards = np.flatnonzero(starts)
    return np.append(first_cards, n_cards).astype(np.int64), card_learner[first_cards].astype(np.int64)


@numba.njit(cache=True, parallel=True)
def loss_grad_fisher(elapsed, ratings, sample_weight, part, card_start, unit_card_start, unit_learner, weights, units,
                     fisher_reviews=FISHER_REVIEWS):
    """For each unit in `units`: (sum of weighted log loss per part (2,), gradient per part (2, 21), Fisher
    (21, 21)) with its learner's weights (weights[unit_learner[unit]]). A review scores when its sample weight
    is > 0, in part part[t].

    The Fisher matrix is J' C J over the unit's scored reviews, estimated from every k-th of them
    (`fisher_reviews` of them at least): their columns of sqrt(k x curvature) x dR/dw are collected
    first and multiplied once, not added review by review.
    """
    n = len(units)
    loss = np.zeros((n, 2))
    grad = np.zeros((n, 2, N_WEIGHTS))
    fisher = np.zeros((n, N_WEIGHTS, N_WEIGHTS))
    for k in numba.prange(n):
        unit = units[k]
        w = weights[unit_learner[unit]]
        first, last = card_start[unit_card_start[unit]], card_start[unit_card_start[unit + 1]]
        n_scored = 0
        for t in range(first, last):
            if sample_weight[t] > 0.0:
                n_scored += 1
        stride = max(1, n_scored // fisher_reviews)
        rows = np.zeros((N_WEIGHTS, (n_scored + stride - 1) // stride))
        js = np.empty(N_WEIGHTS)
        jd = np.empty(N_WEIGHTS)
        column = 0
        due = 0  # scored reviews to pass before the next one sampled for the Fisher matrix
        for card in range(unit_card_start[unit], unit_card_start[unit + 1]):
            column, due = _replay_card(elapsed, ratings, sample_weight, part, card_start[card], card_start[card + 1], w,
                                       js, jd, loss[k], grad[k], rows, column, due, stride)
        _gram(rows, fisher[k])
    return loss, grad, fisher


@numba.njit(cache=True, fastmath=True)  # lets the dot products vectorize
def _gram(rows, out):
    """out = rows rows' (symmetric: each pair summed once)."""
    for i in range(rows.shape[0]):
        for j in range(i + 1):
            total = 0.0
            for t in range(rows.shape[1]):
                total += rows[i, t] * rows[j, t]
            out[i, j] = total
            out[j, i] = total


@numba.njit(cache=True, parallel=True)
def unit_losses(elapsed, ratings, sample_weight, part, card_start, card_end, unit_card_start, unit_learner, weights,
                units):
    """The weighted log loss of each unit in `units` per part (n, 2) alone: no derivatives, several times cheaper.
    Card c is replayed up to card_end[c] (at most card_start[c + 1]): nothing after a card's last review of
    interest needs replaying."""
    loss = np.zeros((len(units), 2))
    for k in numba.prange(len(units)):
        unit = units[k]
        w = weights[unit_learner[unit]]
        for card in range(unit_card_start[unit], unit_card_start[unit + 1]):
            if card_end[card] > card_start[card] + 1:
                _card_loss(elapsed, ratings, sample_weight, part, card_start[card], card_end[card], w, loss[k])
    return loss


@numba.njit(cache=True)
def _review_loss(r, log_r, recalled):
    """-log of the predicted chance of what happened; log(r) is passed in, so a recall costs no logarithm."""
    if recalled:
        return -log_r if EPS < r < 1.0 - EPS else -math.log(min(max(r, EPS), 1.0 - EPS))
    return -math.log(1.0 - min(max(r, EPS), 1.0 - EPS))


@numba.njit(cache=True)
def _card_loss(elapsed, ratings, sample_weight, part, start, end, w, loss):
    first = ratings[start]
    s = w[first - 1]
    d = min(max(w[4] - math.exp(w[5] * (first - 1)) + 1.0, _D_MIN), _D_MAX)
    decay = w[20]
    factor = 0.9 ** (-1.0 / decay) - 1.0
    exp_w8 = math.exp(w[8])
    init_easy = w[4] - math.exp(3.0 * w[5]) + 1.0
    for t in range(start + 1, end):
        e = elapsed[t]
        g = ratings[t]
        log_r = -decay * math.log(1.0 + factor * e / s)
        r = math.exp(log_r)
        weight = sample_weight[t]
        if weight > 0.0:
            loss[part[t]] += weight * _review_loss(r, log_r, g > fsrs.AGAIN)
        if e > 0 and g > fsrs.AGAIN:
            hard = w[15] if g == fsrs.HARD else 1.0
            easy = w[16] if g == fsrs.EASY else 1.0
            s = s * (1.0 + exp_w8 * (11.0 - d) * math.exp(-w[9] * math.log(s)) * (math.exp(w[10] * (1.0 - r)) - 1.0)
                     * hard * easy)
        elif e > 0:
            lapsed = (w[11] * math.exp(-w[12] * math.log(d)) * (math.exp(w[13] * math.log(s + 1.0)) - 1.0)
                      * math.exp(w[14] * (1.0 - r)))
            s = min(lapsed, s * math.exp(-w[17] * w[18]))
        else:
            increase = math.exp(w[17] * (g - 3.0 + w[18]) - w[19] * math.log(s))
            if not (g >= fsrs.GOOD and increase <= 1.0):
                s = s * increase
        s = min(max(s, _S_MIN), _S_MAX)
        damped = d + (10.0 - d) / 9.0 * (-w[6] * (g - 3.0))
        d = min(max(w[7] * init_easy + (1.0 - w[7]) * damped, _D_MIN), _D_MAX)


@numba.njit(cache=True)
def _replay_card(elapsed, ratings, sample_weight, part, start, end, w, js, jd, loss, grad, rows, column, due, stride):
    """Replays one card: adds its weighted loss to `loss` (2,) and its gradient to `grad` (2, 21) by part, and to
    `rows` the column sqrt(stride x curvature) x dR/dw of every stride-th scored review of the unit (the next once
    `due` more have passed); returns (column, due) after it.

    dR/dw is dR/dS x js but for w20, which R also reads directly (dr_dw20): no array of its own.
    Difficulty depends on w4..w7 only, so jd is nonzero only there.
    """
    first = ratings[start]
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
    for t in range(start + 1, end):
        e = elapsed[t]
        g = ratings[t]
        u = 1.0 + factor * e / s
        log_u = math.log(u)
        r = math.exp(-decay * log_u)
        dr_ds = r * decay * factor * e / (u * s * s)
        dr_dw20 = r * (-log_u - decay * (e / s) * d_factor / u)
        weight = sample_weight[t]
        if weight > 0.0:
            p = min(max(r, EPS), 1.0 - EPS)
            split = part[t]
            slope = -weight / p if g > fsrs.AGAIN else weight / (1.0 - p)
            loss[split] += weight * _review_loss(r, -decay * log_u, g > fsrs.AGAIN)
            grad_scale = slope * dr_ds
            for i in range(N_WEIGHTS):
                grad[split, i] += grad_scale * js[i]
            grad[split, 20] += slope * dr_dw20
            if due == 0:
                root_curvature = math.sqrt(stride * weight / (p * (1.0 - p)))
                row_scale = root_curvature * dr_ds
                for i in range(N_WEIGHTS):
                    rows[i, column] = row_scale * js[i]
                rows[20, column] += root_curvature * dr_dw20
                column += 1
                due = stride
            due -= 1
        s = _next_stability(s, d, r, e, g, w, exp_w8, js, jd, dr_ds, dr_dw20)
        d = _next_difficulty(d, g, w, exp_3w5, jd)
    return column, due


@numba.njit(cache=True)
def _next_stability(s, d, r, e, g, w, exp_w8, js, jd, dr_ds, dr_dw20):
    """New stability; js becomes its derivative (from the old js, the old jd and dR/dw).

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
    if new_s < _S_MIN or new_s > _S_MAX:
        js[:] = 0.0
        return min(max(new_s, _S_MIN), _S_MAX)
    through_s = ds_ds + ds_dr * dr_ds  # dR/dw = dr_ds x js, plus dr_dw20 at w20
    for i in range(N_WEIGHTS):
        js[i] *= through_s
    for i in range(4, 8):
        js[i] += ds_dd * jd[i]
    js[20] += ds_dr * dr_dw20
    if i0 >= 0:
        js[i0] += v0
    if i1 >= 0:
        js[i1] += v1
    if i2 >= 0:
        js[i2] += v2
    if i3 >= 0:
        js[i3] += v3
    return new_s


@numba.njit(cache=True)
def _next_difficulty(d, g, w, exp_3w5, jd):
    """New difficulty (linear damping, mean reversion to Easy's initial difficulty); jd its derivative,
    nonzero at w4..w7 only."""
    delta = -w[6] * (g - 3.0)
    damped = d + (10.0 - d) / 9.0 * delta
    init_easy = w[4] - exp_3w5 + 1.0
    reverted = w[7] * init_easy + (1.0 - w[7]) * damped
    if not (_D_MIN < reverted < _D_MAX):
        jd[4:8] = 0.0
        return min(max(reverted, _D_MIN), _D_MAX)
    scale = (1.0 - w[7]) * (1.0 - delta / 9.0)
    for i in range(4, 8):
        jd[i] *= scale
    jd[4] += w[7]
    jd[5] += -w[7] * 3.0 * exp_3w5
    jd[6] += (1.0 - w[7]) * (10.0 - d) / 9.0 * -(g - 3.0)
    jd[7] += init_easy - damped
    return reverted
