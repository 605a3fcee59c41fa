"""DCGAN model families: the InfoGAN paper's 28x28 networks and the classic DCGAN for 32-128 px.

Both initialise weights from N(0, 0.02) and expose the discriminator's shared features, so plugin
heads (a Q head, a classifier) attach to them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.errors import RecipeError
from ganforge.models import Discriminator, init_weights_dcgan


class Generator28(nn.Module):
    """FC1024-BN-ReLU, FC7x7x128-BN-ReLU, upconv64-BN-ReLU, upconv C (tanh): the paper's MNIST G."""

    def __init__(self, input_dim: int, channels: int):
        super().__init__()
        self.project = nn.Sequential(
            nn.Linear(input_dim, 1024), nn.BatchNorm1d(1024), nn.ReLU(True),
            nn.Linear(1024, 128 * 7 * 7), nn.BatchNorm1d(128 * 7 * 7), nn.ReLU(True),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(True),
            nn.ConvTranspose2d(64, channels, 4, 2, 1), nn.Tanh(),
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(inputs).view(-1, 128, 7, 7))


class Discriminator28(Discriminator):
    """conv64-lReLU, conv128-BN-lReLU, FC1024-BN-lReLU (shared features), FC1: the paper's MNIST D."""

    feature_dim = 1024

    def __init__(self, channels: int):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(channels, 64, 4, 2, 1), nn.LeakyReLU(0.1, True),
            nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.1, True),
            nn.Flatten(),
            nn.Linear(128 * 7 * 7, 1024), nn.BatchNorm1d(1024), nn.LeakyReLU(0.1, True),
        )
        self.head = nn.Linear(1024, 1)

    def features(self, images):
        return self.trunk(images)

    def adversarial(self, features):
        return self.head(features).squeeze(1)


def _doublings(image_size: int) -> int:
    """How many stride-2 layers take 4x4 to ``image_size`` (32 -> 3, 64 -> 4)."""
    return int(math.log2(image_size // 4))


class DCGANGenerator(nn.Module):
    """Radford et al.: project to 4x4, then stride-2 upconvs halving the width, BN and ReLU, tanh."""

    def __init__(self, input_dim: int, channels: int, image_size: int, width: int = 64):
        super().__init__()
        layers = _doublings(image_size)
        top = width * 2 ** (layers - 1)
        blocks: list[nn.Module] = [
            nn.Unflatten(1, (input_dim, 1, 1)),
            nn.ConvTranspose2d(input_dim, top, 4, 1, 0, bias=False), nn.BatchNorm2d(top), nn.ReLU(True),
        ]
        for index in range(layers - 1):
            wide, narrow = top // 2**index, top // 2 ** (index + 1)
            blocks += [nn.ConvTranspose2d(wide, narrow, 4, 2, 1, bias=False), nn.BatchNorm2d(narrow), nn.ReLU(True)]
        blocks += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*blocks)

    def forward(self, inputs):
        return self.net(inputs)


class DCGANDiscriminator(Discriminator):
    """Stride-2 convs doubling the width down to 4x4 (BN and lReLU 0.2); the 4x4 map is the shared
    feature vector, and the adversarial head is the classic final 4x4 convolution as a linear layer."""

    def __init__(self, channels: int, image_size: int, width: int = 64):
        super().__init__()
        layers = _doublings(image_size)
        blocks: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for index in range(layers - 1):
            narrow, wide = width * 2**index, width * 2 ** (index + 1)
            blocks += [nn.Conv2d(narrow, wide, 4, 2, 1, bias=False), nn.BatchNorm2d(wide), nn.LeakyReLU(0.2, True)]
        blocks.append(nn.Flatten())
        self.trunk = nn.Sequential(*blocks)
        self.feature_dim = width * 2 ** (layers - 1) * 4 * 4
        self.head = nn.Linear(self.feature_dim, 1)

    def features(self, images):
        return self.trunk(images)

    def adversarial(self, features):
        return self.head(features).squeeze(1)


def build_dcgan_28(image_shape, input_dim):
    channels, height, width = image_shape
    if (height, width) != (28, 28):
        raise RecipeError(
            f"takes 28x28 images, the data has {height}x{width}; use model.name = \"dcgan\" for 32, 64 or 128 px,"
            " or data.image_size = 28", key="model.name")
    return _initialised(Generator28(input_dim, channels), Discriminator28(channels))


def build_dcgan(image_shape, input_dim):
    channels, height, width = image_shape
    if height != width or height not in (32, 64, 128):
        raise RecipeError(
            f"takes square 32, 64 or 128 px images, the data has {height}x{width}; set data.image_size to one"
            " of them, or use model.name = \"dcgan-28\" for 28x28", key="model.name")
    return _initialised(DCGANGenerator(input_dim, channels, height), DCGANDiscriminator(channels, height))


def _initialised(generator, discriminator):
    generator.apply(init_weights_dcgan)
    discriminator.apply(init_weights_dcgan)
    return generator, discriminator


@hookimpl
def ganforge_register_models(register):
    register("dcgan-28", build_dcgan_28)
    register("dcgan", build_dcgan)
