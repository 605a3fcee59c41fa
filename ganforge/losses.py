"""Loss terms and the adversarial-objective interface."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class LossTerm:
    """A named, weighted term a plugin adds to one network's objective.

    The core adds ``weight * value`` to the objective and logs ``value`` (unweighted) under the
    term's name, so curves stay comparable when a weight changes.
    """

    name: str
    value: torch.Tensor
    weight: float = 1.0


class AdversarialLoss(Protocol):
    """The GAN variant's objective, on the discriminator's logits.

    Each method may name any of ``real_logits``, ``fake_logits`` and ``ctx`` (the
    :class:`ganforge.training.StepContext`) and receives those (see :func:`adversarial_loss`)."""

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor: ...

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor: ...


@functools.lru_cache(maxsize=256)
def _wanted(method) -> frozenset[str]:
    return frozenset(inspect.signature(method).parameters)


def adversarial_loss(loss: AdversarialLoss, ctx) -> torch.Tensor:
    """The phase's adversarial loss, each method given the arguments it names.

    ``discriminator_loss`` takes any of ``real_logits``, ``fake_logits``, ``ctx``;
    ``generator_loss`` the same, so a relativistic objective that names ``real_logits`` in its
    generator loss gets D's output on the real batch (computed for it), and a penalty that needs the
    images reads them from ``ctx``. The loop has no special case for either.
    """
    method = loss.discriminator_loss if ctx.phase == "D" else loss.generator_loss
    wanted = _wanted(method)
    arguments = {}
    if "real_logits" in wanted:
        arguments["real_logits"] = ctx.d_real.logits
    if "fake_logits" in wanted:
        arguments["fake_logits"] = ctx.d_fake.logits
    if "ctx" in wanted:
        arguments["ctx"] = ctx
    return method(**arguments)
