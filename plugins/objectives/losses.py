"""Adversarial objectives on discriminator logits. ``non-saturating`` is the default."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ganforge import hookimpl


class NonSaturating:
    """Goodfellow et al.'s loss with the generator maximising log D(G(z)) (BCE on logits)."""

    def discriminator_loss(self, real_logits, fake_logits):
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def generator_loss(self, fake_logits):
        return F.softplus(-fake_logits).mean()


class Minimax(NonSaturating):
    """The original minimax objective: the generator minimises log(1 - D(G(z)))."""

    def generator_loss(self, fake_logits):
        return -F.softplus(fake_logits).mean()


class Hinge:
    """The hinge loss of SAGAN and BigGAN."""

    def discriminator_loss(self, real_logits, fake_logits):
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()

    def generator_loss(self, fake_logits):
        return -fake_logits.mean()


class LeastSquares:
    """LSGAN: squared distance of the logits to 1 (real) and 0 (fake)."""

    def discriminator_loss(self, real_logits, fake_logits):
        return 0.5 * ((real_logits - 1) ** 2).mean() + 0.5 * (fake_logits**2).mean()

    def generator_loss(self, fake_logits):
        return 0.5 * ((fake_logits - 1) ** 2).mean()


class Wasserstein:
    """The WGAN critic objective. Without a Lipschitz constraint the critic's values grow without
    bound, so a recipe must switch on a plugin that provides one."""

    requires = {"lipschitz": ("needs a Lipschitz constraint on the critic, or its values grow without bound:"
                              " add [plugins.wgan-gp] (a gradient penalty) or [plugins.spectral-norm] (with its"
                              " normalisation other than \"keep\": batch norm in D undoes the layers' bound)")}

    def discriminator_loss(self, real_logits, fake_logits):
        return fake_logits.mean() - real_logits.mean()

    def generator_loss(self, fake_logits: torch.Tensor):
        return -fake_logits.mean()


@hookimpl
def ganforge_register_losses(register):
    register("non-saturating", NonSaturating())
    register("minimax", Minimax())
    register("hinge", Hinge())
    register("least-squares", LeastSquares())
    register("wasserstein", Wasserstein())
