"""StyleGAN2's building blocks: equalised-learning-rate layers, the modulated convolution and the
minibatch standard deviation, after NVlabs/stylegan2-ada-pytorch ``training/networks.py``
(``normalize_2nd_moment``, ``modulated_conv2d``, ``FullyConnectedLayer``, ``Conv2dLayer``,
``MinibatchStdLayer``) and ``torch_utils/ops/bias_act.py`` (the activations and their gains).

Equalised learning rate (Karras et al. 2018): every weight is stored as a draw of N(0, 1) (divided
by the layer's ``lr_multiplier``) and multiplied at run time by ``lr_multiplier / sqrt(fan_in)``,
so that Adam's steps, which do not depend on a parameter's scale, change every layer's output at
the same rate. Biases are multiplied by ``lr_multiplier``. A leaky ReLU (slope 0.2) is followed by
a gain of sqrt(2), as ``bias_act``'s ``def_gain`` is.

Resampling is plain: 2x bilinear upsampling and 2x2 average pooling, where the reference filters
with the 4-tap FIR ``[1, 3, 3, 1]`` (``upfirdn2d``). Bilinear upsampling by 2 is that same filter,
but with the border replicated where the reference pads with zeros; average pooling is the 2-tap
box filter instead of the 4-tap one before the stride. A 3x3 convolution that downsamples pools
after convolving (the reference filters, then convolves with stride 2); one that upsamples
convolves the upsampled input (the reference's transposed convolution, then the filter). Neither
the reference's float16 layers nor their activation clamp (``conv_clamp = 256``) are here.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LEAKY_SLOPE = 0.2
LEAKY_GAIN = math.sqrt(2)  # bias_act's def_gain for 'lrelu'
DEMODULATION_EPS = 1e-8


def normalise_second_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each row divided by the root of its mean square (the mapping network's input)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, activation: str, gain: float = 1.0) -> torch.Tensor:
    """``x`` plus a per-channel ``bias`` (dim 1), then the activation times its gain and ``gain``:
    ``"lrelu"`` is leaky ReLU times sqrt(2), ``"linear"`` the identity."""
    if bias is not None:
        x = x + bias.reshape(1, -1, *([1] * (x.dim() - 2)))
    if activation == "lrelu":
        return F.leaky_relu(x, LEAKY_SLOPE) * (LEAKY_GAIN * gain)
    return x * gain if gain != 1 else x


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class EqualisedLinear(nn.Module):
    """``FullyConnectedLayer``: ``activation(x W'^T + b')`` with ``W' = W * lr_multiplier / sqrt(in)``
    and ``b' = b * lr_multiplier``; the mapping network's layers use ``lr_multiplier = 0.01``."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear", lr_multiplier: float = 1.0,
                 bias_init: float = 0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.bias_gain if self.bias_gain != 1 else self.bias
        return bias_act(F.linear(x, self.weight * self.weight_gain), bias, self.activation)


class EqualisedConv2d(nn.Module):
    """``Conv2dLayer``: a ``kernel`` x ``kernel`` convolution (same padding) with its weight times
    ``1 / sqrt(in * kernel^2)``; with ``down``, followed by 2x2 average pooling (a 1x1 convolution
    pools first: they commute, and it is 4 times cheaper); then bias and activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, activation: str = "linear",
                 bias: bool = True, down: bool = False):
        super().__init__()
        self.activation, self.down, self.padding = activation, down, kernel // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel * kernel)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        pool_first = self.down and self.weight.shape[-1] == 1
        x = F.avg_pool2d(x, 2) if pool_first else x
        x = F.conv2d(x, self.weight * self.weight_gain, padding=self.padding)
        x = F.avg_pool2d(x, 2) if self.down and not pool_first else x
        return bias_act(x, self.bias, self.activation, gain)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     up: bool = False, noise: torch.Tensor | None = None) -> torch.Tensor:
    """The reference's ``modulated_conv2d``: per sample, the weight's input channels scaled by
    ``styles`` (B, in) and, with ``demodulate``, each output channel's scaled weight divided by
    its norm, ``rsqrt(sum(w^2) + 1e-8)``; then ``noise`` added.

    Computed as the reference's unfused path (``fused_modconv = False``, what it trains with):
    the input scaled by the styles, one convolution with the shared weight, the output scaled by
    the demodulation coefficients, which need not build the per-sample weights:
    ``sum_{i,k} (W_oik s_i)^2 = sum_i s_i^2 sum_k W_oik^2``. With ``up``, the scaled input is
    upsampled first (scaling per channel and upsampling commute) and convolved with the flipped
    kernel: the reference's upsampling layers convolve (``flip_weight = False``) where the others
    correlate, as ``F.conv2d`` does, so the same weights give the same images inside the border."""
    batch = x.shape[0]
    x = x * styles.reshape(batch, -1, 1, 1)
    if up:
        x, weight = upsample(x), weight.flip(2, 3)
    x = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
    if demodulate:
        squared_norms = styles.square() @ weight.square().sum(dim=(2, 3)).t()  # (B, out)
        x = x * (squared_norms + DEMODULATION_EPS).rsqrt().reshape(batch, -1, 1, 1)
    return x if noise is None else x + noise


def group_size_for(batch: int, group_size: int) -> int:
    """The reference's group, ``min(group_size, batch)``; a batch it does not divide (which the
    reference refuses) takes the largest group size below it that does."""
    size = min(group_size, batch)
    while batch % size:
        size -= 1
    return size


class MinibatchStd(nn.Module):
    """``MinibatchStdLayer``: the batch split into groups of ``group_size`` images (image ``i`` in
    group ``i mod (N / G)``), each group's standard deviation of every feature averaged over
    channels and positions (in ``channels`` channel groups), appended as ``channels`` new
    channels. ``mixes_batch``: one image's output depends on the others of its batch, so a pass
    over several batches put together applies it to each on its own (ganforge.models)."""

    mixes_batch = True

    def __init__(self, group_size: int, channels: int = 1):
        super().__init__()
        self.group_size, self.channels = group_size, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = group_size_for(n, self.group_size)
        y = x.reshape(group, -1, self.channels, c // self.channels, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # (n / G, channels)
        y = y.reshape(-1, self.channels, 1, 1).repeat(group, 1, h, w)
        return torch.cat([x, y], dim=1)
