"""What a training step costs against what the machine can do: FLOP per image from torch's FLOP
counter (matrix products and convolutions, forward and backward, over one eager step), and the
machine's own ceiling, a large matrix product timed in the same benchmark run. Speed times FLOP
per image over the ceiling is how close a setup comes to the limit."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ganforge.testing import build_run
from ganforge.training import train_step
from plain_loop import synchronize


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048,
                seconds: float = 1.0) -> float:
    """TFLOP/s of a size x size matrix product repeated for about ``seconds``: the ceiling for the
    dense layers these networks are made of."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    synchronize(device)
    started, repeats = time.perf_counter(), 0
    while repeats == 0 or time.perf_counter() - started < seconds:
        for _ in range(4):
            a @ b
        repeats += 4
        synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def step_flop(step, batch_size: int) -> float:
    """FLOP per image of one call of ``step`` (after one untimed call: lazy set-up is not a step)."""
    step()
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / batch_size


def recipe_flop_per_image(recipe: Path, overrides: list[str]) -> float:
    """FLOP per image of one ganforge training step of ``recipe`` with ``overrides``."""
    run = build_run(recipe, overrides=overrides)
    return step_flop(lambda: train_step(run), run.recipe.train.batch_size)
