"""How close two float32 computations of one quantity must be: as close as rounding lets them be.

Two computations of the same value that sum in a different order (one batched pass against
separate passes, a compiled graph against eager kernels, a fused formula against its parts) round
differently, and by how much depends on the CPU's kernels: AVX-512, AVX2 and generic code split a
reduction into differently sized blocks. A tolerance that passed on one machine says nothing about
another; one derived from the size of the quantities does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FLOAT32_EPS = torch.finfo(torch.float32).eps  # 2**-23: the spacing of float32 numbers at 1

#: How many times the typical rounding of a float32 sum two orderings may differ by. Under the
#: probabilistic model of rounding (Higham and Mary, "A new approach to probabilistic rounding
#: error analysis", SIAM J. Sci. Comput. 41(5), 2019), an n-term sum's relative error stays within
#: about lam * sqrt(n) * u, for unit roundoff u = eps / 2, with probability at least
#: 1 - 2 * n * exp(-lam**2 / 2). Two orderings then differ by at most lam * sqrt(n) * eps; at
#: lam = 8 that fails with probability below 3e-8 even for n = 1e6, and the factor of 8 also
#: absorbs what the model leaves out: roundings that do not average out (a batch norm dividing by
#: a small standard deviation magnifies them). A genuine error is still caught as long as it is
#: above 8 * sqrt(terms) * eps relatively: 1.2e-4 for terms = 16,000, 1e-5 for terms = 100.
ROUNDING_MARGIN = 8


#: The float32 operations that round on the way to the InfoGAN MNIST D's (``dcgan-28``) outputs on
#: a batch of 16: its reductions' lengths added up: conv1 1 x 16 taps, conv2 64 x 16, batch norm's
#: mean and variance over 16 x 7 x 7, the linear layer's 6,272 inputs, the head's and Q head's 1,024.
D28_FORWARD_TERMS = 10_000
#: ... and on to its first layer's gradient, over up to 48 images: back through the linear layer
#: (1,024), batch norm (2 x 784) and conv2 (128 x 16), then conv1's weight gradient, summed over
#: 48 x 14 x 14 positions.
D28_GRADIENT_TERMS = 24_000
#: The same for its generator's gradient through D: G's forward pass (its linear layers' 1,024 and
#: 6,272 inputs, batch norm over 16 x 14 x 14, the transposed convolutions' 128 x 16 and 64 x 16),
#: D's, back through both, and the weight gradients' sums over 16 x 14 x 14 positions.
G28_GRADIENT_TERMS = 50_000


def rounding_tolerance(scale: float, terms: int) -> float:
    """The absolute tolerance ``ROUNDING_MARGIN * eps(float32) * sqrt(terms) * scale``."""
    if terms < 1:
        raise ValueError(f"terms must count at least one float32 operation, not {terms}")
    return ROUNDING_MARGIN * FLOAT32_EPS * math.sqrt(terms) * scale


def assert_close_to_rounding(actual, expected, *, terms: int, scale=None, what: str = "") -> None:
    """``actual`` equals ``expected`` up to the rounding of ``terms`` float32 operations.

    ``actual`` and ``expected`` are tensors, numbers, or sequences of tensors judged together (a
    layer's weight and bias gradients, say). They pass when the norm of their difference is within
    ``rounding_tolerance(scale, terms)``; ``scale`` is the norm of ``expected`` unless given, as a
    number or as the tensors whose norm it is (the terms a difference of gradients cancelled).

    Why the norm of the whole tensor, not each element's own size (``rtol``): rounding adds to an
    element in proportion to the terms summed into it, not to the result. A gradient element near
    zero is usually a sum of large terms that cancelled, and it carries their rounding: an element
    of 1e-5 summed from terms of 1 differs between two orderings by 1e-7 or so, 1% of itself, while
    an ``rtol`` of 1e-3 asks for 1e-8. The norm of the tensor is of the size of the terms summed
    into its elements, so it bounds their rounding; cancellation in a few elements does not shrink
    it. Where every element cancels (the bias of a layer that batch norm follows has a gradient of
    0 in exact arithmetic, so it holds rounding only), judge it together with the tensor it is
    summed alongside (the layer's weight gradient), or pass ``scale`` explicitly.

    Why the norm of the difference, not the largest element's: it holds each element to the same
    absolute tolerance and more, and it does not loosen with the tensor's size (both norms grow as
    the square root of the number of elements), so a 1e-3 relative error of a million-element
    gradient is caught as surely as one of a ten-element one.

    ``terms`` is the number of float32 operations that rounded on the way to each value: a sum's
    or a matmul's reduction length (a convolution's: input channels times kernel taps; a weight
    gradient's: batch times output positions); for a chain of them (a network's forward and
    backward pass) their lengths added up, since independent roundings add in variance. Where it is
    not known exactly, give a bound that is generous and say in a comment where it comes from: a
    bound too large by 4x loosens the tolerance only 2x.

    The differences are computed in float64, so the comparison adds no rounding of its own.
    """
    actual_parts, expected_parts = _as_float64_parts(actual), _as_float64_parts(expected)
    label = f"{what}: " if what else ""
    assert len(actual_parts) == len(expected_parts), f"{label}{len(actual_parts)} tensors != {len(expected_parts)}"
    for index, (a, e) in enumerate(zip(actual_parts, expected_parts)):
        assert a.shape == e.shape, f"{label}[{index}] shape {tuple(a.shape)} != {tuple(e.shape)}"
        assert torch.isfinite(a).all() and torch.isfinite(e).all(), f"{label}[{index}] holds a non-finite value"
    difference = _norm(a - e for a, e in zip(actual_parts, expected_parts))
    size = _norm(expected_parts if scale is None else _as_float64_parts(scale))
    tolerance = rounding_tolerance(size, terms)
    if difference > tolerance:
        worst = max(((a - e).abs().max().item(), index) for index, (a, e) in enumerate(zip(actual_parts, expected_parts))
                    if a.numel())
        raise AssertionError(
            f"{label}differ by {difference:.3e} (norm of the difference), over the rounding of {terms} float32"
            f" operations on values of size {size:.3e}: {tolerance:.3e} ({difference / tolerance:.1f} times it);"
            f" largest element difference {worst[0]:.3e}, in tensor [{worst[1]}]")


def _as_float64_parts(value) -> list[torch.Tensor]:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [torch.as_tensor(part).detach().double() for part in value]
    return [torch.as_tensor(value).detach().double()]


def _norm(parts) -> float:
    return math.sqrt(sum(float(part.square().sum()) for part in parts))


def by_layer(named_tensors) -> dict[str, list[torch.Tensor]]:
    """``(name, tensor)`` pairs gathered by the layer they belong to, to be judged together. A
    layer's weight and bias gradients are sums of the same output gradients, and its running mean
    and variance of the same activations, so they share their rounding; the bias of a layer that
    batch norm follows has a gradient of 0 in exact arithmetic, rounding alone, which only its
    layer's weight gradient gives a size to."""
    layers: dict[str, list[torch.Tensor]] = {}
    for name, tensor in named_tensors:
        layers.setdefault(name.rpartition(".")[0], []).append(tensor)
    return layers
