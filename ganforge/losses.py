"""Loss terms and the adversarial-objective interface."""

from __future__ import annotations

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
    """The GAN variant's objective, on the discriminator's logits."""

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor: ...

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor: ...
