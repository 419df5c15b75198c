"""Scores of probabilistic predictions: recall models (FSRS) and rankings (NCF)."""

from __future__ import annotations

import numpy as np
import pandas as pd

_EPS = 1e-7


def review_log_losses(y, p) -> np.ndarray:
    """Each prediction's log loss (what log_loss averages)."""
    y, p = np.asarray(y, dtype=float), np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def log_loss(y, p, weights=None) -> float:
    return float(np.average(review_log_losses(y, p), weights=weights))


def brier(y, p) -> float:
    return float(np.mean((np.asarray(p, dtype=float) - np.asarray(y, dtype=float)) ** 2))


def _probability_bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((p * n_bins).astype(int), n_bins - 1)


def expected_calibration_error(y, p, n_bins: int = 10) -> float:
    """Count-weighted |mean predicted - observed| over equal-width probability bins."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    bins = _probability_bins(p, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, p, n_bins) - np.bincount(bins, y, n_bins))
    return float(gap.sum() / max(counts.sum(), 1))


def calibration_table(y, p, n_bins: int = 10) -> pd.DataFrame:
    """A reliability diagram as a table: per equal-width bin of the predicted probability, its range, the
    number of predictions, their mean and the observed share (NaN for an empty bin)."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    bins = _probability_bins(p, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted, observed = np.bincount(bins, p, n_bins) / counts, np.bincount(bins, y, n_bins) / counts
    edges = np.arange(n_bins + 1) / n_bins
    return pd.DataFrame({"predicted_range": [f"{low:.1f}-{high:.1f}" for low, high in zip(edges, edges[1:])],
                         "n": counts, "mean_predicted": predicted, "observed": observed})


def _log_bucket(x: np.ndarray, base: float, scale: float, digits: int) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.round(scale * np.power(base, np.floor(np.log(x) / np.log(base))), digits)


def rmse_bins(y, p, elapsed_days, review_number, lapses) -> float:
    """RMSE(bins) as srs-benchmark computes it: reviews binned by interval, review count and
    lapses (log-spaced buckets), then the count-weighted RMSE of mean predicted vs observed recall."""
    lapses = np.asarray(lapses)
    frame = pd.DataFrame({
        "delta_t": _log_bucket(np.asarray(elapsed_days, dtype=float), 3.62, 2.48, 2),
        "i": _log_bucket(np.asarray(review_number, dtype=float), 1.89, 1.99, 0),
        "lapse": np.where(lapses != 0, _log_bucket(np.maximum(lapses, 1).astype(float), 1.73, 1.65, 0), 0),
        "y": np.asarray(y, dtype=float), "p": np.asarray(p, dtype=float),
    })
    grouped = frame.groupby(["delta_t", "i", "lapse"]).agg(y=("y", "mean"), p=("p", "mean"), n=("y", "size"))
    return float(np.sqrt(np.average((grouped["y"] - grouped["p"]) ** 2, weights=grouped["n"])))


def auc(y, p) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN with one class only."""
    y, p = np.asarray(y, dtype=bool), np.asarray(p, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = pd.Series(p).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def recall_metrics(predictions: pd.DataFrame) -> dict[str, float]:
    """Logloss, Brier, ECE, RMSE(bins), AUC over reviews at least a day after the previous one.

    predictions: recalled (0/1), retrievability, elapsed_days, review_number, lapses_before.
    """
    scored = predictions.loc[predictions["elapsed_days"] > 0]
    y, p = scored["recalled"].to_numpy(), scored["retrievability"].to_numpy()
    if not len(scored):
        return {"n_reviews": 0}
    return {
        "logloss": log_loss(y, p),
        "brier": brier(y, p),
        "ece": expected_calibration_error(y, p),
        "rmse_bins": rmse_bins(y, p, scored["elapsed_days"], scored["review_number"], scored["lapses_before"]),
        "auc": auc(y, p),
        "n_reviews": int(len(scored)),
    }


def held_out_rank(scores: np.ndarray) -> np.ndarray:
    """scores: (n_users, n_candidates), the held-out item in column 0. Per user, the items ranked above it."""
    return (scores[:, 1:] > scores[:, :1]).sum(axis=1)


def hit_rate_and_ndcg(scores: np.ndarray, k: int = 10) -> tuple[float, float]:
    """HR@k and NDCG@k of a sampled-candidates ranking. scores: (n_users, n_candidates), the held-out item in
    column 0."""
    rank = held_out_rank(scores)
    hits = rank < k
    return float(hits.mean()), float(np.where(hits, 1.0 / np.log2(rank + 2), 0.0).mean())


def hit_rate_gap(scores: np.ndarray, baseline_scores: np.ndarray, k: int = 10) -> tuple[float, float]:
    """HR@k of `scores` minus the baseline's, both ranking the same users' held-out items, and the half-width of
    that gap's 95 % interval (normal approximation over the per-user differences in hits): with a thousand users
    a gap of a point or two is within it, so "above" means little unless the gap is wider."""
    difference = (held_out_rank(scores) < k).astype(float) - (held_out_rank(baseline_scores) < k)
    return float(difference.mean()), float(1.96 * difference.std(ddof=1) / np.sqrt(len(difference)))
