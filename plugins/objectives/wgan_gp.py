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
from ganforge.errors import RecipeError
from ganforge.losses import LossTerm

from .normalisation import checked_normalisation, per_sample_discriminator
from .penalties import gradient_norms, refuse_compiled_networks

DEFAULTS = {"weight": 10.0, "critic_steps": 5, "normalisation": "layer"}
STREAM = "wgan-gp/interpolation"


class WGANGP:
    provides = ("lipschitz",)

    def __init__(self, settings: dict):
        if settings["weight"] <= 0:
            raise RecipeError(f"must be greater than 0, got {settings['weight']}", key="weight")
        if not 1 <= settings["critic_steps"] <= 100:
            raise RecipeError(f"must be from 1 to 100, got {settings['critic_steps']}", key="critic_steps")
        self.weight = settings["weight"]
        self.critic_steps = settings["critic_steps"]
        self.normalisation = checked_normalisation(settings)

    @hookimpl
    def ganforge_models_built(self, run):
        if run.recipe.loss.name != "wasserstein":
            raise RecipeError(f"wgan-gp trains a Wasserstein critic: set loss.name = \"wasserstein\""
                              f" (got {run.recipe.loss.name!r})", key="loss.name")
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


@hookimpl
def ganforge_register_run_plugins(register):
    register("wgan-gp", WGANGP, defaults=DEFAULTS)
