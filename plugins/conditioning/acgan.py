"""``[plugins.acgan]``: the auxiliary-classifier GAN (Odena et al. 2017).

The class label is a generator input, as in ``conditional``; an auxiliary head on the
discriminator's features classifies every image. D minimises the classifier's cross-entropy on
real images (their labels) and on generated ones (the labels they were drawn for); G minimises it
on its images, so the class loss reaches G through the generated images. Free style codes come
from InfoGAN beside it (``[plugins.infogan]`` with continuous codes): the label carries the class,
the codes the rest.
"""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from ganforge import hookimpl
from ganforge.losses import LossTerm

from .labels import LABEL, LabelledVariant

DEFAULTS = {"classes": 10, "weight": 1.0}
HEAD = "classifier"


class ACGAN(LabelledVariant):
    name = "acgan"
    conflicts = {"conditional": "both add the class label as a generator input; pick one of them"}

    def __init__(self, settings: dict):
        super().__init__(settings)
        self.weight = float(settings["weight"])

    @hookimpl
    def ganforge_discriminator_heads(self, run, feature_dim):
        return [(HEAD, nn.Linear(feature_dim, self.classes))]

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        real = F.cross_entropy(ctx.d_real.heads[HEAD], ctx.conditions[LABEL].argmax(dim=1))
        fake = F.cross_entropy(ctx.d_fake.heads[HEAD], ctx.latents[LABEL].argmax(dim=1))
        return [LossTerm("class/real", real, self.weight), LossTerm("class/fake", fake, self.weight)]

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        return [LossTerm("class", F.cross_entropy(ctx.d_fake.heads[HEAD], ctx.latents[LABEL].argmax(dim=1)),
                         self.weight)]


@hookimpl
def ganforge_register_run_plugins(register):
    register("acgan", ACGAN, defaults=DEFAULTS)
