"""NCF on MovieLens 100k under the NCF paper's leave-one-out protocol, beside popularity and implicit's
ALS (64 factors) in the same run; and the time to score one learner against 1,000 resources.

    .venv/bin/python bench/ncf_movielens.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit's advice: its ALS threads itself

import sys
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import publish  # noqa: E402

from learning_pipelines.domain.ncf import (NcfConfig, NeuMF, hit_rate_and_ndcg, leave_one_out,  # noqa: E402
                                           popularity_scores, score_candidates, train_neumf)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-100k" / "u.data"


ALS_GRID = [(regularization, alpha) for regularization in (0.01, 0.1) for alpha in (1.0, 5.0, 10.0)]


def als_scores(split, regularization: float, alpha: float, factors: int = 64, seed: int = 7):
    import implicit
    import scipy.sparse as sparse

    matrix = sparse.csr_matrix((np.ones(len(split.train)), (split.train["user"], split.train["item"])),
                               shape=(split.n_users, split.n_items))
    model = implicit.als.AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                                 iterations=15, random_state=seed)
    started = time.perf_counter()
    model.fit(matrix, show_progress=False)
    seconds = time.perf_counter() - started
    users = np.asarray(model.user_factors)
    items = np.asarray(model.item_factors)
    return np.einsum("uf,ucf->uc", users, items[split.candidates]), seconds


def best_als(split):
    """The reference at its best: a small grid over regularization and confidence alpha, best HR@10 kept
    (tuned on the test protocol itself, so generous to ALS)."""
    results = []
    for regularization, alpha in ALS_GRID:
        scores, seconds = als_scores(split, regularization, alpha)
        results.append((*hit_rate_and_ndcg(scores), seconds, regularization, alpha))
    return max(results)


def single_learner_latency(model: NeuMF, n_items: int = 1000, repeats: int = 200) -> float:
    """Median milliseconds to score one learner against `n_items` resources."""
    model.eval()
    items = torch.arange(n_items) % model.gmf_item.num_embeddings
    user = torch.zeros(n_items, dtype=torch.long)
    timings = []
    with torch.no_grad():
        for _ in range(repeats):
            started = time.perf_counter()
            model(user, items)
            timings.append(time.perf_counter() - started)
    return float(np.median(timings) * 1000)


def main() -> None:
    if not DATA.exists():
        sys.exit(f"{DATA} not found: this benchmark needs ../shared/data")
    ratings = pd.read_csv(DATA, sep="\t", names=["user", "item", "rating", "time"])
    split = leave_one_out(ratings)
    config = NcfConfig()
    pop_hr, pop_ndcg = hit_rate_and_ndcg(popularity_scores(split))
    als_hr, als_ndcg, als_seconds, als_regularization, als_alpha = best_als(split)
    started = time.perf_counter()
    model = train_neumf(split.train, split.n_users, split.n_items, config)
    ours_seconds = time.perf_counter() - started
    ours_hr, ours_ndcg = hit_rate_and_ndcg(score_candidates(model, split.candidates))
    latency = single_learner_latency(model)
    lines = [
        f"`bench/ncf_movielens.py`: MovieLens 100k ({split.n_users} users, {split.n_items} items), every rating an "
        "implicit positive, each user's latest item held out and ranked among 99 unseen items; "
        f"torch {torch.__version__} on {torch.get_num_threads()} threads, seed {config.seed}.",
        "",
        "| model | HR@10 | NDCG@10 | training seconds |",
        "|---|---:|---:|---:|",
        f"| popularity | {pop_hr:.3f} | {pop_ndcg:.3f} | — |",
        f"| implicit ALS, 64 factors (best of {len(ALS_GRID)}: regularization {als_regularization}, alpha {als_alpha:g}) "
        f"| {als_hr:.3f} | {als_ndcg:.3f} | {als_seconds:.1f} |",
        f"| ours: NeuMF (GMF {config.gmf_factors} + MLP {'-'.join(map(str, config.mlp_layers))}), "
        f"{config.epochs} epochs | {ours_hr:.3f} | {ours_ndcg:.3f} | {ours_seconds:.1f} |",
        "",
        f"Goal: HR@10 >= 0.59 and >= ALS's, training <= 120 s: **{ours_hr:.3f}** vs ALS {als_hr:.3f} in "
        f"{ours_seconds:.0f} s. Scoring one learner against 1,000 resources: **{latency:.2f} ms** (median of 200; "
        "goal < 5 ms).",
    ]
    publish("NCF on MovieLens 100k", lines)


if __name__ == "__main__":
    main()
