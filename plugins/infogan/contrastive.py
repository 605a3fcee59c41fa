"""``[plugins.infogan-cr]``: InfoGAN-CR's contrastive regulariser (Lin et al. 2020, "InfoGAN-CR and
ModelCentrality: Self-supervised Model Training and Selection for Disentangling GANs").

Beside InfoGAN's codes and Q, a network H looks at a pair of generated images and says which code
the pair shares. A pair is two images of the same noise in which one code, drawn at random for
each pair, has the same value and every other code is drawn afresh. H learns to name the shared
code (cross-entropy, in the discriminator's objective), and the generator learns to make it
nameable (the same cross-entropy, in the generator's objective, weighted by ``weight``): each code
must change the image in a way of its own, which is what disentanglement asks.

As the reference code does (github.com/fjxmlzn/InfoGAN-CR, ``InfoGAN-CR_dSprites/gan``):

- H is a network of its own, not a head on D's features (``CrDiscriminator`` in ``network.py``):
  the two images stacked on the channel axis, four 4x4 stride-2 convolutions of 32, 32, 64 and 64
  channels with TensorFlow's ``SAME`` padding, a 128-unit linear layer and one output per code,
  leaky ReLU (0.2) between, every layer spectrally normalised, weights drawn from N(0, 0.02^2)
  (truncated for the convolutions) and biases 0.
- The pair's noise is shared and the shared code's value is equal (``sample_cr`` in
  ``latent.py`` with the dSprites configuration's gap of 0; the progressive gap is not here).
- The term switches on at a step of the recipe's choosing (``start``; the dSprites configuration:
  after 288,000 of 322,560 batches, coefficient 2). The reference trains H from the start and
  re-initialises it, and its optimizer state, at the switch; here H is not trained before it,
  which leaves H at the switch exactly as fresh, at no cost before.
- H trains at its own rate (``lr``; the reference: 0.002, D at 0.002, G at 0.001).

What differs: H is trained in the discriminator's update (one optimizer step for D, Q and H
together, as H's loss does not touch D or Q), where the reference steps it just before; each
phase draws its own pairs, where the reference feeds one draw to both; torch's spectral norm
starts from 15 power iterations, the reference's from none. The pairs' images are made with the
generator's batch statistics, moving none of its running statistics.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from ganforge import hookimpl
from ganforge.checks import accepting, non_negative
from ganforge.errors import RecipeError
from ganforge.losses import LossTerm
from ganforge.models import frozen_batch_statistics, unwrap
from ganforge.plugin_spec import CODE_READER, Option, PluginSpec
from ganforge.step_services import autocast

NETWORK = "contrastive"
CHANNELS = (32, 32, 64, 64)
HIDDEN = 128
KERNEL, STRIDE = 4, 2


def same_padding(size: int) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding of one axis for a 4x4 stride-2 convolution: the output is
    ``ceil(size / 2)`` long and the odd pixel, if any, is padded after (bottom, right)."""
    total = max((math.ceil(size / STRIDE) - 1) * STRIDE + KERNEL - size, 0)
    return total // 2, total - total // 2


def truncated_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """TensorFlow's ``truncated_normal_initializer``: N(0, std^2) redrawn beyond two deviations."""
    return nn.init.trunc_normal_(tensor, 0.0, std, -2 * std, 2 * std)


class PairNetwork(nn.Module):
    """H: a pair of images, stacked on the channel axis, to one logit per code."""

    def __init__(self, image_shape: tuple[int, int, int], codes: int):
        super().__init__()
        channels, height, width = image_shape
        layers: list[nn.Module] = []
        inputs = 2 * channels
        for outputs in CHANNELS:
            (top, bottom), (left, right) = same_padding(height), same_padding(width)
            conv = nn.Conv2d(inputs, outputs, KERNEL, STRIDE)
            truncated_normal_(conv.weight, 0.02)
            nn.init.zeros_(conv.bias)
            layers += [nn.ZeroPad2d((left, right, top, bottom)), spectral_norm(conv), nn.LeakyReLU(0.2)]
            inputs, height, width = outputs, math.ceil(height / STRIDE), math.ceil(width / STRIDE)
        self.convs = nn.Sequential(*layers)
        hidden, out = nn.Linear(inputs * height * width, HIDDEN), nn.Linear(HIDDEN, codes)
        for linear in (hidden, out):
            nn.init.normal_(linear.weight, 0.0, 0.02)
            nn.init.zeros_(linear.bias)
        self.head = nn.Sequential(spectral_norm(hidden), nn.LeakyReLU(0.2), spectral_norm(out))

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(torch.cat([first, second], dim=1)).flatten(1))


