"""StyleGAN2's mapping and synthesis networks, after NVlabs/stylegan2-ada-pytorch
``training/networks.py`` (``MappingNetwork``, ``SynthesisLayer``, ``ToRGBLayer``,
``SynthesisBlock`` with ``architecture = 'skip'``, ``SynthesisNetwork``); the layers and their
plain resampling are in :mod:`.layers`.

The mapping network normalises ``z`` by its second moment, embeds the conditions (the
reference's label ``c``: here every generator input besides ``z``, a cGAN's one-hot label or
InfoGAN's codes) with a linear layer and normalises them likewise, concatenates the two and
maps them through ``mapping_layers`` leaky-ReLU layers at a learning-rate multiplier of 0.01 to
``w``, which it broadcasts to every synthesis layer. In training it tracks ``w_avg``, the moving
average of ``w`` (decay 0.995) that the truncation trick pulls towards.

The synthesis network starts from a learned 4x4 constant; each layer is a modulated (and
demodulated) 3x3 convolution whose styles are an affine map of its ``w``, plus per-pixel noise
scaled by a learned strength, a bias and a leaky ReLU. Each resolution's block upsamples and
convolves twice, and its ToRGB layer (a modulated 1x1 convolution without demodulation) adds to
the upsampled image of the blocks before: the skip generator. Noise is random in training and the
layer's fixed ``noise_const`` in eval mode (the reference's ``noise_mode = 'const'``, the default
of its ``generate.py``), so a picture of fixed latents is always the same.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .layers import EqualisedLinear, bias_act, modulated_conv2d, normalise_second_moment, upsample

MAPPING_LR_MULTIPLIER = 0.01
W_AVERAGE_DECAY = 0.995  # w_avg_beta

#: Draws the training-time noise of one layer: ``draw(shape)`` -> a normal tensor of that shape.
NoiseSource = Callable[[tuple[int, ...]], torch.Tensor]


class MappingNetwork(nn.Module):
    """``z`` (and the conditions ``c``) to ``w``, broadcast to ``(B, num_ws, w_dim)``."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, layers: int):
        super().__init__()
        self.z_dim, self.num_ws = z_dim, num_ws
        self.embed = EqualisedLinear(c_dim, w_dim) if c_dim else None  # embed_features = w_dim
        widths = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * layers
        self.layers = nn.ModuleList(EqualisedLinear(a, b, "lrelu", MAPPING_LR_MULTIPLIER) for a, b in zip(widths, widths[1:]))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor, track_average: bool = False) -> torch.Tensor:
        x = normalise_second_moment(z)
        if self.embed is not None:
            x = torch.cat([x, normalise_second_moment(self.embed(c))], dim=1)
        for layer in self.layers:
            x = layer(x)
        if track_average:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, W_AVERAGE_DECAY))
        return x.unsqueeze(1).repeat(1, self.num_ws, 1)


class SynthesisLayer(nn.Module):
    """A modulated 3x3 convolution (upsampling with ``up``), noise, bias and leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False):
        super().__init__()
        self.up, self.resolution = up, resolution
        self.affine = EqualisedLinear(w_dim, in_channels, bias_init=1.0)
        # No runtime gain on this weight: demodulation divides out its scale.
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, draw_noise: NoiseSource | None) -> torch.Tensor:
        if draw_noise is None:
            noise = self.noise_const * self.noise_strength
        else:
            noise = draw_noise((x.shape[0], 1, self.resolution, self.resolution)) * self.noise_strength
        x = modulated_conv2d(x, self.weight, self.affine(w), demodulate=True, up=self.up, noise=noise)
        return bias_act(x, self.bias, "lrelu")


class ToRGB(nn.Module):
    """A modulated 1x1 convolution to the image's channels, not demodulated; its styles carry the
    weight's ``1 / sqrt(in)`` gain."""

    def __init__(self, in_channels: int, image_channels: int, w_dim: int):
        super().__init__()
        self.affine = EqualisedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(image_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(image_channels))
        self.weight_gain = 1 / in_channels**0.5

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        return bias_act(modulated_conv2d(x, self.weight, styles, demodulate=False), self.bias, "linear")


class SynthesisBlock(nn.Module):
    """One resolution: the 4x4 constant and one layer, or an upsampling layer and a layer; then
    ToRGB, added to the upsampled image so far. Uses ``num_conv + 1`` of the ws (its ToRGB's w
    is the next block's first)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, image_channels: int):
        super().__init__()
        self.first = in_channels == 0
        if self.first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels, image_channels, w_dim)
        self.num_conv = 1 if self.first else 2

    def forward(self, x: torch.Tensor | None, image: torch.Tensor | None, ws: torch.Tensor,
                draw_noise: NoiseSource | None) -> tuple[torch.Tensor, torch.Tensor]:
        w = iter(ws.unbind(dim=1))
        if self.first:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        else:
            x = self.conv0(x, next(w), draw_noise)
        x = self.conv1(x, next(w), draw_noise)
        rgb = self.torgb(x, next(w))
        return x, rgb if image is None else upsample(image) + rgb


class SynthesisNetwork(nn.Module):
    """Blocks from 4x4 to ``resolution``, with ``min(channel_base // res, channel_max)`` channels
    at resolution ``res``; ``num_ws`` ws in all."""

    def __init__(self, w_dim: int, resolution: int, image_channels: int, channel_base: int, channel_max: int):
        super().__init__()
        resolutions = [2**k for k in range(2, resolution.bit_length())]
        channels = {res: min(channel_base // res, channel_max) for res in resolutions}
        self.blocks = nn.ModuleList(
            SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim, res, image_channels)
            for res in resolutions)
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1  # + the last block's ToRGB

    def forward(self, ws: torch.Tensor, draw_noise: NoiseSource | None = None) -> torch.Tensor:
        x = image = None
        start = 0
        for block in self.blocks:
            x, image = block(x, image, ws.narrow(1, start, block.num_conv + 1), draw_noise)
            start += block.num_conv
        return image
