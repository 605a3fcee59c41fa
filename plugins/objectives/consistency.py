"""``[plugins.bcr]`` and ``[plugins.zcr]``: consistency regularisation of the discriminator
(Zhao et al. 2021, "Improved Consistency Regularization for GANs", AAAI).

**bCR** (balanced consistency regularisation) holds D's outputs on moved copies of the real and
of the generated batch near its outputs on the batches themselves:
``real_weight * mean((D(x) - D(T(x)))^2) + fake_weight * mean((D(G(z)) - D(T(G(z))))^2)`` in D's
objective, T a random left-right flip and a shift of up to 1/8 of the image with the border
reflected (:func:`~ganforge_plugins.augmentation.images.flip_and_translate`). **zCR** (latent
consistency regularisation) perturbs the noise, ``z' = z + dz`` with ``dz ~ N(0, sigma^2)``:
D's objective gets ``dis_weight * mean((D(G(z)) - D(G(z')))^2)`` (D must not tell the two
apart) and G's gets ``-gen_weight * mean((G(z) - G(z'))^2)`` (G must make them differ, against
mode collapse). Defaults: the paper's, ``real_weight = fake_weight = 10``, ``sigma = 0.03``,
``dis_weight = 5``, ``gen_weight = 0.5`` (StudioGAN's CIFAR-10 ICR config,
``src/configs/CIFAR10/BigGAN-ICR.yaml``, uses a radius of 0.05 and ``d_lambda = 20``).

Both follow POSTECH-CVLab/PyTorch-StudioGAN (``src/worker.py``, ``train_discriminator``: the
``apply_bcr`` and ``apply_zcr`` branches; ``train_generator``: ``fake_zcr_loss``;
``src/utils/sample.py``, ``sample_zy``: ``zs_eps``; ``src/utils/cr.py``, ``apply_cr_aug``):
each term is ``torch.nn.MSELoss`` of D's adversarial outputs (the logits D's objective sees, a
projection head's term included), and **neither side is detached**: the gradient flows through
D's output on the original as well as on the moved copy, as in the reference. ``dz`` is added to
the noise ``z`` alone; the codes and labels of other generator inputs stay as drawn, so
``G(z')`` is the same class or code. Where they differ from the reference:

- The moved copies are views of the step's one D pass (``ganforge_discriminator_views``,
  ``ganforge_discriminator_fake_views``), normalised by their own batch statistics and leaving
  D's running statistics alone; StudioGAN's extra passes move them.
- ``G(z')`` is drawn with G's batch norm on its own batch statistics without moving G's running
  statistics (:func:`~ganforge.models.frozen_batch_statistics`), so those stay the statistics of
  the step's own fakes; StudioGAN's generator step moves them with both batches.
- The copies go through the run's image transforms (``[plugins.diffaugment]``) like every image
  D sees, each batch with its own draws; StudioGAN shows D its CR copies without its DiffAugment.
- G's term pairs the G phase's fakes (the last D step's ``G(z)``, as every G term here sees) with
  ``G(z + dz)`` for a fresh ``dz``; StudioGAN's generator step draws a fresh ``z`` and ``dz``.
- zCR's ``dz`` is normal for any continuous noise (the paper's); StudioGAN draws it uniform in
  ``[-radius, radius]`` for a uniform prior. A discrete noise cannot take it: refused at check.
- An AC-GAN classifier's or InfoGAN's Q's outputs are not held (StudioGAN adds the classifier's
  for its ``AC`` discriminators).

Every draw (T's flips and shifts, ``dz``) comes from the run's streams ``bcr`` and ``zcr``,
which checkpoints keep, so a resumed run draws the same.
"""

from __future__ import annotations

import torch

from ganforge import hookimpl
from ganforge.checks import accepting, non_negative, positive
from ganforge.errors import RecipeError
from ganforge.losses import LossTerm
from ganforge.models import frozen_batch_statistics
from ganforge.plugin_spec import Option, PluginSpec
from ganforge.run import NOISE
from ganforge.step_services import autocast

from ..augmentation.images import flip_and_translate

BCR, ZCR = "bcr", "zcr"  # the views' names, the streams' names and the terms' names


