"""One real training step on a tiny batch, writing nothing: what ``ganforge check`` tries before
it calls a recipe fine, and what :mod:`ganforge.testing` gives a plugin's own tests.

The step is the loop's own (:func:`ganforge.training.train_step`: ``run.d_steps`` D updates, then
one G update) followed by ``ganforge_step_end``, so a plugin that fails there fails exactly as at
step 1 of ``ganforge run``. The hooks that write files or set up a whole training
(``train_start``, ``log``, ``samples``, ``train_end``) are not called.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .hookspecs import hookimpl
from .recipe import Recipe
from .run import Run
from .training import Meter, StepContext, train_step

#: Images the step trains on: batch norm needs more than one, and four keep any model fast.
STEP_IMAGES = 4
RECORDER = "ganforge.onestep"


@dataclass
class StepResult:
    """One step: the run after it, the contexts the loss-term hooks received (the last D step's
    when ``run.d_steps > 1``, its last micro-batch's with ``train.accumulate > 1``) and the step's
    detached logs (``loss/D/total``, each plugin term).
    The parameters' ``.grad`` hold the step's gradients: D's from its last update, G's from G's."""

    run: Run
    d_ctx: StepContext
    g_ctx: StepContext
    logs: dict[str, torch.Tensor]

    @property
    def images(self) -> int:
        """Images in each D update: every micro-batch's."""
        return self.d_ctx.real.shape[0] * self.run.recipe.train.accumulate

    def summary(self) -> str:
        """``one step on 4 images: D 1.386, G 0.693`` (``on 8 images in 2 micro-batches`` with
        ``train.accumulate = 2``)."""
        parts = self.run.recipe.train.accumulate
        return (f"one step on {self.images} images{f' in {parts} micro-batches' if parts > 1 else ''}:"
                f" D {float(self.logs['loss/D/total']):.3f}, G {float(self.logs['loss/G/total']):.3f}")


class _ContextRecorder:
    """Keeps the contexts the loss-term hooks see; adds no term."""

    d_ctx: StepContext | None = None
    g_ctx: StepContext | None = None

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        self.d_ctx = ctx
        return []

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        self.g_ctx = ctx
        return []


def try_one_step(run: Run, images: int = STEP_IMAGES) -> StepResult:
    """Train ``run`` for one step on ``min(train.batch_size, images)`` images (per micro-batch, with
    ``train.accumulate``), as the loop does.

    The run trains on that batch from now on (its recipe says so), so it is spent for a real
    training: ``ganforge check`` builds one only to try it. A non-finite loss is the error the
    loop would raise at its first log."""
    size = min(run.recipe.train.batch_size, images)
    values = run.recipe.to_dict()
    values["train"]["batch_size"] = size  # the latents are drawn at the recipe's batch size
    run.recipe = Recipe(values, run.recipe.source)
    run.batcher.batch_size = size * run.recipe.train.accumulate  # train.accumulate micro-batches of that size
    recorder = _ContextRecorder()
    run.host.pm.register(recorder, name=RECORDER)
    try:
        logs = train_step(run)
    finally:
        run.host.pm.unregister(recorder)
    run.step += 1
    run.host.hook.ganforge_step_end(run=run, step=run.step, logs=logs)
    meter = Meter()
    meter.add(logs)
    meter.means(run.step)
    return StepResult(run, recorder.d_ctx, recorder.g_ctx, logs)
