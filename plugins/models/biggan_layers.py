"""BigGAN's layers (Brock et al. 2019): the shared embedding of the conditions, conditional batch
norm, the self-attention (non-local) block and the generator's residual up block.

The arithmetic is that of ajbrock/BigGAN-PyTorch ``layers.py`` (``ccbn``, ``Attention``,
``GBlock``), which POSTECH-CVLab/PyTorch-StudioGAN ``src/utils/ops.py``
(``ConditionalBatchNorm2d``, ``SelfAttention``) and ``src/models/big_resnet.py`` (``GenBlock``)
compute alike; the batch norms' epsilon, 1e-4, is StudioGAN's, whose CIFAR10 configuration the
family's sizes follow (``biggan.py``). The discriminator's residual block is the ResNet family's
with ``wide = True`` (``DiscriminatorBlock`` in ``resnet.py``): BigGAN-PyTorch's ``DBlock`` with
``wide = True``, the same arithmetic. Its shortcut reads the block's input before the ReLU, as
``DBlock`` insists ("This line *must* be an out-of-place ReLU"); StudioGAN's ``DiscBlock`` applies an
in-place ReLU to the tensor its shortcut then reads, so there the shortcut sees ``relu(x)``.

The layers are plain: spectral normalisation is the ``spectral-norm`` plugin. Its
``generator = true`` normalises every convolution and linear layer here (the gain and bias maps of
conditional batch norm and the attention's 1x1 convolutions included, as the reference's
``SNLinear`` and ``SNConv2d`` do) and leaves :class:`SharedEmbedding` alone, as the reference
leaves G's ``nn.Embedding`` ("applying SN to G's embedding seems to randomly cripple G").
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: Batch norm's epsilon in G: StudioGAN's ``ops.batchnorm_2d`` (BigGAN-PyTorch uses 1e-5).
BATCH_NORM_EPS = 1e-4


def orthogonal_init(module: nn.Module) -> None:
    """Orthogonal weights and zero biases for every convolution, linear layer and embedding, as
    both references initialise BigGAN (``G_init = 'ortho'``; StudioGAN ``ops.init_weights``)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.init.orthogonal_(layer.weight)
            if getattr(layer, "bias", None) is not None:
                nn.init.zeros_(layer.bias)


class SharedEmbedding(nn.Embedding):
    """BigGAN's shared class embedding (``G.shared``), read by a row of conditions rather than by
    a class index: ``conditions @ weight``. For a one-hot label that picks the label's row, exactly
    ``nn.Embedding``'s lookup; InfoGAN's codes, concatenated after it, add their rows weighted by
    their values, a linear map of the codes (StudioGAN's ``info_proj_linear`` maps them likewise,
    with a bias). It is an ``nn.Embedding`` so that what treats embeddings apart sees it as one:
    spectral norm leaves it, and the orthogonal regularisation skips it, as the reference
    blacklists ``G.shared``."""

    def forward(self, conditions: torch.Tensor) -> torch.Tensor:
        return conditions @ self.weight


class ConditionalBatchNorm(nn.Module):
    """Batch norm without its own scale and shift, then ``(1 + gain(c)) * x + bias(c)``: both
    linear maps (without bias) of the condition vector ``c`` (BigGAN-PyTorch ``ccbn`` with
    ``G_shared``; StudioGAN ``ConditionalBatchNorm2d``)."""

    def __init__(self, channels: int, condition_dim: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, eps=BATCH_NORM_EPS, affine=False)
        self.to_gain = nn.Linear(condition_dim, channels, bias=False)
        self.to_bias = nn.Linear(condition_dim, channels, bias=False)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        gain = 1 + self.to_gain(condition)
        bias = self.to_bias(condition)
        return self.norm(x) * gain[:, :, None, None] + bias[:, :, None, None]


class SelfAttention(nn.Module):
    """SAGAN's non-local block as the released code computes it: queries from a 1x1 conv to C/8
    channels at every position, keys (C/8) and values (C/2) 1x1-convolved then 2x2 max-pooled, a
    softmax over the keys, a 1x1 conv of the attended values back to C, scaled by a learned gain
    that starts at 0 and added to the input (BigGAN-PyTorch ``Attention``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.query = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.key = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.value = nn.Conv2d(channels, channels // 2, 1, bias=False)
        self.out = nn.Conv2d(channels // 2, channels, 1, bias=False)
        self.gain = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        query = self.query(x).flatten(2)                   # (B, C/8, HW)
        key = F.max_pool2d(self.key(x), 2).flatten(2)      # (B, C/8, HW/4)
        value = F.max_pool2d(self.value(x), 2).flatten(2)  # (B, C/2, HW/4)
        attention = torch.softmax(query.transpose(1, 2) @ key, dim=-1)  # (B, HW, HW/4)
        attended = (value @ attention.transpose(1, 2)).unflatten(2, (height, width))
        return self.gain * self.out(attended) + x


class GeneratorBlock(nn.Module):
    """Conditional BN, ReLU, 2x nearest upsampling, 3x3 conv, conditional BN, ReLU, 3x3 conv; plus
    a 1x1 conv of the upsampled input. Both batch norms read the block's condition vector."""

    def __init__(self, channels_in: int, channels_out: int, condition_dim: int):
        super().__init__()
        self.norm1 = ConditionalBatchNorm(channels_in, condition_dim)
        self.norm2 = ConditionalBatchNorm(channels_out, condition_dim)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1)
        self.shortcut = nn.Conv2d(channels_in, channels_out, 1, 1, 0)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        h = self.conv1(upsample(F.relu(self.norm1(x, condition))))
        h = self.conv2(F.relu(self.norm2(h, condition)))
        return h + self.shortcut(upsample(x))


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")  # the references' F.interpolate default
