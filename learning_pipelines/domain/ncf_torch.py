"""torch as the NCF modules load it: import `torch` and `nn` from here, never from torch directly, so that the
process's OpenMP settings below are in place before torch starts OpenMP, whichever NCF module loads first."""

import os

# Threads that finish their share of a parallel loop sleep instead of spinning, as fsrs_kernel's numba threads do:
# on cores shared with other work a spinning thread takes the core its lagging sibling needs (ncf_model's CPU time
# with and without: BENCHMARKS.md, "NCF: one-off measurements"). Read when torch loads OpenMP: a value already set
# wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from torch import nn

__all__ = ["nn", "torch"]
