"""``[plugins.r1]`` and ``[plugins.r2]``: gradient penalties on real (R1) or generated (R2) images.

R1 (Mescheder et al. 2018) adds ``gamma / 2 * |grad_x D(x)|^2`` on real images to D's objective:
it keeps D from growing steep around the data, with any objective. R2 is the same on generated
images. Both are lazy as in StyleGAN2: computed every ``every`` steps and scaled by ``every``, so
the penalty's average strength stays the same at a fraction of the cost (``every = 1``: each
step). The extra pass does not move D's batch statistics.

The penalty is defined on each sample's own gradient; under batch statistics the gradient of the
summed logits mixes the samples of the batch, so, as WGAN-GP does, the plugin replaces D's batch
norms by layer norms (``normalisation``: ``"layer"``, ``"instance"`` or ``"none"``) and says so in
``ganforge check``. With r1 and r2, or r1 and wgan-gp, the first to run replaces them and the
others find none left.
"""

from __future__ import annotations

from ganforge import hookimpl
from ganforge.errors import RecipeError
from ganforge.losses import LossTerm

from .normalisation import checked_normalisation, per_sample_discriminator
from .penalties import gradient_norms, refuse_compiled_networks

DEFAULTS = {"gamma": 10.0, "every": 16, "normalisation": "layer"}


class GradientPenalty:
    """``on = "real"`` (R1) or ``"fake"`` (R2)."""

    on = "real"
    name = "r1"

    def __init__(self, settings: dict):
        if settings["gamma"] <= 0:
            raise RecipeError(f"must be greater than 0, got {settings['gamma']}", key="gamma")
        if settings["every"] < 1:
            raise RecipeError(f"must be 1 or more, got {settings['every']}", key="every")
        self.gamma, self.every = settings["gamma"], settings["every"]
        self.normalisation = checked_normalisation(settings)

    @hookimpl
    def ganforge_models_built(self, run):
        refuse_compiled_networks(run, self.name)
        per_sample_discriminator(run, self.normalisation, self.name, "the gradient penalty is per sample")

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        if ctx.step % self.every:
            return []
        images = (ctx.real if self.on == "real" else ctx.fake).detach().requires_grad_(True)
        conditions = ctx.conditions if self.on == "real" else ctx.latents
        norms = gradient_norms(ctx.discriminate(images, conditions).logits, images)
        # Scaled by the interval: the same strength on average as a penalty every step.
        return [LossTerm(self.name, (norms**2).mean() * (self.gamma / 2 * self.every))]


class R2(GradientPenalty):
    on = "fake"
    name = "r2"


@hookimpl
def ganforge_register_run_plugins(register):
    register("r1", GradientPenalty, defaults=DEFAULTS)
    register("r2", R2, defaults=DEFAULTS)
