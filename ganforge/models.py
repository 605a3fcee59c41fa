"""What the core needs from models: a discriminator with shared features, and heads on them."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


class Discriminator(nn.Module):
    """A discriminator split into a shared trunk and an adversarial head.

    Subclasses set ``feature_dim`` and implement :meth:`features` (images to ``(B, feature_dim)``)
    and :meth:`adversarial` (features to ``(B,)`` logits). Extra heads (a Q head, a classifier)
    attach to the same features.
    """

    feature_dim: int

    def features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adversarial(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.adversarial(self.features(images))


@dataclass
class DiscriminatorOutput:
    """One discriminator pass: adversarial logits, the shared features and every head's output."""

    logits: torch.Tensor
    features: torch.Tensor
    heads: dict[str, torch.Tensor] = field(default_factory=dict)


class DiscriminatorWithHeads(nn.Module):
    """The discriminator plus the plugins' heads, trained and checkpointed as one module."""

    def __init__(self, trunk: Discriminator, heads: dict[str, nn.Module]):
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleDict(heads)

    def forward(self, images: torch.Tensor) -> DiscriminatorOutput:
        features = self.trunk.features(images)
        heads = {name: head(features) for name, head in self.heads.items()}
        return DiscriminatorOutput(self.trunk.adversarial(features), features, heads)


def init_weights_dcgan(module: nn.Module) -> None:
    """N(0, 0.02) for conv and linear weights, N(1, 0.02) for norm scales, as in DCGAN and InfoGAN."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())
