"""``[plugins.wgan-gp]``: the Wasserstein critic with a gradient penalty (Gulrajani et al. 2017).

The penalty pulls the norm of the critic's gradient at points between real and generated images
towards 1: one interpolation weight per sample, drawn from the plugin's own stream, the norm taken
over all non-batch dimensions, weight 10. The critic is updated ``critic_steps`` (5) times per
generator step, asked of the core through ``ganforge_discriminator_steps``. Batch norm makes each
sample's output depend on the batch, which the per-sample penalty assumes it does not, so the
plugin replaces the critic's batch norms by layer norms (or instance norms, or none) and says so in
``ganforge check``. It trains the ``wasserstein`` objective and nothing else.
"""

from __future__ import annotations

import torch

from ganforge import hookimpl
from ganforge.errors import RecipeError
from ganforge.losses import LossTerm

from .normalisation import NORMALISATIONS, replace_batch_norms
from .penalties import gradient_norms

DEFAULTS = {"weight": 10.0, "critic_steps": 5, "normalisation": "layer"}
STREAM = "wgan-gp/interpolation"


class WGANGP:
    provides = ("lipschitz",)

    def __init__(self, settings: dict):
        if settings["weight"] <= 0:
            raise RecipeError(f"must be greater than 0, got {settings['weight']}", key="weight")
        if not 1 <= settings["critic_steps"] <= 100:
            raise RecipeError(f"must be from 1 to 100, got {settings['critic_steps']}", key="critic_steps")
        if settings["normalisation"] not in NORMALISATIONS:
            raise RecipeError(f"must be one of {', '.join(map(repr, NORMALISATIONS))}, got {settings['normalisation']!r}",
                              key="normalisation")
        self.weight = settings["weight"]
        self.critic_steps = settings["critic_steps"]
        self.normalisation = settings["normalisation"]

    @hookimpl
    def ganforge_models_built(self, run):
        if run.recipe.loss.name != "wasserstein":
            raise RecipeError(f"wgan-gp trains a Wasserstein critic: set loss.name = \"wasserstein\""
                              f" (got {run.recipe.loss.name!r})", key="loss.name")
        replaced = replace_batch_norms(run.discriminator, self.normalisation)
        run.parameter_groups["D"] = run.discriminator_groups()
        if replaced:
            run.note(f"wgan-gp: the critic's {replaced} batch norms are {self.normalisation} norms"
                     f"{'' if self.normalisation != 'none' else ' (removed)'}: the gradient penalty is per sample")

    @hookimpl
    def ganforge_discriminator_steps(self, run):
        return self.critic_steps

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        real, fake = ctx.real, ctx.fake
        rng = ctx.run.rng(STREAM)
        mix = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), generator=rng, device=rng.device).to(real)
        between = (mix * real + (1 - mix) * fake).requires_grad_(True)
        # The fakes' conditions: a conditional critic sees each point with the class it was drawn for.
        norms = gradient_norms(ctx.discriminate(between, ctx.latents).logits, between)
        ctx.log("critic/gradient_norm", norms.mean())
        return [LossTerm("gradient_penalty", ((norms - 1) ** 2).mean(), self.weight)]


@hookimpl
def ganforge_register_run_plugins(register):
    register("wgan-gp", WGANGP, defaults=DEFAULTS)
