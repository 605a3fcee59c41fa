"""``[plugins.lecam]``: LeCam regularisation of the discriminator (Tseng et al. 2021), for GANs
trained on little data.

D's outputs are held near moving averages of its own past outputs on the other kind of image:
``mean(relu(D(x) - ema_fake)^2) + mean(relu(ema_real - D(G(z)))^2)``, with weight ``weight``
(0.3 in the reference's BigGAN CIFAR scripts, ``--LC 0.3``). The averages move by ``decay`` (0.99)
per D step, from the batch's mean outputs before the term is computed; before step ``start``
(1,000) they are the batch's means themselves, and the term joins D's objective only after it, so
the averages never start from an arbitrary value. This is google/lecam-gan's PyTorch code
(``biggan_cifar/losses.py``, ``lecam_reg``; ``biggan_cifar/train.py``, ``ema_losses(start_itr=1000)``;
``third_party/train_fns.py``, the term only once ``itr > start_itr``). There the averages are
updated inside the hinge objective; here they are updated for any objective. The outputs are the
logits D's objective sees (a projection head's term included). The averages are kept in checkpoints.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ganforge import hookimpl
from ganforge.checks import non_negative, open_interval
from ganforge.losses import LossTerm
from ganforge.plugin_spec import Option, PluginSpec


class LeCam:
    """The two moving averages and the term."""

    def __init__(self, settings: dict):
        self.weight, self.decay, self.start = settings["weight"], settings["decay"], settings["start"]
        self.ema_real: torch.Tensor | None = None  # on the run's device, made at the first D step
        self.ema_fake: torch.Tensor | None = None

    def track(self, step: int, real: torch.Tensor, fake: torch.Tensor) -> None:
        """Move the averages towards this batch's mean outputs (copy them before ``start``)."""
        decay = 0.0 if step < self.start or self.ema_real is None else self.decay
        real, fake = real.detach().mean(), fake.detach().mean()
        self.ema_real = real if self.ema_real is None else self.ema_real * decay + real * (1 - decay)
        self.ema_fake = fake if self.ema_fake is None else self.ema_fake * decay + fake * (1 - decay)

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        real, fake = ctx.d_real.logits, ctx.d_fake.logits
        self.track(ctx.step, real, fake)
        if ctx.step <= self.start:
            return []
        term = F.relu(real - self.ema_fake).pow(2).mean() + F.relu(self.ema_real - fake).pow(2).mean()
        return [LossTerm("lecam", term, self.weight)]

    def state_dict(self) -> dict:
        return {"ema_real": self.ema_real, "ema_fake": self.ema_fake}

    def load_state_dict(self, state: dict) -> None:
        self.ema_real, self.ema_fake = state["ema_real"], state["ema_fake"]


SPEC = PluginSpec(
    "lecam", LeCam, doc="LeCam regularisation: D's outputs held near moving averages of its past outputs (Tseng et al. 2021)",
    options={
        "weight": Option(0.3, "the term's weight, lambda", non_negative),
        "decay": Option(0.99, "how much of each moving average a D step keeps", open_interval(0, 1)),
        "start": Option(1000, "steps before which the averages are the batch's means and the term is off",
                        non_negative),
    },
    stateful=True)
DEFAULTS = SPEC.defaults()


@hookimpl
def ganforge_register_run_plugins(register):
    register(SPEC)
