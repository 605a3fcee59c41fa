"""StyleGAN2's discriminator, after NVlabs/stylegan2-ada-pytorch ``training/networks.py``
(``DiscriminatorBlock``, ``DiscriminatorEpilogue``, ``Discriminator``): residual blocks from the
image down to 4x4 (``architecture = 'resnet'``; ``'orig'``, the ``cifar`` configuration's, drops
the residual connection), then the minibatch standard deviation, a 3x3 convolution and a linear
layer. That layer's output is the shared feature vector ganforge's heads read (an InfoGAN Q head,
a projection, an AC-GAN classifier); the adversarial head is the reference's last linear layer
(``out``). The reference's own label conditioning (a mapping of ``c`` projected onto ``out``) is
ganforge's ``conditional`` plugin instead, a projection head on the same features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ganforge.models import Discriminator

from .layers import EqualisedConv2d, EqualisedLinear, MinibatchStd

RESIDUAL_GAIN = math.sqrt(0.5)  # each branch of a residual block, so that their sum keeps the scale


class DiscriminatorBlock(nn.Module):
    """The first block reads the image (a 1x1 ``fromrgb``); then a 3x3 convolution and a 3x3
    convolution that halves the resolution, and with ``residual`` a 1x1 convolution of the input
    (halved, no bias) added, both branches times sqrt(1/2)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, image_channels: int, residual: bool):
        super().__init__()
        self.fromrgb = EqualisedConv2d(image_channels, tmp_channels, 1, "lrelu") if in_channels == 0 else None
        self.conv0 = EqualisedConv2d(tmp_channels, tmp_channels, 3, "lrelu")
        self.conv1 = EqualisedConv2d(tmp_channels, out_channels, 3, "lrelu", down=True)
        self.skip = EqualisedConv2d(tmp_channels, out_channels, 1, bias=False, down=True) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(x)
        if self.skip is None:
            return self.conv1(self.conv0(x))
        return self.skip(x, gain=RESIDUAL_GAIN) + self.conv1(self.conv0(x), gain=RESIDUAL_GAIN)


class StyleGAN2Discriminator(Discriminator):
    """Blocks at ``min(channel_base // res, channel_max)`` channels, then the epilogue at 4x4."""

    def __init__(self, image_shape: tuple[int, int, int], channel_base: int, channel_max: int, mbstd_group: int,
                 architecture: str = "resnet"):
        super().__init__()
        image_channels, resolution, _ = image_shape
        resolutions = [2**k for k in range(resolution.bit_length() - 1, 2, -1)]  # resolution down to 8
        channels = {res: min(channel_base // res, channel_max) for res in [*resolutions, 4]}
        self.blocks = nn.Sequential(*(
            DiscriminatorBlock(0 if res == resolution else channels[res], channels[res], channels[res // 2],
                               image_channels, residual=architecture == "resnet")
            for res in resolutions))
        width = self.feature_dim = channels[4]
        self.mbstd = MinibatchStd(mbstd_group, channels=1)
        self.conv = EqualisedConv2d(width + 1, width, 3, "lrelu")
        self.fc = EqualisedLinear(width * 4 * 4, width, "lrelu")
        self.out = EqualisedLinear(width, 1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.mbstd(self.blocks(images)))
        return self.fc(x.flatten(1))

    def adversarial(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(features).squeeze(1)
