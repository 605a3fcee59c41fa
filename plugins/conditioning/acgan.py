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
from ganforge.checks import non_negative
from ganforge.losses import LossTerm
from ganforge.plugin_spec import Option, PluginSpec

from .labels import CLASSES_OPTION, LABEL, LABEL_CAPABILITY, LabelledVariant
HEAD = "classifier"


class ACGAN(LabelledVariant):
    name = "acgan"

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


SPEC = PluginSpec("acgan", ACGAN, {"classes": CLASSES_OPTION,
                                    "weight": Option(1.0, "the class losses' weight, in D and in G", non_negative)},
                  doc="the label as a generator input, a classifier head and its cross-entropy (Odena et al. 2017)",
                  **LABEL_CAPABILITY)
DEFAULTS = SPEC.defaults()


@hookimpl
def ganforge_register_run_plugins(register):
    register(SPEC)
