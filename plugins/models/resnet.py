"""The ResNet backbone of SNGAN (Miyato et al. 2018), at 32 and 64 px: ``model.name = "resnet"``.

G: a linear layer to a 4x4 map, pre-activation residual blocks (BN, ReLU, 2x upsampling, 3x3
conv, BN, ReLU, 3x3 conv; a 1x1 conv on the upsampled shortcut), then BN, ReLU, a 3x3 conv to the
image and tanh. D: residual blocks without normalisation (ReLU, 3x3 conv, ReLU, 3x3 conv, 2x2
average pooling; the first block convolves before its activation), a ReLU and a global sum over
positions: that sum is the shared feature vector the heads read, and the adversarial head is a
linear layer on it. The layout, widths and initialisation follow the reference that reproduces
the chainer sngan_projection code in PyTorch (kwotsin/mimicry, ``torch_mimicry/nets/sngan/``
``sngan_32.py`` and ``sngan_64.py``, ``torch_mimicry/modules/resblocks.py``); at 32 px G keeps 256
channels and D 128 throughout, at 64 px G halves from 1,024 to 64 and D doubles from 64 to 1,024.

D's layers are plain convolutions: spectral normalisation is the ``spectral-norm`` plugin, as for
every backbone, and D has no batch norm to swap. ``model.options = { g_width = 64, d_width = 64 }``
sets the widths (32 px: G's and D's channels; 64 px: G's first and D's last), for a CPU budget.
Bilinear upsampling, as the reference does.

``d_mbstd_group = 4`` (not the reference's; 0, the default, leaves it out) puts StyleGAN2's
minibatch standard deviation before D's last block: one more channel holding how much each group
of four images differs, so that D can tell a batch of too-alike fakes from a real one. SNGAN's D
has no batch statistics at all, where the DCGAN D's batch norm gives it that signal; InfoGAN's
information term, which G can satisfy with one image per category, needs it (docs/variants.md).

``d_norm = "batch"`` (not the reference's either; ``"none"``, the default, is) puts a batch norm
before each of D's ReLUs, as the DCGAN D of the InfoGAN recipe has one: the other way to give D
the batch's statistics. Spectral norm and the gradient penalties swap them out as they do DCGAN's.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ganforge import hookimpl
from ganforge.errors import RecipeError
from ganforge.models import Discriminator

from .stylegan2.layers import MinibatchStd

#: The reference's widths, by image size: G's ``ngf`` and D's ``ndf``.
REFERENCE_WIDTHS = {32: (256, 128), 64: (1024, 1024)}


def xavier(layer: nn.Module, gain: float) -> nn.Module:
    nn.init.xavier_uniform_(layer.weight, gain)
    return layer


class GeneratorBlock(nn.Module):
    """BN-ReLU-up-conv3-BN-ReLU-conv3, plus a 1x1 conv of the upsampled input."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.norm1, self.norm2 = nn.BatchNorm2d(channels_in), nn.BatchNorm2d(channels_out)
        self.conv1 = xavier(nn.Conv2d(channels_in, channels_out, 3, 1, 1), math.sqrt(2))
        self.conv2 = xavier(nn.Conv2d(channels_out, channels_out, 3, 1, 1), math.sqrt(2))
        self.shortcut = xavier(nn.Conv2d(channels_in, channels_out, 1, 1, 0), 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(upsample(F.relu(self.norm1(x))))
        return self.conv2(F.relu(self.norm2(h))) + self.shortcut(upsample(x))


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class DiscriminatorBlock(nn.Module):
    """ReLU-conv3-ReLU-conv3 (then 2x2 average pooling), plus a 1x1 conv of the input where the
    shape changes. ``first``: the first block, which convolves the image before any ReLU.
    ``wide``: the first conv already goes to the output width (BigGAN's and SAGAN's "wide" D;
    SNGAN's keeps the input width until the second)."""

    def __init__(self, channels_in: int, channels_out: int, down: bool, first: bool = False, wide: bool = False,
                 batch_norm: bool = False):
        super().__init__()
        self.down, self.first = down, first
        hidden = channels_out if first or wide else channels_in
        self.conv1 = xavier(nn.Conv2d(channels_in, hidden, 3, 1, 1), math.sqrt(2))
        self.conv2 = xavier(nn.Conv2d(hidden, channels_out, 3, 1, 1), math.sqrt(2))
        changes = first or down or channels_in != channels_out
        self.shortcut = xavier(nn.Conv2d(channels_in, channels_out, 1, 1, 0), 1.0) if changes else None
        # ``d_norm = "batch"``: pre-activation batch norm before each ReLU, as in G's blocks.
        self.norm1 = nn.BatchNorm2d(channels_in) if batch_norm and not first else nn.Identity()
        self.norm2 = nn.BatchNorm2d(hidden) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x if self.first else F.relu(self.norm1(x)))
        h = self.conv2(F.relu(self.norm2(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        if self.shortcut is None:
            return h + x
        # The first block pools before its 1x1 conv, the others after (the same arithmetic).
        skip = self.shortcut(F.avg_pool2d(x, 2)) if self.first else self.shortcut(x)
        return h + (F.avg_pool2d(skip, 2) if self.down and not self.first else skip)


class ResNetGenerator(nn.Module):
    def __init__(self, input_dim: int, channels: int, widths: list[int]):
        super().__init__()
        self.top = widths[0]
        self.project = xavier(nn.Linear(input_dim, 4 * 4 * widths[0]), 1.0)
        self.blocks = nn.Sequential(*(GeneratorBlock(a, b) for a, b in zip(widths, widths[1:])))
        self.norm = nn.BatchNorm2d(widths[-1])
        self.to_image = xavier(nn.Conv2d(widths[-1], channels, 3, 1, 1), 1.0)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.project(inputs).view(-1, self.top, 4, 4))
        return torch.tanh(self.to_image(F.relu(self.norm(h))))


class ResNetDiscriminator(Discriminator):
    def __init__(self, channels: int, widths: list[int], downs: list[bool], mbstd_group: int = 0,
                 batch_norm: bool = False):
        super().__init__()
        blocks = [DiscriminatorBlock(channels, widths[0], down=True, first=True, batch_norm=batch_norm)]
        blocks += [DiscriminatorBlock(a, b, down, batch_norm=batch_norm) for a, b, down in zip(widths, widths[1:], downs)]
        if mbstd_group:
            last = blocks[-1]
            replacement = DiscriminatorBlock(last.conv1.in_channels + 1, widths[-1], last.down, batch_norm=batch_norm)
            blocks[-1:] = [MinibatchStd(mbstd_group), replacement]
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.BatchNorm2d(widths[-1]) if batch_norm else nn.Identity()
        self.feature_dim = widths[-1]
        self.head = xavier(nn.Linear(widths[-1], 1), 1.0)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.blocks(images))).sum(dim=(2, 3))  # global sum pooling

    def adversarial(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features).squeeze(1)


