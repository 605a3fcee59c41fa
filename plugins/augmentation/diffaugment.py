"""``[plugins.diffaugment]``: differentiable augmentation of every image D sees (Zhao et al. 2020).

Real and generated images alike, in both phases, go through the chosen changes (``colour``,
``translation``, ``cutout``) before the discriminator, so D cannot memorise a small dataset (such
as the 10,000 digits here) and G still learns through the changes. It is a
``ganforge_discriminator_transforms`` transform with ``order = -10``: it comes before any other
transform, so the heads (InfoGAN's Q) see the augmented images, by declaration, not install order.

Translation fills the uncovered border with 0, as the reference does (mit-han-lab/data-efficient-gans
``DiffAugment_pytorch.py``, ``rand_translation``, zero padding), though 0 is mid-grey in our [-1, 1]
images rather than black: the variant is the paper's. Cutout's square is 0 there too.
"""

from __future__ import annotations

import torch

from ganforge import hookimpl
from ganforge.checks import Each, accepting, one_of
from ganforge.plugin_spec import Option, PluginSpec

from .images import colour, cutout, translate

POLICIES = {"colour": colour, "translation": translate, "cutout": cutout}


class DiffAugment:
    """The policy's changes, applied in order to every image D sees; ``order = -10``: first."""

    def __init__(self, settings: dict):
        self.policy = [POLICIES[name] for name in settings["policy"]]

    @hookimpl
    def ganforge_discriminator_transforms(self, run):
        return [("diffaugment", self)]

    order = -10

    def __call__(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        for change in self.policy:
            images = change(images, rng)
        return images


@accepting("not empty")
def names_a_change(policy: list) -> str | None:
    return None if policy else f"must name at least one change: {', '.join(POLICIES)}"


SPEC = PluginSpec(
    "diffaugment", DiffAugment, doc="the same random changes to real and generated images before D (Zhao et al. 2020)",
    options={"policy": Option(["colour", "translation", "cutout"], "the changes, in order",
                              (names_a_change, Each(one_of(*POLICIES))))})
DEFAULTS = SPEC.defaults()


@hookimpl
def ganforge_register_run_plugins(register):
    register(SPEC)
