"""What a training step asks of the run, beside the loop: the step's latents, the image
transforms every discriminator pass goes through, the conditions of a real batch, and the
precision of the passes."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .run import Run


def training_latents(run: Run) -> dict[str, torch.Tensor]:
    """One step's latents: the global batch drawn from the run's stream, this rank's rows of it."""
    latents = run.sample_latents(run.recipe.train.batch_size)
    return {name: run.ranks.share(values) for name, values in latents.items()}


def transform(run: Run, images: torch.Tensor) -> torch.Tensor:
    """``images`` through every transform (augmentation) before the discriminator sees them,
    each drawing from its own stream ``transform/<name>``."""
    for name, step in run.transforms:
        images = step(images, run.rng(f"transform/{name}"))
    return images


def real_conditions(run: Run, labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What conditioned discriminator heads see for a real batch (``ganforge_real_conditions``)."""
    merged: dict[str, torch.Tensor] = {}
    for contribution in run.host.hook.ganforge_real_conditions(run=run, labels=labels):
        merged.update(contribution)
    return merged


def autocast(run: Run) -> contextlib.AbstractContextManager:
    """The precision of the training passes: bf16 autocast with ``train.precision = "bf16"``
    (matrix products and convolutions in bf16), else nothing. The step casts every output back
    to float32 before any loss is computed from it."""
    if run.recipe.train.precision == "bf16":
        return torch.autocast(run.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