def layout(image_size: int, g_width: int, d_width: int) -> tuple[list[int], list[int], list[bool]]:
    """G's block widths (from the 4x4 map up), D's (from the image down) and D's downsamplings
    after its first block, as the reference lays them out at each size."""
    if image_size == 32:  # three G blocks of one width; D: down, down, then two blocks at 8x8
        return [g_width] * 4, [d_width] * 4, [True, False, False]
    # 64 px: G halves over four blocks to 64; D doubles over five, each pooling, to 4x4
    return [g_width >> k for k in range(5)], [d_width >> k for k in range(4, -1, -1)], [True] * 4


#: D's normalisation choices: none (SNGAN's D) or batch norm before each ReLU.
D_NORMS = ("none", "batch")


def build_resnet(image_shape, input_dim, g_width: int = 0, d_width: int = 0, d_mbstd_group: int = 0,
                 d_norm: str = "none"):
    channels, height, width = image_shape
    if height != width or height not in REFERENCE_WIDTHS:
        raise RecipeError(f"takes square 32 or 64 px images, the data has {height}x{width}; set data.image_size"
                          " to 32 or 64", key="model.name")
    reference_g, reference_d = REFERENCE_WIDTHS[height]
    g_width, d_width = g_width or reference_g, d_width or reference_d
    smallest = 1 if height == 32 else 16  # at 64 px the widths are halved four times
    for key, value in (("g_width", g_width), ("d_width", d_width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < smallest or value % smallest or value > 4096:
            raise RecipeError(f"must be a multiple of {smallest} from {smallest} to 4096 at {height} px, got {value}",
                              key=f"model.options.{key}")
    if not isinstance(d_mbstd_group, int) or isinstance(d_mbstd_group, bool) or not 0 <= d_mbstd_group <= 1024:
        raise RecipeError(f"must be a group size from 0 (none) to 1024, got {d_mbstd_group!r}",
                          key="model.options.d_mbstd_group")
    if d_norm not in D_NORMS:
        raise RecipeError(f"must be one of {', '.join(map(repr, D_NORMS))}, got {d_norm!r}", key="model.options.d_norm")
    g_widths, d_widths, downs = layout(height, g_width, d_width)
    return (ResNetGenerator(input_dim, channels, g_widths),
            ResNetDiscriminator(channels, d_widths, downs, d_mbstd_group, batch_norm=d_norm == "batch"))


@hookimpl
def ganforge_register_models(register):
    register("resnet", build_resnet)
