"""A von Mises angle code for ganforge: a third-party latent distribution in one module.

Installed, it registers the distribution ``vonmises`` through the ``ganforge`` entry-point group,
so a recipe can use it as the noise or as an InfoGAN code::

    [plugins.infogan]
    codes = [{ name = "angle", dist = "vonmises", size = 1, weight = 0.5 }]
"""

from __future__ import annotations

import math

import torch

from ganforge import hookimpl
from ganforge.latents import LatentDistribution, numbers_row, reject_unknown_options
from ganforge.sampling import von_mises

TWO_PI = 2 * math.pi


def log_i0(kappa: torch.Tensor) -> torch.Tensor:
    """log I0(κ), stable for large κ: I0 overflows float32 near κ = 90, i0e(κ) = exp(-κ) I0(κ) does not."""
    return torch.log(torch.special.i0e(kappa)) + kappa


class VonMises(LatentDistribution):
    """``size`` angles, each fed to the generator as (cos θ, sin θ), so that 0 and 2π look alike.

    Prior: uniform on the circle (``concentration = 0``, the default) or von Mises around ``loc``
    (radians) with that concentration. Q predicts a 2-vector η per angle: its direction is the mean
    angle μ and its norm the concentration κ, so ``η · (cos θ, sin θ) = κ cos(θ - μ)`` and the NLL
    needs no atan2 and has gradients of norm at most 2 whatever Q predicts.
    """

    kind = "continuous"

    def __init__(self, size: int, concentration: float = 0.0, loc: float = 0.0, **options):
        reject_unknown_options(type(self), options)
        super().__init__(size)
        for option, value in (("concentration", concentration), ("loc", loc)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{option} must be a finite number, got {value!r}")
        if concentration < 0:
            raise ValueError(f"concentration must be 0 (uniform on the circle) or more, got {concentration!r}")
        self.concentration, self.loc = float(concentration), float(loc)

    @property
    def input_dim(self) -> int:
        return 2 * self.size

    @property
    def param_dim(self) -> int:
        return 2 * self.size

    # -- the prior ------------------------------------------------------------------------------

    def sample(self, n, generator, device="cpu"):
        return unit_vectors(self.sample_angles(n, generator)).to(device)

    def sample_angles(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, size) angles in radians, drawn on the CPU from ``generator`` alone."""
        if self.concentration == 0:
            return TWO_PI * torch.rand(n, self.size, generator=generator)
        return von_mises((n, self.size), self.loc, self.concentration, generator=generator)

    def entropy(self):
        # ln(2π I0(κ)) - κ I1(κ)/I0(κ) per angle; ln 2π for the uniform circle.
        kappa = torch.tensor(self.concentration, dtype=torch.float64)
        mean_resultant = torch.special.i1e(kappa) / torch.special.i0e(kappa)
        return self.size * float(math.log(TWO_PI) + log_i0(kappa) - kappa * mean_resultant)

    # -- what Q predicts --------------------------------------------------------------------------

    def nll(self, value, params):
        # -log p(θ | μ, κ) = log 2π + log I0(κ) - κ cos(θ - μ), summed over the angles.
        unit = value.reshape(value.shape[0], self.size, 2)
        eta = params.reshape(params.shape[0], self.size, 2)
        # The clamp keeps the norm's gradient finite at η = 0 (where log I0 is flat anyway).
        kappa = eta.pow(2).sum(-1).clamp_min(1e-12).sqrt()
        return (math.log(TWO_PI) + log_i0(kappa) - (eta * unit).sum(-1)).sum(dim=1)

    def mean_and_concentration(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q's outputs as (mean angle μ in (-π, π], concentration κ), each (n, size)."""
        eta = params.reshape(params.shape[0], self.size, 2)
        return torch.atan2(eta[..., 1], eta[..., 0]), eta.norm(dim=-1)

    # -- pictures and chosen values ----------------------------------------------------------------

    def traversal_values(self, steps):
        # Once round the circle without repeating 0 = 2π; every angle of the code turns together.
        angles = torch.linspace(0, TWO_PI, steps + 1)[:-1]
        return unit_vectors(angles.unsqueeze(1).repeat(1, self.size))

    def encode(self, value):
        # An angle in radians (or a list of ``size`` of them), held fixed when sampling.
        return unit_vectors(numbers_row(value, self.size))

    def describe(self):
        return f"VonMises(size={self.size}, concentration={self.concentration:g}, loc={self.loc:g})"


def unit_vectors(angles: torch.Tensor) -> torch.Tensor:
    """(n, size) angles as the generator's (n, 2*size) input: cos θ1, sin θ1, cos θ2, ..."""
    return torch.stack([angles.cos(), angles.sin()], dim=-1).flatten(1)


@hookimpl
def ganforge_register_latents(register):
    register("vonmises", VonMises)
