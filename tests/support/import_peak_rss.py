"""Write a CSV of generated reviews, or import one in a fresh process and report its peak memory.

    python tests/support/import_peak_rss.py write FILE ROWS [--learners N] [--first-id N]
    LEARNING_PIPELINES_DATABASE_URL=URL python tests/support/import_peak_rss.py import FILE [--chunk-rows N]

`import` prints one JSON line: the process's peak RSS before the import (the libraries loaded and a
one-row file imported, so every import path is warm) and after it, in MiB, the seconds the import
took and its counts. Used by tests/assets/test_import_chunks.py and bench/import.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HEADER = "review_id,user_id,card_id,review_rating,review_time,review_duration\n"
WRITE_BLOCK_ROWS = 500_000
START = np.datetime64("2025-01-01T00:00:00", "s")
SPAN_SECONDS = 600 * 86400  # 20 months of reviews


def write_reviews(path: Path, rows: int, learners: int = 1000, first_id: int = 1, seed: int = 0) -> None:
    """`rows` good reviews with ids from `first_id`, by `learners` learners over 20 months, in time
    order with ids increasing with time, as a review log is (Anki's revlog ids are answer times)."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as file:
        file.write(HEADER)
        for start in range(0, rows, WRITE_BLOCK_ROWS):
            n = min(WRITE_BLOCK_ROWS, rows - start)
            seconds = np.arange(start, start + n, dtype=np.int64) * SPAN_SECONDS // max(rows, 1)
            block = pd.DataFrame({
                "review_id": np.arange(first_id + start, first_id + start + n),
                "user_id": rng.integers(1, learners + 1, n),
                "card_id": rng.integers(1, 501, n),
                "review_rating": rng.choice([1, 2, 3, 4], n, p=[0.15, 0.05, 0.7, 0.1]),
                "review_time": np.datetime_as_string(START + seconds.astype("timedelta64[s]")),
                "review_duration": rng.integers(1000, 20000, n),
            })
            block["review_time"] += "+00:00"
            block.to_csv(file, header=False, index=False)


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: that one starts from the
    parent's peak when the process was forked from it, and keeps it across exec."""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


def measure_import(path: Path, chunk_rows: int | None) -> dict:
    from learning_pipelines.db.engine import get_engine
    from learning_pipelines.ingest.importer import import_review_file

    engine = get_engine()  # the environment's warehouse: a URL may hold a password, so never argv
    options = {} if chunk_rows is None else {"chunk_rows": chunk_rows}
    with tempfile.TemporaryDirectory() as folder:
        warm_up = Path(folder) / "one.csv"
        write_reviews(warm_up, 1, learners=1, first_id=10**15)
        import_review_file(engine, warm_up, register_unknown=True, **options)
    before = peak_rss_mib()
    started = time.perf_counter()
    summary = import_review_file(engine, path, register_unknown=True, **options)
    seconds = time.perf_counter() - started
    engine.dispose()
    return {"peak_before_mib": before, "peak_mib": peak_rss_mib(), "seconds": seconds,
            "n_rows": summary.n_rows, "n_loaded": summary.n_loaded, "n_rejected": summary.n_rejected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write")
    write.add_argument("file", type=Path)
    write.add_argument("rows", type=int)
    write.add_argument("--learners", type=int, default=1000)
    write.add_argument("--first-id", type=int, default=1)
    measure = commands.add_parser("import")
    measure.add_argument("file", type=Path)
    measure.add_argument("--chunk-rows", type=int)
    args = parser.parse_args()
    if args.command == "write":
        write_reviews(args.file, args.rows, args.learners, args.first_id)
    else:
        json.dump(measure_import(args.file, args.chunk_rows), sys.stdout)
        print()


if __name__ == "__main__":
    main()
