"""Learning-rate factors by step: ``train.lr_factors``.

``lr_factors = [[0, 1.5], [625, 1.0]]`` trains every group of G's and D's optimizers at 1.5 times
its rate for the first 625 steps and at its rate after them: each pair is a number of steps done
and the factor from there on, piecewise constant, 1.0 before the first pair. The rates the factors
multiply are the optimizer groups' rates as the run built them (the recipe's ``g_lr``/``d_lr``, or
a head's own), so a resumed run, whose groups are rebuilt from the recipe, continues the schedule
exactly: the factor is a function of the step alone and needs no state in checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

from .checks import MAX_INT

MAX_FACTOR = 1000.0


def factor_at(factors: list[list], steps_done: int) -> float:
    """The factor for the step after ``steps_done`` steps."""
    current = 1.0
    for start, factor in factors:
        if steps_done < start:
            break
        current = factor
    return current


def base_rates(optimizers) -> list[list[float]]:
    """Each optimizer group's rate as built, before any factor."""
    return [[group["lr"] for group in optimizer.param_groups] for optimizer in optimizers]


def apply_factor(optimizers, rates: list[list[float]], factor: float) -> None:
    for optimizer, own in zip(optimizers, rates):
        for group, rate in zip(optimizer.param_groups, own):
            group["lr"] = rate * factor


def lr_factors_problem(value: Any) -> str | None:
    """The recipe check of ``train.lr_factors``: a complaint (the caller adds the value), or None."""
    shape = "must be pairs [steps done, factor] with the steps increasing, e.g. [[0, 1.5], [625, 1.0]]"
    last = -1
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2):
            return shape
        start, factor = pair
        if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start <= MAX_INT:
            return f"{shape}; the steps are whole numbers from 0 to {MAX_INT}"
        if start <= last:
            return f"{shape}; {start} comes after {last}"
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) \
                or not 0 < factor <= MAX_FACTOR:
            return f"{shape}; a factor is a number more than 0 and at most {MAX_FACTOR:g}"
        last = start
    return None


lr_factors_problem.accepts = "[[steps, factor], ...]"
