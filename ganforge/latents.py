"""The latent-distribution interface shared by the noise ``z`` and by generator codes."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch


class LatentDistribution(ABC):
    """A distribution the generator's input is drawn from.

    A distribution knows how to sample a batch (from a ``torch.Generator``, so runs are
    reproducible), how many columns it feeds the generator (``input_dim``), how many parameters a
    recognition head must predict for it (``param_dim``), the per-sample negative log-likelihood of
    a value given such parameters, and the values to sweep when drawing a traversal.
    """

    #: "categorical", "continuous" or "binary": how pictures and evaluations treat the code.
    kind: str = "continuous"

    def __init__(self, size: int):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.size = size

    @property
    def input_dim(self) -> int:
        """Columns this distribution contributes to the generator's input."""
        return self.size

    @property
    def param_dim(self) -> int:
        """Parameters a recognition head predicts for one sample of this distribution."""
        return self.size

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        """``n`` samples of shape (n, input_dim), drawn with ``generator`` (on the CPU, then moved)."""

    def nll(self, value: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Per-sample negative log-likelihood (shape (n,)) of ``value`` under ``params``."""
        raise NotImplementedError(f"{type(self).__name__} has no likelihood; it can only be sampled")

    def traversal_values(self, steps: int) -> torch.Tensor:
        """Values to sweep in a traversal picture, shape (steps, input_dim)."""
        raise NotImplementedError(f"{type(self).__name__} has no traversal")

    def entropy(self) -> float | None:
        """The prior's entropy in nats when it is finite and known (for the ``H(c) - NLL`` bound)."""
        return None

    def describe(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class Normal(LatentDistribution):
    """N(0, 1) noise, the classic DCGAN ``z``."""

    def sample(self, n, generator, device="cpu"):
        return torch.randn(n, self.size, generator=generator).to(device)

    def entropy(self):
        return 0.5 * self.size * math.log(2 * math.pi * math.e)


class Uniform(LatentDistribution):
    """U(low, high) noise, as the InfoGAN reference code draws ``z``."""

    def __init__(self, size: int, low: float = -1.0, high: float = 1.0):
        super().__init__(size)
        if not high > low:
            raise ValueError(f"high must exceed low, got low={low!r} high={high!r}")
        self.low, self.high = float(low), float(high)

    def sample(self, n, generator, device="cpu"):
        return (torch.rand(n, self.size, generator=generator) * (self.high - self.low) + self.low).to(device)

    def entropy(self):
        return self.size * math.log(self.high - self.low)
