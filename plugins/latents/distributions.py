"""Built-in latent distributions, registered through the same hook as anyone's.

| name          | prior                   | generator input  | Q predicts                          |
|---------------|-------------------------|------------------|-------------------------------------|
| `normal`      | N(0, 1)                 | the value        | the mean (and log σ when learned)   |
| `gaussian`    | N(0, 1), same class     | the value        | the mean (and log σ when learned)   |
| `uniform`     | U(low, high)            | the value        | the mean (and log σ when learned)   |
| `categorical` | uniform over ``size``   | one-hot          | ``size`` logits                     |
| `bernoulli`   | Bernoulli(p) per column | 0 or 1           | one logit per column                |

Continuous codes are scored as Gaussians, as the InfoGAN reference code does for uniform codes
too: with a fixed σ the NLL is a scaled squared error plus a constant, with a learned σ it is the
richer Gaussian likelihood. Every option is checked here, so a recipe mistake is a message.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ganforge import hookimpl
from ganforge.latents import LatentDistribution, gaussian_nll, numbers_row, reject_unknown_options
from ganforge.sampling import truncated_normal

SIGMA_MODES = ("fixed", "learned")
# Bounds on a learned log σ (σ from 0.0067 to 7.4): a head that predicts a tiny σ early in training
# would otherwise scale the squared error by 1/σ² without limit, and exp() of a large output
# overflows. The bounds are soft (softplus on both sides): log σ is a smooth increasing function
# of the head's output, whose gradient shrinks near and beyond the bounds but never vanishes, so a
# head pushed out can always come back (a hard clamp gives it no gradient at all there).
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -5.0, 2.0


def soft_bound(raw: torch.Tensor, low: float = LOG_SIGMA_MIN, high: float = LOG_SIGMA_MAX) -> torch.Tensor:
    """``raw`` squeezed smoothly into (low - 0.001, high) (for bounds 7 apart), increasing, with a gradient everywhere
    (softplus from below, then from above)."""
    above_low = low + F.softplus(raw - low)
    return high - F.softplus(high - above_low)


# -- option checks: messages say what is wrong and what would be right ------------------------------


def _real(option: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{option} must be a finite number, got {value!r}")
    return float(value)


def _positive(option: str, value) -> float:
    number = _real(option, value)
    if number <= 0:
        raise ValueError(f"{option} must be greater than 0, got {value!r}")
    return number


def _range(option: str, value) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{option} must be two numbers [from, to], e.g. [-2.0, 2.0], got {value!r}")
    start, end = _real(f"{option}[0]", value[0]), _real(f"{option}[1]", value[1])
    if start == end:
        raise ValueError(f"{option} must sweep from one value to a different one, got {value!r}")
    return start, end


def _check_width(distribution: LatentDistribution, tensor: torch.Tensor, width: int, what: str) -> None:
    if tensor.dim() != 2 or tensor.shape[1] != width:
        raise ValueError(f"{distribution.describe()}: {what} must be (n, {width}), got {tuple(tensor.shape)}")


def _sweep(start: float, end: float, steps: int, size: int) -> torch.Tensor:
    """``steps`` evenly spaced values from ``start`` to ``end``, the same in every column."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return torch.linspace(start, end, steps).unsqueeze(1).repeat(1, size)


# -- continuous codes ----------------------------------------------------------------------------


