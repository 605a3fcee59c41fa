"""CPU threads: how many a run uses, and how idle ones wait.

PyTorch's CPU kernels run on OpenMP threads, one per core by default. A waiting OpenMP thread
spins for a while before it sleeps (libgomp's ``GOMP_SPINCOUNT``, 300,000 by default). Alone on a
machine that costs nothing; beside a second run it burns the cores the other run needs. On 2 cores,
two InfoGAN runs side by side each kept 18% of their solo speed with that default, 54% with a spin
count of 1,000, which costs a run alone 5% (docs/performance.md). So the ``ganforge`` command sets
``GOMP_SPINCOUNT=1000`` unless the user has set the spin count or ``OMP_WAIT_POLICY``; it must do
so before torch is imported, since OpenMP reads it once, when it loads.
"""

from __future__ import annotations

import os
import sys

SPIN_COUNT_ENV = "GOMP_SPINCOUNT"
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
DEFAULT_SPIN_COUNT = "1000"


def prefer_short_spins() -> None:
    """Set ganforge's OpenMP spin count, unless the user chose one or torch is already loaded."""
    if "torch" in sys.modules or SPIN_COUNT_ENV in os.environ or WAIT_POLICY_ENV in os.environ:
        return
    os.environ[SPIN_COUNT_ENV] = DEFAULT_SPIN_COUNT


def describe_threads(recipe_threads: int) -> str:
    """``2 CPU threads (torch's default for 2 cores), idle threads spin 1000 (GOMP_SPINCOUNT)``."""
    import torch

    count = torch.get_num_threads()
    if recipe_threads:
        chosen = "train.threads"
    elif "OMP_NUM_THREADS" in os.environ:
        chosen = "OMP_NUM_THREADS"  # torchrun sets 1 for each process unless told otherwise
    else:
        chosen = f"torch's default for {os.cpu_count()} cores"
    if WAIT_POLICY_ENV in os.environ:
        waiting = f"{WAIT_POLICY_ENV}={os.environ[WAIT_POLICY_ENV]}"
    elif SPIN_COUNT_ENV in os.environ:
        waiting = f"idle threads spin {os.environ[SPIN_COUNT_ENV]} ({SPIN_COUNT_ENV})"
    else:
        waiting = "OpenMP's default waits"
    return f"{count} CPU thread{'s' if count != 1 else ''} ({chosen}), {waiting}"
