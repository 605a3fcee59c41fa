"""The latent-distribution interface shared by the noise ``z`` and by generator codes.

The core holds only the interface and the helpers implementations share; the concrete
distributions (``normal``, ``uniform``, ``categorical``, ...) are plugins, registered through
``ganforge_register_latents`` like anyone's.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod

import torch

from .registry import did_you_mean


class LatentDistribution(ABC):
    """A distribution the generator's input is drawn from.

    A distribution knows how to sample a batch (from a ``torch.Generator``, so runs are
    reproducible), how many columns it feeds the generator (``input_dim``), how many parameters a
    recognition head must predict for it (``param_dim``), the per-sample negative log-likelihood of
    a value given such parameters, and the values to sweep when drawing a traversal.

    Subclasses are built by ``factory(size, **options)``: validate every option in ``__init__``
    and raise ``ValueError`` saying what is wrong and what would be right (recipe readers turn it
    into a one-line error naming the key); call :func:`reject_unknown_options` for ``**options``
    the constructor does not know.
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

    def sample_truncated(self, n: int, threshold: float, generator: torch.Generator,
                         device: torch.device | str = "cpu") -> torch.Tensor:
        """``n`` samples with every value within ``threshold`` of the prior's centre, for the
        truncation trick (Brock et al. 2019: fidelity for variety at sampling time). A
        distribution without a natural truncation says so."""
        raise NotImplementedError(f"{type(self).__name__} has no truncation; the truncation trick needs a normal noise")

    def nll(self, value: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Per-sample negative log-likelihood, shape (n,), of ``value`` (n, input_dim) under
        ``params`` (n, param_dim), the recognition head's raw outputs for this distribution.

        Summed over the distribution's dimensions, never averaged, so that it is a log-likelihood
        of the whole code and ``entropy() - nll`` bounds the mutual information.
        """
        raise NotImplementedError(f"{type(self).__name__} has no likelihood; it can only be sampled")

    def traversal_values(self, steps: int) -> torch.Tensor:
        """Values to sweep in a traversal picture, shape (columns, input_dim).

        Usually ``columns == steps``; a distribution with finitely many values (a categorical
        code) may return all of them instead.
        """
        raise NotImplementedError(f"{type(self).__name__} has no traversal")

    def entropy(self) -> float | None:
        """The prior's entropy in nats when it is finite and known (for the ``H(c) - NLL`` bound)."""
        return None

    def encode(self, value) -> torch.Tensor:
        """A value a user chose, as one row of generator input, shape (1, input_dim).

        Holds a code fixed when sampling (``Generator.sample(fixed=...)``). The default takes a
        number (the same in every column) or a list of ``size`` numbers; a distribution whose
        input is not the value itself (one-hot, an angle's cosine and sine) overrides it. Raises
        ``ValueError`` for a value the distribution cannot take.
        """
        if self.input_dim != self.size:
            name = type(self).__name__
            raise NotImplementedError(f"{name} feeds {self.input_dim} columns for {self.size} values; define {name}.encode")
        return numbers_row(value, self.size)

    def describe(self) -> str:
        """One line for banners and messages, e.g. ``Bernoulli(size=2, p=0.5)``."""
        return f"{type(self).__name__}(size={self.size})"

    def __repr__(self) -> str:
        return self.describe()


def gaussian_nll(value: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor | float) -> torch.Tensor:
    """Per-sample NLL of ``value`` under independent Gaussians, summed over dimension 1.

    ``value`` and ``mean`` are (n, d); ``log_sigma`` is (n, d) or a float (a fixed σ). Equal to
    ``-torch.distributions.Normal(mean, exp(log_sigma)).log_prob(value).sum(1)``, written out so
    that a fixed σ costs no tensor and so that it is visibly a scaled squared error plus constants.
    """
    if isinstance(log_sigma, (int, float)):
        inverse_variance = math.exp(-2.0 * log_sigma)
    else:
        inverse_variance = torch.exp(-2.0 * log_sigma)
    per_dim = 0.5 * (value - mean).pow(2) * inverse_variance + log_sigma + 0.5 * math.log(2 * math.pi)
    return per_dim.sum(dim=1)


def reject_unknown_options(distribution: type, options: dict) -> None:
    """Raise ``ValueError`` when ``options`` is not empty: the unknown names, a "did you mean" and
    the options ``distribution`` takes.

    Call it from a constructor that collects ``**options``. The options it takes are read from the
    keyword parameters of ``distribution.__init__`` (other than ``size``), so the message cannot go
    stale.
    """
    if not options:
        return
    parameters = inspect.signature(distribution.__init__).parameters.values()
    allowed = [p.name for p in parameters if p.name not in ("self", "size") and p.kind is not p.VAR_KEYWORD]
    unknown = sorted(options)
    hint = did_you_mean(unknown[0], allowed) if len(unknown) == 1 else ""
    plural = "s" if len(unknown) > 1 else ""
    takes = f"{distribution.__name__} takes: {', '.join(allowed)}" if allowed else f"{distribution.__name__} takes none"
    raise ValueError(f"unknown option{plural} {', '.join(map(repr, unknown))};{hint} {takes}")


def numbers_row(value, size: int) -> torch.Tensor:
    """``value`` (a number, or a list of ``size`` numbers) as a float row of shape (1, size)."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.dim() == 0 else value.flatten().tolist()
    numbers = list(value) if isinstance(value, (list, tuple)) else [value] * size
    finite = all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in numbers)
    if len(numbers) != size or not finite:
        expected = "a number" if size == 1 else f"a number or a list of {size} numbers"
        raise ValueError(f"must be {expected}, got {value!r}")
    return torch.tensor([numbers], dtype=torch.float32)
