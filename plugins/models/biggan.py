"""The BigGAN backbone (Brock et al. 2019) at 32, 64 and 128 px: ``model.name = "biggan"``.

G: the noise ``z`` split into equal chunks, one per residual block plus one for the first linear
layer (the hierarchical latent); the first chunk becomes a 4x4 map; each residual up block
(``biggan_layers.GeneratorBlock``) reads a condition vector, ``[shared embedding of the
conditions, its own z chunk]``, through the conditional batch norms' gain and bias maps; a
self-attention block after the block that reaches ``model.options.attention`` px; then batch
norm, ReLU, a 3x3 conv to the image and tanh. D: BigGAN's wide residual down blocks (the first
convolves the image before any ReLU), the same self-attention after its first block at that
resolution, ReLU and a global sum over positions: the feature vector the heads read; the
adversarial head is a linear layer on it. No batch norm in D, as in the reference with spectral
norm. Orthogonal initialisation throughout.

The conditions are the generator input's parts other than the noise, in the row's order: the
``label`` one-hot of ``[plugins.conditional]`` or ``[plugins.acgan]``, InfoGAN's codes. A linear map
of them (:class:`~.biggan_layers.SharedEmbedding`, ``model.options.shared_dim`` wide) plays the
reference's shared ``nn.Embedding``: for a one-hot label it is the same lookup. With no
conditions (an unconditional run) each block's batch norm is conditioned on its z chunk alone,
as StudioGAN's unconditional BigGAN does (``g_cond_mtd = "W/O"``: the affine input is the chunk):
the chunks then still reach every block, which is what the hierarchical latent is for. D's class
projection is ``[plugins.conditional]``'s projection head on D's features (the reference's
``embed``), AC-GAN's classifier and InfoGAN's Q head read the same features.

Sizes follow POSTECH-CVLab/PyTorch-StudioGAN ``src/models/big_resnet.py`` (its width tables) and
its configurations, the reference widths here: ``src/configs/CIFAR10/BigGAN.yaml`` at 32 px
(``g_conv_dim = d_conv_dim = 96``, so G's blocks 384 channels and D's 192; attention at 16 px,
after G's second block and D's first; ``z_dim = 80``, ``g_shared_dim = 128``),
``Baby_ImageNet/BigGAN.yaml`` at 64 px (80, 80, attention at 32 px, ``z_dim = 100``) and
``ImageNet/BigGAN-256.yaml`` at 128 px (96, 96, attention at 64 px, ``z_dim = 120``). Their
parameter counts are the reference's (tests/test_biggan.py). ``model.options``: ``g_width`` and
``d_width`` (the references' ``g_conv_dim``, ``d_conv_dim``: G's channels are multiples of it,
at 32 px 4x, D's 2x), ``attention`` (a resolution of G's blocks, 8 up to the image's; 0 for
none; D has attention there only where one of its blocks outputs that resolution) and
``shared_dim``. ``latent.noise_dim`` must split evenly into the chunks: 4 at 32 px, 5 at 64, 6 at
128 (the reference's 80, 100 and 120 do). A CPU-sized network: ``model.options = { g_width = 16,
d_width = 16 }``, G's blocks 64 channels at 32 px and D's 32: 376,322 and 67,810 parameters on
32 px MNIST with ten classes, as ``ganforge check`` counts them (the reference's: 9.4 and 2.4 million).

The reference's setup in a recipe: ``[plugins.spectral-norm]`` with ``generator = true`` (every
convolution and linear layer of both networks, the conditional batch norms' maps and the
projection head included, and not G's shared embedding, as in the reference), ``loss.name =
"hinge"``, ``[plugins.conditional]`` for the class projection, ``[plugins.ema]`` with ``decay =
0.9999``, and for CIFAR10 ``train.d_steps = 5``, ``latent.noise_dim = 80`` (its batch of 64, rates of
2e-4 and betas 0.5 and 0.999 are ganforge's defaults). ``[plugins.orthogonal]``
adds BigGAN's orthogonal regularisation of G (β = 1e-4, the ImageNet setup; StudioGAN's CIFAR10
configuration has none).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ganforge import hookimpl
from ganforge.errors import RecipeError
from ganforge.models import Discriminator

from .biggan_layers import GeneratorBlock, SelfAttention, SharedEmbedding, orthogonal_init
from .resnet import DiscriminatorBlock

#: StudioGAN ``big_resnet.py``'s channels as multiples of ``g_conv_dim``: the 4x4 map's, then each
#: G block's output (``g_in_dims_collection``, ``g_out_dims_collection``).
G_MULTIPLES = {32: [4, 4, 4, 4], 64: [16, 8, 4, 2, 1], 128: [16, 16, 8, 4, 2, 1]}
#: ... of ``d_conv_dim``: each D block's output, and whether it halves the map (``d_out_dims_collection``, ``d_down``).
D_MULTIPLES = {32: [2, 2, 2, 2], 64: [1, 2, 4, 8, 16], 128: [1, 2, 4, 8, 16, 16]}
D_DOWNSAMPLES = {32: [True, True, False, False], 64: [True] * 4 + [False], 128: [True] * 5 + [False]}
#: The reference configurations' widths and attention resolution, by image size (see above).
REFERENCE = {32: {"g_width": 96, "d_width": 96, "attention": 16},
             64: {"g_width": 80, "d_width": 80, "attention": 32},
             128: {"g_width": 96, "d_width": 96, "attention": 64}}
REFERENCE_SHARED_DIM = 128
MAX_WIDTH = 4096
ATTENTION_CHANNELS = 8  # the attention's queries and keys have channels // 8 of them


class BigGANGenerator(nn.Module):
    def __init__(self, noise_dim: int, condition_dim: int, channels: int, widths: list[int], shared_dim: int,
                 attention_after: int | None):
        super().__init__()
        self.noise_dim, self.chunk, self.top = noise_dim, noise_dim // len(widths), widths[0]
        self.shared = SharedEmbedding(condition_dim, shared_dim) if condition_dim else None
        block_condition = self.chunk + (shared_dim if condition_dim else 0)
        self.project = nn.Linear(self.chunk, 4 * 4 * widths[0])
        self.blocks = nn.ModuleList(GeneratorBlock(a, b, block_condition) for a, b in zip(widths, widths[1:]))
        self.attention_after = -1 if attention_after is None else attention_after
        self.attention = SelfAttention(widths[attention_after + 1]) if attention_after is not None else None
        self.norm = nn.BatchNorm2d(widths[-1], eps=1e-4)
        self.to_image = nn.Conv2d(widths[-1], channels, 3, 1, 1)
        orthogonal_init(self)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        noise, conditions = inputs[:, :self.noise_dim], inputs[:, self.noise_dim:]
        first, *per_block = noise.split(self.chunk, dim=1)
        if self.shared is not None:
            shared = self.shared(conditions)
            per_block = [torch.cat([shared, chunk], dim=1) for chunk in per_block]
        h = self.project(first).view(-1, self.top, 4, 4)
        for index, (block, condition) in enumerate(zip(self.blocks, per_block)):
            h = block(h, condition)
            if index == self.attention_after:
                h = self.attention(h)
        return torch.tanh(self.to_image(F.relu(self.norm(h))))


class BigGANDiscriminator(Discriminator):
    def __init__(self, channels: int, widths: list[int], downs: list[bool], attention_after: int | None):
        super().__init__()
        blocks = [DiscriminatorBlock(channels, widths[0], down=True, first=True, wide=True)]
        blocks += [DiscriminatorBlock(a, b, down, wide=True) for a, b, down in zip(widths, widths[1:], downs[1:])]
        self.blocks = nn.ModuleList(blocks)
        self.attention_after = -1 if attention_after is None else attention_after
        self.attention = SelfAttention(widths[attention_after]) if attention_after is not None else None
        self.feature_dim = widths[-1]
        self.head = nn.Linear(widths[-1], 1)
        orthogonal_init(self)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        h = images
        for index, block in enumerate(self.blocks):
            h = block(h)
            if index == self.attention_after:
                h = self.attention(h)
        return F.relu(h).sum(dim=(2, 3))  # global sum pooling

    def adversarial(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features).squeeze(1)


def block_resolutions(size: int) -> tuple[list[int], list[int]]:
    """The map's side after each G block (8 up to ``size``) and after each D block."""
    generator = [8 << index for index in range(len(G_MULTIPLES[size]) - 1)]
    discriminator, side = [], size
    for down in D_DOWNSAMPLES[size]:
        side //= 2 if down else 1
        discriminator.append(side)
    return generator, discriminator


