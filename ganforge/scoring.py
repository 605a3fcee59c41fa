"""Metrics while training: the recipe's ``[eval]`` table.

Every ``eval.every`` steps (and at the last step) the chosen metrics score the run as
``ganforge eval`` would, on ``eval.n`` images; the figures go into ``metrics.jsonl`` as
``eval/<figure>``. With ``eval.best`` set, ``checkpoints/best.pt`` holds the step whose figure was
best so far, the best value travels in every checkpoint, so a resumed run keeps comparing against
it. A new run is scored once before its first step too: a missing feature network or a misspelt
``eval.best`` then fails in seconds, not after the first ``eval.every`` steps (as Lightning's
sanity check does), and the curve starts at the untrained generator.

Scoring never changes what is trained: it draws from its own seeded generators, keeps torch's,
Python's and numpy's global generators as they were, and puts every network back in training
mode. Tests compare the weights of runs with and without it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from .checkpoint import global_rng_states, restore_global_rng_states, run_state, save_atomically
from .errors import RecipeError
from .evaluation import EvalSettings, chosen_metrics, evaluator_trainer, score

BEST = "best.pt"
# eval.direction = "auto": lower is better for these, higher for the rest.
LOWER_IS_BETTER = ("fid", "kid", "kid_std", "intra_fid")


def direction_of(figure: str, direction: str) -> str:
    if direction != "auto":
        return direction
    parts = figure.split("/")
    # "ema/fid" is an FID; "intra_fid/3" is one class's intra-class FID.
    measured = parts[-2] if len(parts) > 1 and parts[-1].isdigit() else parts[-1]
    return "min" if measured in LOWER_IS_BETTER else "max"


class TrainingEvaluation:
    """Scores ``run`` at the ``[eval]`` cadence, logs the figures and keeps ``best.pt``."""

    def __init__(self, run, outputs, progress):
        from .run import load_data

        self.run, self.outputs, self.progress = run, outputs, progress
        options = run.recipe.eval
        self.options = options
        self.entries = chosen_metrics(run.host, list(options.metrics) or None)
        self.settings_kwargs = dict(n=options.n, seed=options.seed, part=options.on,
                                    evaluator_path=Path(options.evaluator) if options.evaluator else None,
                                    inception_weights=Path(options.inception_weights) if options.inception_weights else None,
                                    train_evaluator=options.train_evaluator,
                                    trainer=evaluator_trainer(run, run.host, load_data))
        self.data = run.data if options.on == "train" else load_data(run.recipe, run.host, "holdout")
        self.direction = direction_of(options.best, options.direction) if options.best else ""
        # The best so far, from the checkpoint resumed (when it was kept by the same figure and direction).
        best = run.eval_best
        if not (best and best.get("figure") == options.best and best.get("direction") == self.direction):
            run.eval_best = None
        self._evaluator = None
        self._noted = False

    @property
    def path(self) -> Path:
        return self.outputs.checkpoints / BEST

    def due(self, step: int, last: bool) -> bool:
        return step % self.options.every == 0 or last

    def evaluate(self, step: int, meter_state: dict | None = None, candidate: bool = True) -> dict[str, float]:
        """Score the run now; log ``eval/<figure>``; with ``candidate``, keep ``best.pt`` if better."""
        run = self.run
        settings = EvalSettings(**self.settings_kwargs)
        settings._dataset = (run.recipe.data.name, tuple(run.image_shape))
        settings._evaluator = self._evaluator  # verified once, then reused
        started = time.perf_counter()
        with keeping_training_state(run):
            results = score(run, self.data, self.entries, settings, strict=bool(self.options.metrics))
        self._evaluator = settings._evaluator
        seconds = time.perf_counter() - started
        if not self._noted:  # once per process: every evaluation skips the same metrics
            self._noted = True
            for name, why in settings.skipped.items():
                self.progress.note(f"note: eval: {name} skipped: {why}")
        figure = self.options.best
        if figure and figure not in results:
            raise RecipeError(f"{figure!r} is not a figure of the chosen metrics; they give:"
                              f" {', '.join(results) or '(none)'}", source=run.recipe.source, key="eval.best")
        record = {"step": step, "images": run.images_seen, **{f"eval/{name}": value for name, value in results.items()},
                  "eval_seconds": seconds}
        kept = ""
        if figure and candidate and self.better(results[figure]):
            run.eval_best = {"figure": figure, "direction": self.direction, "value": results[figure], "step": step}
            save_atomically(run_state(run, meter_state), self.path)
            kept = f"; best {figure} so far, kept in {self.path}"
        self.outputs.log_metrics(record)
        run.host.hook.ganforge_log(run=run, step=step, record=record)
        shown = "  ".join(f"{name} {value:.4g}" for name, value in results.items())
        self.progress.note(f"eval at step {step} ({seconds:.1f} s): {shown or 'no metric applies'}{kept}")
        return results

    def better(self, value: float) -> bool:
        best = self.run.eval_best
        if best is None:
            return value == value  # a NaN is never best
        return value < best["value"] if self.direction == "min" else value > best["value"]


@contextlib.contextmanager
def keeping_training_state(run) -> Iterator[None]:
    """Scoring leaves the run as training left it: global random generators, training mode."""
    rng = (torch.get_rng_state(), global_rng_states())
    modes = [(module, module.training) for module in (run.generator, run.discriminator)]
    try:
        yield
    finally:
        torch.set_rng_state(rng[0])
        restore_global_rng_states(rng[1])
        for module, mode in modes:
            module.train(mode)