def pair_latents(run, codes: list[str], n: int, rng: torch.Generator
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """``n`` pairs of generator inputs and, per pair, the index (into ``codes``) of the code the
    two share. Everything that is not a code (the noise, a class label) is the same in both; the
    shared code has one value; every other code is drawn twice, independently."""
    first, fresh = run.sample_latents(n, rng), run.sample_latents(n, rng)
    shared = torch.randint(len(codes), (n,), generator=rng, device=rng.device).to(run.device)
    second = {}
    for name, value in first.items():
        if name not in codes:
            second[name] = value
            continue
        keep = (shared == codes.index(name)).view(n, *[1] * (value.dim() - 1))
        second[name] = torch.where(keep, value, fresh[name])
    return first, second, shared


class ContrastiveRegulariser:
    """The per-run object of a ``[plugins.infogan-cr]`` table."""

    def __init__(self, settings: dict):
        self.weight, self.start, self.lr = settings["weight"], settings["start"], settings["lr"]
        self.codes: list[str] = []

    @hookimpl
    def ganforge_discriminator_networks(self, run, image_shape):
        self.codes = list(run.provider(CODE_READER).codes)
        if len(self.codes) < 2:
            raise RecipeError(f"tells which code a pair of images shares, and [plugins.infogan] has"
                              f" {len(self.codes)}: give it two codes or more", key="plugins.infogan-cr")
        network = PairNetwork(image_shape, len(self.codes))
        network.learning_rate = self.lr  # 0: train.d_lr
        return [(NETWORK, network)]

    @hookimpl
    def ganforge_models_built(self, run):
        if run.ranks.distributed:
            raise RecipeError("does not run under torchrun yet: its pair network trains outside the discriminator's"
                              " DistributedDataParallel pass, so the ranks would not average its gradients",
                              key="plugins.infogan-cr")

    def network(self, run) -> nn.Module:
        return unwrap(run.discriminator).networks[NETWORK]

    def pair_logits(self, ctx, with_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """H's logits on fresh pairs of the generator's images, and each pair's shared code."""
        run = ctx.run
        first, second, shared = pair_latents(run, self.codes, len(ctx.fake), run.rng("infogan-cr"))
        with torch.enable_grad() if with_graph else torch.no_grad(), frozen_batch_statistics(run.generator), \
                autocast(run):
            images = run.generator_forward({name: torch.cat([first[name], second[name]]) for name in first},
                                           run.training_generator)
        images = images.float()
        with autocast(run):
            logits = self.network(run)(*images.chunk(2))
        return logits.float(), shared

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        if ctx.step <= self.start:
            return []
        logits, shared = self.pair_logits(ctx, with_graph=False)
        ctx.log("contrastive/accuracy", (logits.argmax(1) == shared).float().mean())
        return [LossTerm("contrastive", F.cross_entropy(logits, shared))]

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        if ctx.step <= self.start:
            return []
        logits, shared = self.pair_logits(ctx, with_graph=True)
        return [LossTerm("contrastive", F.cross_entropy(logits, shared), self.weight)]


@accepting("[0, 1)")
def learning_rate(value: float) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1) (0: train.d_lr)"

SPEC = PluginSpec(
    "infogan-cr", ContrastiveRegulariser,
    doc="InfoGAN-CR's contrastive regulariser: a network tells which code a pair of images shares (Lin et al. 2020)",
    options={
        "weight": Option(2.0, "the term's weight in the generator's objective (the paper's dSprites setting: 2)",
                         non_negative),
        "start": Option(0, "the term is off up to this step and on after it (the paper: 89% through training)",
                        non_negative),
        "lr": Option(0.0, "learning rate of the pair network; 0 trains it at train.d_lr (the paper: 0.002)",
                     learning_rate),
    },
    requires={CODE_READER: "it regularises [plugins.infogan]'s codes"},
)


@hookimpl
def ganforge_register_run_plugins(register):
    register(SPEC)
