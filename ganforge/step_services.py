"""What a training step asks of the run, beside the loop: the step's latents, the image
transforms every discriminator pass goes through, the conditions of a real batch, the precision
of the passes, and the discriminator's one pass over the D phase's batches."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch

from .errors import PluginError
from .models import DiscriminatorOutput, batch_norm_per_chunk, float32, frozen_batch_statistics, split_output

if TYPE_CHECKING:
    from .run import Run


def training_latents(run: Run) -> dict[str, torch.Tensor]:
    """One update's latents: the global batch (``train.accumulate`` micro-batches of
    ``train.batch_size``) drawn from the run's stream at once, this rank's rows of each micro-batch."""
    parts = run.recipe.train.accumulate
    latents = run.sample_latents(run.recipe.train.batch_size * parts)
    return {name: run.ranks.share(values, parts) for name, values in latents.items()}


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


def discriminator_passes(run: Run, batches: list[tuple[torch.Tensor, dict[str, torch.Tensor], bool]]
                         ) -> list[DiscriminatorOutput]:
    """D's outputs on several batches, each ``(images, conditions, moves_statistics)``, through the
    run's transforms (each batch drawn in turn, as separate passes would draw).

    They share one pass: one matrix product per layer instead of one per batch (the D phase's
    real, fake and view passes took 70 ms together against 81 ms apart on the InfoGAN MNIST
    networks, docs/performance.md), with batch norm kept per batch by :func:`batch_norm_per_chunk`,
    so each batch is normalised as if alone and only those marked move the running statistics.
    Heads see the conditions every batch has."""
    seen = [transform(run, images) for images, _, _ in batches]
    if run.recipe.train.compile:
        # Compiled networks take one batch at a time: per-batch batch norm would recompile every step.
        outputs = []
        for images, (_, conditions, moves) in zip(seen, batches):
            with contextlib.nullcontext() if moves else frozen_batch_statistics(run.discriminator), autocast(run):
                outputs.append(float32(run.training_discriminator(images, conditions)))
        return outputs
    shared = set.intersection(*(set(conditions) for _, conditions, _ in batches))
    conditions = {name: torch.cat([batch[1][name] for batch in batches]) for name in sorted(shared)}
    sizes = [len(images) for images in seen]
    with batch_norm_per_chunk(run.discriminator, sizes, [moves for *_, moves in batches]), autocast(run):
        output = run.training_discriminator(torch.cat(seen), conditions)
    return split_output(float32(output), sizes)


def named_views(contributions: list, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """The views the plugins contributed, by name, in the order they came, and the info of those
    given as ``(name, images, info)``; a name given twice is the plugins' fault."""
    views = [tuple(view) for contribution in contributions for view in contribution]
    for view in views:
        if len(view) not in (2, 3):
            raise PluginError(f"{kind} must be (name, images) or (name, images, info), got {len(view)} items")
    names = [name for name, *_ in views]
    if len(set(names)) != len(names):
        raise PluginError(f"two plugins contribute {kind} of one name: {sorted(names)}")
    return {view[0]: view[1] for view in views}, {view[0]: view[2] for view in views if len(view) == 3}
