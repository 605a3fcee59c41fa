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
from ganforge.checks import at_least, one_of, positive
from ganforge.losses import LossTerm
from ganforge.plugin_spec import Option, PluginSpec

from .normalisation import NORMALISATIONS, per_sample_discriminator
from .penalties import gradient_norms, refuse_compiled_networks

OPTIONS = {
    "gamma": Option(10.0, "the penalty's weight: gamma / 2 * |grad D|^2", positive),
    "every": Option(16, "computed every this many steps, scaled by it (1: each step)", at_least(1)),
    "normalisation": Option("layer", '"layer", "instance" or "none": what replaces D\'s batch norms (a per-sample penalty needs per-sample outputs)', one_of(*NORMALISATIONS)),
}


class GradientPenalty:
    """``on = "real"`` (R1) or ``"fake"`` (R2)."""

    on = "real"
    name = "r1"

    def __init__(self, settings: dict):
        self.gamma, self.every = settings["gamma"], settings["every"]
        self.normalisation = settings["normalisation"]

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


DEFAULTS = {name: option.default for name, option in OPTIONS.items()}


class R2(GradientPenalty):
    on = "fake"
    name = "r2"


@hookimpl
def ganforge_register_run_plugins(register):
    register(PluginSpec("r1", GradientPenalty, OPTIONS, doc="R1: a lazy gradient penalty on real images"))
    register(PluginSpec("r2", R2, OPTIONS, doc="R2: a lazy gradient penalty on generated images"))
