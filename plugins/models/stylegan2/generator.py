"""StyleGAN2's generator as ganforge calls it: the input row split into ``z`` and the conditions,
the mapping network, style mixing in training, and the truncation trick in ``w``.

Style mixing follows NVlabs/stylegan2-ada-pytorch ``training/loss.py`` (``StyleGAN2Loss.run_G``):
with probability ``style_mixing`` (0.9) a batch's ws from a layer ``cutoff`` on, drawn uniformly
from 1 to ``num_ws - 1``, are replaced by the ws of a second ``z`` with the same conditions, whose
mapping leaves ``w_avg`` alone. The reference's second ``z`` is ``randn_like(z)``; here it is a
draw of the run's own noise distribution (``latent.noise``; the same for the default ``normal``).
In eval mode there is no mixing, and the noise is each layer's fixed ``noise_const``.

Where the reference draws from torch's global generator, this generator draws from the run's
named streams (:class:`TrainingDraws`, given by the family's ``ganforge_models_built``), kept in
checkpoints: a resumed run mixes and adds noise exactly as the run that never stopped.

The truncation trick (``forward(..., truncation=psi)``, what ``ganforge sample --truncation``
passes): ``w = w_avg + psi (w - w_avg)`` at every layer, the reference's ``truncation_psi`` with
no ``truncation_cutoff``. The reference's images are not bounded; in training these are not
either (D sees them as the reference's does), and in eval mode they are clamped to [-1, 1], as
the reference clamps them when it turns them into pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .synthesis import MappingNetwork, SynthesisNetwork


@dataclass
class TrainingDraws:
    """Where the generator's training-time randomness comes from: ``mixing`` (a CPU generator)
    draws whether and where to mix, ``second_z(n, generator)`` the second noise from it, and
    ``noise`` (on the generator's device) every layer's noise."""

    mixing: torch.Generator
    second_z: Callable[[int, torch.Generator], torch.Tensor]
    noise: torch.Generator

    def __deepcopy__(self, memo: dict) -> TrainingDraws:
        # A copy of the generator (an EMA average) draws pictures in eval mode, which takes none:
        # it shares the run's streams rather than forking a second, unsaved copy of them.
        return self


class StyleGAN2Generator(nn.Module):
    """``G(inputs)``: the input row's first ``z_dim`` columns are ``z``, the rest the conditions."""

    def __init__(self, z_dim: int, c_dim: int, image_shape: tuple[int, int, int], w_dim: int, channel_base: int,
                 channel_max: int, mapping_layers: int, style_mixing: float):
        super().__init__()
        channels, resolution, _ = image_shape
        self.z_dim, self.style_mixing = z_dim, style_mixing
        self.synthesis = SynthesisNetwork(w_dim, resolution, channels, channel_base, channel_max)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, mapping_layers)
        self.draws: TrainingDraws | None = None

    def style_latents(self, inputs: torch.Tensor) -> torch.Tensor:
        """The per-layer ws, ``(B, num_ws, w_dim)``, of an input row; mixed in training."""
        z, c = inputs[:, :self.z_dim], inputs[:, self.z_dim:]
        ws = self.mapping(z, c, track_average=self.training)
        if not self.training or self.style_mixing == 0:
            return ws
        draws = self.training_draws()
        cutoff = int(torch.randint(1, self.num_ws, (), generator=draws.mixing))
        if not float(torch.rand((), generator=draws.mixing)) < self.style_mixing:
            return ws
        second = self.mapping(draws.second_z(len(z), draws.mixing).to(z), c)
        return torch.cat([ws[:, :cutoff], second[:, cutoff:]], dim=1)

    def synthesise(self, ws: torch.Tensor) -> torch.Tensor:
        """Images from the per-layer ws: random noise in training, the fixed noise and values
        clamped to [-1, 1] in eval mode."""
        if not self.training:
            return self.synthesis(ws).clamp(-1, 1)
        noise = self.training_draws().noise
        return self.synthesis(ws, lambda shape: torch.randn(shape, generator=noise, device=noise.device).to(ws))

    def forward(self, inputs: torch.Tensor, truncation: float | None = None) -> torch.Tensor:
        ws = self.style_latents(inputs)
        if truncation is not None:
            ws = self.mapping.w_avg.lerp(ws, truncation)
        return self.synthesise(ws)

    def training_draws(self) -> TrainingDraws:
        if self.draws is None:
            raise RuntimeError("StyleGAN2Generator in training mode draws its style mixing and noise from"
                               " TrainingDraws: set generator.draws (the stylegan2 family does it for a run)")
        return self.draws
