"""``[plugins.wgan-gp]``: the Wasserstein critic with a gradient penalty (Gulrajani et al. 2017).

The penalty pulls the norm of the critic's gradient at points between real and generated images
towards 1: one interpolation weight per sample, drawn from the plugin's own stream, the norm taken
over all non-batch dimensions, weight 10. The critic is updated ``critic_steps`` (5) times per
generator step, asked of the core through ``ganforge_discriminator_steps``. Batch norm makes each
sample's output depend on the batch, which the per-sample penalty assumes it does not, so the
plugin replaces the critic's batch norms by layer norms (or instance norms, or none) and says so in
``ganforge check``. A conditional critic scores each mix with the real image's condition, as
StudioGAN does (``src/utils/losses.py``, ``cal_grad_penalty``, given the real labels). It trains the
``wasserstein`` objective and nothing else.
"""

from __future__ import annotations

import torch

from ganforge import hookimpl
from ganforge.checks import between, one_of, positive
from ganforge.losses import LossTerm
from ganforge.plugin_spec import LIPSCHITZ, Option, PluginSpec

from .normalisation import NORMALISATIONS, per_sample_discriminator
from .penalties import gradient_norms, refuse_compiled_networks

STREAM = "wgan-gp/interpolation"


class WGANGP:
    """The gradient penalty, its critic steps and the critic's normalisation."""

    def __init__(self, settings: dict):
        self.weight = settings["weight"]
        self.critic_steps = settings["critic_steps"]
        self.normalisation = settings["normalisation"]

    @hookimpl
    def ganforge_models_built(self, run):
        refuse_compiled_networks(run, "wgan-gp")
        per_sample_discriminator(run, self.normalisation, "wgan-gp", "the gradient penalty is per sample")

    @hookimpl
    def ganforge_discriminator_steps(self, run):
        return self.critic_steps

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        real, fake = ctx.real, ctx.fake
        rng = ctx.run.rng(STREAM)
        mix = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), generator=rng, device=rng.device).to(real)
        between = (mix * real + (1 - mix) * fake).requires_grad_(True)
        # The real images' conditions, as StudioGAN's cal_grad_penalty (src/utils/losses.py) is
        # called with the real labels: each mix is scored as its real end's class.
        norms = gradient_norms(ctx.discriminate(between, ctx.conditions).logits, between)
        ctx.log("critic/gradient_norm", norms.mean())
        return [LossTerm("gradient_penalty", ((norms - 1) ** 2).mean(), self.weight)]


SPEC = PluginSpec(
    "wgan-gp", WGANGP, doc="the Wasserstein critic's gradient penalty (Gulrajani et al. 2017)",
    options={
        "weight": Option(10.0, "the penalty's weight, lambda", positive),
        "critic_steps": Option(5, "critic updates per generator update (train.d_steps overrides)", between(1, 100)),
        "normalisation": Option("layer", '"layer", "instance" or "none": what replaces D\'s batch norms (a per-sample penalty needs per-sample outputs)', one_of(*NORMALISATIONS)),
    },
    provides=frozenset({LIPSCHITZ}), losses=("wasserstein",))
DEFAULTS = SPEC.defaults()


@hookimpl
def ganforge_register_run_plugins(register):
    register(SPEC)