def squared_gap(original: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``torch.nn.MSELoss()(original, other)``, the reference's ``l2_loss``: the mean over every
    element of the squared difference, gradients through both."""
    return (original - other).pow(2).mean()


class BalancedConsistency:
    """bCR: D's logits on T(real) and T(fake) pulled towards its logits on real and fake."""

    def __init__(self, settings: dict):
        self.real_weight, self.fake_weight = settings["real_weight"], settings["fake_weight"]
        self.flip, self.translation = settings["flip"], settings["translation"]
        if not (self.real_weight or self.fake_weight):
            raise RecipeError("and fake_weight are both 0, so bCR would add nothing; give one a weight (the paper:"
                              " 10) or remove [plugins.bcr]", key="real_weight")

    @hookimpl
    def ganforge_models_built(self, run):
        # A T that moves nothing makes both terms 0 up to rounding, at the cost of the extra passes.
        _, height, width = run.image_shape
        if not self.flip and not (int(height * self.translation) or int(width * self.translation)):
            raise RecipeError(f"{self.translation:g} shifts {height}x{width} px images by less than one pixel and flip"
                              " = false, so T leaves every image as it is and bCR would add nothing; set flip = true"
                              " or translation = 0.125", key="plugins.bcr.translation")

    def move(self, run, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """T(images) and the draws behind it, from the run's stream ``bcr``."""
        return flip_and_translate(images, run.rng(BCR), self.flip, self.translation)

    @hookimpl
    def ganforge_discriminator_views(self, run, real):
        return [(BCR, *self.move(run, real))] if self.real_weight else []

    @hookimpl
    def ganforge_discriminator_fake_views(self, run, fake):
        return [(BCR, *self.move(run, fake))] if self.fake_weight else []

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        terms = []
        if self.real_weight:
            terms.append(LossTerm("bcr/real", squared_gap(ctx.d_real.logits, ctx.views[BCR].logits), self.real_weight))
        if self.fake_weight:
            terms.append(LossTerm("bcr/fake", squared_gap(ctx.d_fake.logits, ctx.fake_views[BCR].logits),
                                  self.fake_weight))
        return terms


class LatentConsistency:
    """zCR: D's logits on G(z) and G(z + dz) held together, G's images on them pushed apart."""

    def __init__(self, settings: dict):
        self.sigma, self.dis_weight, self.gen_weight = settings["sigma"], settings["dis_weight"], settings["gen_weight"]
        if not (self.dis_weight or self.gen_weight):
            raise RecipeError("and gen_weight are both 0, so zCR would add nothing; give one a weight (the paper:"
                              " 5 and 0.5) or remove [plugins.zcr]", key="dis_weight")

    @hookimpl
    def ganforge_models_built(self, run):
        noise = run.inputs[NOISE]
        if noise.kind != "continuous":
            raise RecipeError(f"[plugins.zcr] adds normal steps to the noise z, which a {noise.kind} noise cannot take"
                              f" ({run.recipe.latent.noise!r}): use a continuous noise (normal, uniform) or remove"
                              " [plugins.zcr]", key="latent.noise")

    def perturbed(self, run, latents: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``latents`` with ``sigma`` times a standard normal draw (stream ``zcr``) added to the
        noise ``z`` alone: every other input (codes, labels) is the same tensor."""
        noise = latents[NOISE]
        rng = run.rng(ZCR)
        step = torch.randn(noise.shape, generator=rng, device=rng.device).to(noise.device)
        return {**latents, NOISE: noise + self.sigma * step}

    @staticmethod
    def generate(run, latents: dict[str, torch.Tensor]) -> torch.Tensor:
        """G's images for ``latents`` in training mode, batch norm on this batch's statistics
        without moving G's running ones (those stay the step's own fakes'); float32, as the
        core's fakes are under any precision."""
        with frozen_batch_statistics(run.generator), autocast(run):
            return run.generator_forward(latents).float()

    @hookimpl
    def ganforge_discriminator_fake_views(self, run, fake, latents):
        if not self.dis_weight:
            return []
        moved = self.perturbed(run, latents)
        with torch.no_grad():  # D's term trains D only: no graph into G
            images = self.generate(run, moved)
        return [(ZCR, images, moved)]

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        if not self.dis_weight:
            return []
        return [LossTerm(ZCR, squared_gap(ctx.d_fake.logits, ctx.fake_views[ZCR].logits), self.dis_weight)]

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        if not self.gen_weight:
            return []
        # A fresh dz and a pass of G's own, attached to its graph: the term trains G through both images.
        images = self.generate(ctx.run, self.perturbed(ctx.run, ctx.latents))
        return [LossTerm(ZCR, -squared_gap(ctx.fake, images), self.gen_weight)]


@accepting("0 to 0.5")
def translation_fraction(value: float) -> str | None:
    # A reflected border needs a shift smaller than the image: half of it at most.
    return None if 0 <= value <= 0.5 else "must be from 0 to 0.5 (a fraction of the image's size)"


BCR_SPEC = PluginSpec(
    BCR, BalancedConsistency,
    doc="balanced consistency regularisation (bCR): D's outputs on flipped and shifted real and generated images held"
        " near its outputs on them (Zhao et al. 2021)",
    options={
        "real_weight": Option(10.0, "lambda_real: weight of the term on real images (0: no moved real batch)",
                              non_negative),
        "fake_weight": Option(10.0, "lambda_fake: weight of the term on generated images (0: no moved fake batch)",
                              non_negative),
        "flip": Option(True, "T mirrors each image left-right with probability 1/2"),
        "translation": Option(0.125, "T shifts each image by whole pixels, up to this fraction of its size either way,"
                                     " the border reflected", translation_fraction),
    })
ZCR_SPEC = PluginSpec(
    ZCR, LatentConsistency,
    doc="latent consistency regularisation (zCR): D's outputs on G(z) and G(z + dz) held together, G's images"
        " pushed apart (Zhao et al. 2021)",
    options={
        "sigma": Option(0.03, "sigma_noise: standard deviation of the normal step dz added to the noise z", positive),
        "dis_weight": Option(5.0, "lambda_dis: weight of D's term (0: no G(z + dz) in the D phase)", non_negative),
        "gen_weight": Option(0.5, "lambda_gen: weight of G's term, minus the images' squared distance (0: no extra G"
                                  " pass)", non_negative),
    })
BCR_DEFAULTS, ZCR_DEFAULTS = BCR_SPEC.defaults(), ZCR_SPEC.defaults()


@hookimpl
def ganforge_register_run_plugins(register):
    register(BCR_SPEC)
    register(ZCR_SPEC)
