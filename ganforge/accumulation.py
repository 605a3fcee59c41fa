"""Gradient accumulation, ``train.accumulate = k``: every D and G update made from k micro-batches.

An update's batch is ``k x train.batch_size`` images and latents, drawn as one batch of that size
would be (one slice of the data order, one draw of each generator input) and cut into k
micro-batches of ``train.batch_size``. Each micro-batch has its own passes, its own
:class:`~ganforge.training.StepContext` and its own backward pass, with its objective scaled by
``1 / k``: the gradients the optimizer steps on are then the mean of the micro-batches' mean
gradients, which is the mean gradient of the whole batch wherever each term is a mean over its
batch. With ``k = 1`` nothing is cut or scaled: the step is what it always was.

This is how BigGAN's training loop accumulates (``num_D_accumulations``, ``num_G_accumulations``):
its data loader hands over ``batch_size * num_D_steps * num_D_accumulations`` images that are split
into chunks of ``batch_size``, and each chunk's loss is divided by the number of accumulations
before its backward pass (google/lecam-gan@f9af9485eda4637b25e694c142ce8e6992eb7243,
``third_party/run_train.py``, ``D_batch_size``; ``third_party/train_fns.py``,
``GAN_training_function``). Unlike it, the latents are drawn for the whole update at once and the G
update reuses the last D update's latents, as a step without accumulation does.

Under DistributedDataParallel the micro-batches before the last run under ``no_sync()``: each rank
sums their gradients locally and DDP averages them over the ranks once per update, after the last.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .run import Run

MicroBatch = tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]  # real, labels, latents


def accumulating(run: Run) -> bool:
    """Whether each update is made from several micro-batches."""
    return run.recipe.train.accumulate > 1


def micro_batches(run: Run, real: torch.Tensor, labels: dict[str, torch.Tensor],
                  latents: dict[str, torch.Tensor]) -> Iterator[tuple[MicroBatch, bool]]:
    """An update's real images, their labels and its latents cut into ``train.accumulate`` equal
    micro-batches, each with whether it is the last. On several ranks each holds this rank's rows
    of each micro-batch already (:meth:`ganforge.distributed.Ranks.share`)."""
    parts = run.recipe.train.accumulate
    reals = real.chunk(parts)
    label_parts = {name: values.chunk(parts) for name, values in labels.items()}
    latent_parts = {name: values.chunk(parts) for name, values in latents.items()}
    for index, images in enumerate(reals):
        yield ((images, {name: values[index] for name, values in label_parts.items()},
                {name: values[index] for name, values in latent_parts.items()}), index == parts - 1)


def synced_after(run: Run, module: nn.Module, last: bool) -> contextlib.AbstractContextManager:
    """Around a micro-batch's passes and backward pass: on several ranks, DDP's ``no_sync()`` for
    every micro-batch but the last, whose backward pass averages the summed gradients over the
    ranks; a plain context elsewhere."""
    if run.ranks.distributed and not last:
        return module.no_sync()
    return contextlib.nullcontext()


def backward(run: Run, objective: torch.Tensor, parameters: list[torch.Tensor]) -> None:
    """One micro-batch's gradients added to ``parameters``' ``.grad``: its objective scaled by
    ``1 / train.accumulate`` so that the sum over the update's micro-batches is the whole batch's
    mean. The objective is float32 (:func:`ganforge.training.objective`), so under bf16 autocast
    the scale costs no precision and no gradient scaler is needed: bf16 keeps float32's exponent
    range, so small gradients do not underflow."""
    parts = run.recipe.train.accumulate
    (objective / parts if parts > 1 else objective).backward(inputs=parameters)