def checked_int(value, key: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RecipeError(f"must be an integer from {low} to {high}, got {value!r}", key=f"model.options.{key}")
    return value


def build_biggan(image_shape, input_dim, input_layout=None, g_width=None, d_width=None, attention=None,
                 shared_dim=REFERENCE_SHARED_DIM):
    channels, height, width = image_shape
    if height != width or height not in REFERENCE:
        raise RecipeError(f"takes square 32, 64 or 128 px images, the data has {height}x{width}; set data.image_size"
                          " to 32, 64 or 128", key="model.name")
    reference = REFERENCE[height]
    g_width = checked_int(reference["g_width"] if g_width is None else g_width, "g_width", 1, MAX_WIDTH)
    d_width = checked_int(reference["d_width"] if d_width is None else d_width, "d_width", 1, MAX_WIDTH)
    shared_dim = checked_int(shared_dim, "shared_dim", 1, MAX_WIDTH)
    attention = reference["attention"] if attention is None else attention
    g_sides, d_sides = block_resolutions(height)
    if isinstance(attention, bool) or not isinstance(attention, int) or (attention != 0 and attention not in g_sides):
        raise RecipeError(f"must be 0 (none) or the side of one of G's blocks, {', '.join(map(str, g_sides))} at"
                          f" {height} px, got {attention!r}", key="model.options.attention")
    layout = dict(input_layout or {"z": input_dim})
    noise_dim = layout.pop(next(iter(layout)))  # the noise comes first, then the conditions (the hook's contract)
    chunks = len(g_sides) + 1
    if noise_dim % chunks:
        raise RecipeError(f"biggan splits z into {chunks} equal chunks at {height} px (one for the first layer, one"
                          f" per block); use a multiple of {chunks}, e.g. {noise_dim // chunks * chunks or chunks}",
                          key="latent.noise_dim")
    g_widths = [g_width * multiple for multiple in G_MULTIPLES[height]]
    d_widths = [d_width * multiple for multiple in D_MULTIPLES[height]]
    g_attention = g_sides.index(attention) if attention else None
    d_attention = d_sides.index(attention) if attention in d_sides else None
    for key, attended, widths, offset in (("g_width", g_attention, g_widths, 1), ("d_width", d_attention, d_widths, 0)):
        if attended is not None and widths[attended + offset] < ATTENTION_CHANNELS:
            raise RecipeError(f"{widths[attended + offset]} channels at {attention} px are too few for the attention"
                              f" block, which needs {ATTENTION_CHANNELS}; widen it or set model.options.attention = 0",
                              key=f"model.options.{key}")
    generator = BigGANGenerator(noise_dim, sum(layout.values()), channels, g_widths, shared_dim, g_attention)
    return generator, BigGANDiscriminator(channels, d_widths, D_DOWNSAMPLES[height], d_attention)


@hookimpl
def ganforge_register_models(register):
    register("biggan", build_biggan)