class GaussianScored(LatentDistribution):
    """A continuous distribution whose values a recognition head scores as Gaussians.

    ``sigma = "fixed"``: Q predicts only the mean (``param_dim = size``) and σ is the ``std``
    option (default 1.0), so the NLL is ``0.5 * |value - mean|² / std²`` plus a constant.
    ``sigma = "learned"``: Q predicts the mean, then log σ (``param_dim = 2 * size``, in that
    order); log σ is softly bounded to (LOG_SIGMA_MIN, LOG_SIGMA_MAX) by :func:`soft_bound`.
    """

    kind = "continuous"

    def __init__(self, size: int, sigma: str, std: float | None, traverse_range, default_range: tuple[float, float]):
        super().__init__(size)
        if sigma not in SIGMA_MODES:
            raise ValueError(f'sigma must be "fixed" or "learned", got {sigma!r}')
        if sigma == "learned" and std is not None:
            raise ValueError('std is the fixed σ; it applies only with sigma = "fixed" (Q predicts σ when "learned")')
        self.sigma = sigma
        self.std = 1.0 if std is None else _positive("std", std)
        self.traverse_range = default_range if traverse_range is None else _range("traverse_range", traverse_range)

    @property
    def param_dim(self) -> int:
        return 2 * self.size if self.sigma == "learned" else self.size

    def split_params(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Q's raw outputs as (mean, log σ): log σ softly bounded when learned, a float when fixed."""
        _check_width(self, params, self.param_dim, "params")
        if self.sigma == "fixed":
            return params, math.log(self.std)
        mean, log_sigma = params.split(self.size, dim=1)
        return mean, soft_bound(log_sigma)

    def nll(self, value, params):
        _check_width(self, value, self.input_dim, "value")
        mean, log_sigma = self.split_params(params)
        return gaussian_nll(value, mean, log_sigma)

    def traversal_values(self, steps):
        # A code of size k is one code: every column sweeps together. Declare k codes of size 1 to
        # see each column on its own.
        return _sweep(*self.traverse_range, steps, self.size)

    def _likelihood(self) -> str:
        return f"sigma={self.sigma}" + (f", std={self.std:g}" if self.sigma == "fixed" else "")


class Uniform(GaussianScored):
    """U(low, high) in every column (default U(-1, 1), the InfoGAN paper's continuous codes).

    The traversal sweeps twice the prior's interval around its centre by default (-2 to 2 for
    U(-1, 1), as the paper's figures do); ``traverse_range = [from, to]`` sets it.
    """

    def __init__(self, size: int, low: float = -1.0, high: float = 1.0, sigma: str = "fixed",
                 std: float | None = None, traverse_range=None, **options):
        reject_unknown_options(type(self), options)
        low, high = _real("low", low), _real("high", high)
        if not high > low:
            raise ValueError(f"high must exceed low, got low={low!r} high={high!r}")
        if not math.isfinite(high - low) or high - low > 1e6:
            # A wider range overflows float32 samples and squared errors: a NaN many steps later.
            raise ValueError(f"high - low must be at most 1e6, got low={low!r} high={high!r}")
        centre, width = (low + high) / 2, high - low
        super().__init__(size, sigma, std, traverse_range, (centre - width, centre + width))
        self.low, self.high = low, high

    def sample(self, n, generator, device="cpu"):
        return (torch.rand(n, self.size, generator=generator) * (self.high - self.low) + self.low).to(device)

    def entropy(self):
        return self.size * math.log(self.high - self.low)

    def describe(self):
        return f"Uniform(size={self.size}, low={self.low:g}, high={self.high:g}, {self._likelihood()})"


class Gaussian(GaussianScored):
    """N(0, 1) in every column: the classic DCGAN noise ``z`` (registered as ``normal``) and a
    Gaussian code (registered as ``gaussian``). The traversal sweeps -2 to 2 by default.

    ``std`` is the fixed σ of the likelihood Q is scored with, not the prior's, which is always 1.
    """

    def __init__(self, size: int, sigma: str = "fixed", std: float | None = None, traverse_range=None, **options):
        reject_unknown_options(type(self), options)
        super().__init__(size, sigma, std, traverse_range, (-2.0, 2.0))

    def sample(self, n, generator, device="cpu"):
        return torch.randn(n, self.size, generator=generator).to(device)

    def sample_truncated(self, n, threshold, generator, device="cpu"):
        """N(0, 1) conditioned on [-threshold, threshold] in every column (BigGAN's truncation)."""
        return truncated_normal((n, self.size), -threshold, threshold, generator=generator).to(device)

    def entropy(self):
        return 0.5 * self.size * math.log(2 * math.pi * math.e)

    def describe(self):
        return f"Gaussian(size={self.size}, {self._likelihood()})"


# -- discrete codes ------------------------------------------------------------------------------


class Categorical(LatentDistribution):
    """One of ``size`` categories, uniformly, fed to the generator one-hot.

    Q predicts ``size`` logits and the NLL is the cross-entropy on those logits: no softmax first,
    which would squash the logits and shrink the gradient (a known mistake in public ports).
    """

    kind = "categorical"

    def __init__(self, size: int, **options):
        reject_unknown_options(type(self), options)
        super().__init__(size)
        if size < 2:
            raise ValueError(f"a categorical code needs at least 2 categories: size must be 2 or more, got {size}")

    def sample(self, n, generator, device="cpu"):
        categories = torch.randint(0, self.size, (n,), generator=generator)
        return F.one_hot(categories, self.size).float().to(device)

    def nll(self, value, params):
        _check_width(self, value, self.size, "value")
        _check_width(self, params, self.size, "params (logits)")
        return F.cross_entropy(params, value.argmax(dim=1), reduction="none")

    def traversal_values(self, steps):
        # Every category once, whatever ``steps`` asks for: sweeping between one-hot vectors would
        # show inputs the generator never sees.
        return torch.eye(self.size)

    def entropy(self):
        return math.log(self.size)

    def encode(self, value):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.size:
            raise ValueError(f"must be a category index from 0 to {self.size - 1}, got {value!r}")
        return F.one_hot(torch.tensor([value]), self.size).float()


class Bernoulli(LatentDistribution):
    """Independent 0/1 columns, each 1 with probability ``p`` (default 0.5).

    Q predicts one logit per column; the NLL is the binary cross-entropy on logits, summed.
    """

    kind = "binary"

    def __init__(self, size: int, p: float = 0.5, **options):
        reject_unknown_options(type(self), options)
        super().__init__(size)
        self.p = _real("p", p)
        if not 0 < self.p < 1:
            raise ValueError(f"p must be strictly between 0 and 1 (a probability of a 1), got {p!r}")

    def sample(self, n, generator, device="cpu"):
        return (torch.rand(n, self.size, generator=generator) < self.p).float().to(device)

    def nll(self, value, params):
        _check_width(self, value, self.size, "value")
        _check_width(self, params, self.size, "params (logits)")
        return F.binary_cross_entropy_with_logits(params, value, reduction="none").sum(dim=1)

    def traversal_values(self, steps):
        # The only two values a column takes; every column switches together.
        return torch.stack([torch.zeros(self.size), torch.ones(self.size)])

    def entropy(self):
        p = self.p
        return -self.size * (p * math.log(p) + (1 - p) * math.log(1 - p))

    def encode(self, value):
        row = numbers_row(value, self.size)
        if not ((row == 0) | (row == 1)).all():
            expected = "0 or 1" if self.size == 1 else f"0 or 1 (or a list of {self.size} of them)"
            raise ValueError(f"must be {expected}, got {value!r}")
        return row

    def describe(self):
        return f"Bernoulli(size={self.size}, p={self.p:g})"


@hookimpl
def ganforge_register_latents(register):
    register("normal", Gaussian)
    register("gaussian", Gaussian)
    register("uniform", Uniform)
    register("categorical", Categorical)
    register("bernoulli", Bernoulli)
