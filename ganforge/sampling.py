"""Seeded samplers for latent-distribution plugins.

A plugin draws its samples from the ``torch.Generator`` the run seeds, so that runs are
reproducible and resume exactly. ``torch.distributions`` cannot take a generator for Gamma, Beta,
Dirichlet or VonMises; this module gives plugin authors public, seeded ways to draw them instead
of private torch functions. Everything here samples on the CPU: move the result with ``.to(device)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import distributions as D

Shape = int | tuple[int, ...]
Param = float | torch.Tensor

# Samples are drawn in float64; one that float32 would round onto the edge of its support (0, or
# 1 for Beta and Dirichlet) is kept just inside, where its log-likelihood is finite.
TINY = torch.finfo(torch.float32).tiny
BELOW_ONE = 1 - torch.finfo(torch.float32).eps / 2


@contextmanager
def drawing_from(generator: torch.Generator) -> Iterator[None]:
    """Make torch's global CPU random generator draw from ``generator`` inside the block.

    The global generator is seeded from one draw of ``generator``, so that ``.sample()`` of a
    ``torch.distributions`` object, or ``torch.rand`` without a generator, draws reproducibly and
    from ``generator``'s stream alone; its state is restored when the block ends. ``generator``
    advances by exactly one draw per block. CPU only: sample on the CPU, then ``.to(device)``.
    The global state is process-wide, so do not draw from other threads meanwhile.
    """
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    # devices=[]: save and restore only the CPU state; default_generator, not torch.manual_seed,
    # which would also reseed (and not restore) every CUDA device's generator.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def gamma(shape: Shape, concentration: Param, rate: Param = 1.0, *, generator: torch.Generator) -> torch.Tensor:
    """Gamma(concentration, rate) samples (mean concentration / rate) of ``shape``, float32."""
    shape = _shape(shape)
    concentration = _positive("concentration", concentration, shape)
    rate = _positive("rate", rate, shape)
    with drawing_from(generator):
        value = D.Gamma(concentration, rate).sample()
    return value.float().clamp_(min=TINY)


def beta(shape: Shape, a: Param, b: Param, *, generator: torch.Generator) -> torch.Tensor:
    """Beta(a, b) samples of ``shape``, float32."""
    shape = _shape(shape)
    a, b = _positive("a", a, shape), _positive("b", b, shape)
    with drawing_from(generator):
        value = D.Beta(a, b).sample()
    return value.float().clamp_(TINY, BELOW_ONE)


def dirichlet(n: int, concentration: Sequence[float] | torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """``n`` Dirichlet(concentration) samples, shape (n, K) for K concentrations, float32."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    alpha = _tensor("concentration", concentration)
    if alpha.dim() != 1 or len(alpha) == 0:
        raise ValueError("concentration must be a sequence or 1-D tensor of K > 0 numbers, "
                         f"got shape {tuple(alpha.shape)}")
    alpha = _positive("concentration", alpha, alpha.shape)
    with drawing_from(generator):
        value = D.Dirichlet(alpha).sample((n,))
    return value.float().clamp_(TINY, BELOW_ONE)


def von_mises(shape: Shape, loc: Param, concentration: Param, *, generator: torch.Generator) -> torch.Tensor:
    """Von Mises(loc, concentration) angles in (-pi, pi] of ``shape``, float32; a concentration
    of 0 is the uniform distribution on the circle."""
    shape = _shape(shape)
    loc = _finite("loc", loc, shape)
    kappa = _checked("concentration", concentration, shape, lambda k: (k >= 0) & k.isfinite(), ">= 0 and finite")
    uniform = kappa == 0
    with drawing_from(generator):
        # torch's VonMises rejects a concentration of 0: draw those uniformly instead. In float64,
        # as float32 can loop for ever at small concentrations (pytorch issue 88443).
        angle = D.VonMises(loc, kappa.masked_fill(uniform, 1.0)).sample()
        if uniform.any():
            angle = torch.where(uniform, torch.rand(shape, dtype=torch.float64) * (2 * math.pi) - math.pi, angle)
    angle = angle.float()
    # The sampler's range is [-pi, pi); fold -pi (as float32 rounds it) onto pi.
    return torch.where(angle <= -math.pi, -angle, angle)


def truncated_normal(shape: Shape, low: Param, high: Param, *, generator: torch.Generator,
                     mean: Param = 0.0, std: Param = 1.0) -> torch.Tensor:
    """Normal(mean, std) samples of ``shape`` conditioned on lying in [low, high], float32."""
    shape = _shape(shape)
    mean, std = _finite("mean", mean, shape), _positive("std", std, shape)
    low = _checked("low", low, shape, lambda x: ~x.isnan(), "a number")
    high = _checked("high", high, shape, lambda x: ~x.isnan(), "a number")
    empty = low >= high
    if empty.any():
        raise ValueError(f"low must be < high, got low={low[empty][0].item():g}, high={high[empty][0].item():g}")
    a, b = (low - mean) / std, (high - mean) / std
    # Inverse CDF, in the lower tail where the CDF keeps its precision (1 - 1e-24 rounds to 1 in
    # float64, 1e-24 does not): an interval right of 0 is drawn mirrored. The CDF is written with
    # erfc because torch.special.ndtr loses the lower tail (it gives 0 at -10 in float64).
    mirror = a > 0
    lo, hi = torch.where(mirror, -b, a), torch.where(mirror, -a, b)
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    p_lo, p_hi = (0.5 * torch.special.erfc(-x / math.sqrt(2)) for x in (lo, hi))
    z = torch.special.ndtri(p_lo + u * (p_hi - p_lo)).clamp(lo, hi)
    value = (torch.where(mirror, -z, z) * std + mean).float()
    # Against rounding: keep every value inside the interval as float32 sees it.
    return torch.minimum(torch.maximum(value, low.float()), high.float())


def _shape(shape: Shape) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, int) else shape
    if not isinstance(dims, (tuple, list, torch.Size)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims
    ):
        raise ValueError(f"shape must be a non-negative int or a tuple of them, got {shape!r}")
    return tuple(dims)


def _tensor(name: str, value: Param | Sequence[float]) -> torch.Tensor:
    try:
        return torch.as_tensor(value, dtype=torch.float64, device="cpu").detach()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a number or a tensor, got {value!r}") from None


def _checked(name: str, value: Param, shape: tuple[int, ...], ok, rule: str) -> torch.Tensor:
    """``value`` as a float64 tensor of ``shape``, or a ValueError naming it and ``rule``."""
    tensor = _tensor(name, value)
    try:
        fits = torch.broadcast_shapes(tensor.shape, shape) == shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"{name} of shape {tuple(tensor.shape)} does not broadcast to shape {shape}")
    tensor = tensor.expand(shape)
    bad = tensor[~ok(tensor)]
    if len(bad):
        raise ValueError(f"{name} must be {rule}, got {bad[0].item():g}")
    return tensor


def _positive(name: str, value: Param, shape: tuple[int, ...]) -> torch.Tensor:
    return _checked(name, value, shape, lambda x: (x > 0) & x.isfinite(), "> 0 and finite")


def _finite(name: str, value: Param, shape: tuple[int, ...]) -> torch.Tensor:
    return _checked(name, value, shape, torch.isfinite, "finite")
