"""The suite's rounding tolerance passes the same sums taken in another order and catches genuine
differences as small as 1e-3 relative."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from .tolerance import assert_close_to_rounding, rounding_tolerance

ROWS = 8


def products(terms: int, kind: str, seed: int) -> torch.Tensor:
    """``ROWS`` rows of ``terms`` float32 products to sum; the last row cancels to 0 exactly."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "normal":  # zero-mean terms: every sum cancels partly
        rows = torch.randn(ROWS, terms, generator=generator)
    else:  # positive terms: partial sums grow, the hard case for a sequential sum
        rows = torch.rand(ROWS, terms, generator=generator)
    half = rows[-1, : terms // 2]
    rows[-1] = torch.cat([half, -half, torch.zeros(terms % 2)])[torch.randperm(terms, generator=generator)]
    return rows


def sequential_sum(rows: torch.Tensor) -> torch.Tensor:
    """One float32 addition after another, left to right."""
    total = torch.zeros(len(rows))
    for column in rows.T:
        total = total + column
    return total


def chunked_sum(rows: torch.Tensor, chunk: int) -> torch.Tensor:
    """Sums of ``chunk`` terms each, added up one after another (a blocked kernel's order)."""
    padded = F.pad(rows, (0, -rows.shape[1] % chunk))
    return sequential_sum(padded.view(len(rows), -1, chunk).sum(2))


def pairwise_sum(rows: torch.Tensor) -> torch.Tensor:
    """Neighbours added pairwise in float32, level by level (a tree reduction's order)."""
    while rows.shape[1] > 1:
        rows = F.pad(rows, (0, rows.shape[1] % 2)).view(len(rows), -1, 2).sum(2)
    return rows[:, 0]


@pytest.mark.parametrize("kind", ["normal", "positive"])
@pytest.mark.parametrize("terms", [10, 1_000, 100_000])
def test_the_same_float32_sums_in_other_orders_pass(terms, kind):
    rows = products(terms, kind, seed=terms)
    exact = rows.double().sum(1)
    shuffled = rows[:, torch.randperm(terms, generator=torch.Generator().manual_seed(1))]
    orders = {"torch.sum": rows.sum(1), "shuffled": shuffled.sum(1), "chunks of 7": chunked_sum(shuffled, 7),
              "chunks of 128": chunked_sum(rows, max(1, terms // 128)), "pairwise": pairwise_sum(shuffled)}
    if terms <= 1_000:
        orders["sequential"] = sequential_sum(shuffled)
    for name, value in orders.items():
        assert value.dtype == torch.float32
        assert_close_to_rounding(value, exact, terms=terms, what=f"{name} against float64")
        assert_close_to_rounding(value, orders["torch.sum"], terms=terms, what=f"{name} against torch.sum")


def test_a_row_that_cancels_to_zero_is_judged_by_the_size_of_the_whole_result():
    """The last row's exact sum is 0: in float32 it holds rounding alone, which an element-wise
    relative tolerance would call a 100% error."""
    rows = products(100_000, "normal", seed=3)
    shuffled = rows[:, torch.randperm(rows.shape[1], generator=torch.Generator().manual_seed(4))]
    assert rows.double().sum(1)[-1] == 0
    in_pairs = pairwise_sum(shuffled)
    assert in_pairs[-1] != 0  # rounding only: an infinite error relative to the exact 0
    assert_close_to_rounding(in_pairs, rows.sum(1), terms=rows.shape[1])
    assert_close_to_rounding(shuffled[-1].sum(), torch.zeros(()), terms=rows.shape[1], scale=rows.sum(1).norm())


@pytest.mark.parametrize("terms", [100, 16_000])
def test_a_relative_error_of_1e_3_fails(terms):
    rows = products(terms, "normal", seed=5)
    value = rows.sum(1)
    with pytest.raises(AssertionError, match="over the rounding"):
        assert_close_to_rounding(value * (1 + 1e-3), value, terms=terms)
    # One element off by 1e-3 of the result's size fails too.
    nudged = value.clone()
    nudged[0] += 1e-3 * value.norm()
    with pytest.raises(AssertionError, match=r"in tensor \[0\]"):
        assert_close_to_rounding(nudged, value, terms=terms)


def batch_norm_by_hand(images: torch.Tensor, unbiased: bool) -> torch.Tensor:
    mean = images.mean((0, 2, 3), keepdim=True)
    variance = images.var((0, 2, 3), keepdim=True, unbiased=unbiased)
    return (images - mean) / (variance + 1e-5).sqrt()


def test_a_batch_norm_with_the_unbiased_variance_fails_and_the_right_formula_passes():
    """A real slip: batch norm normalises by the biased variance (the mean of squares over N);
    ``var()``'s default divides by N - 1, off by 1/(2N) = 1e-3 relatively for N = 500 values per
    channel, in the output and in its gradient."""
    images = torch.randn(20, 3, 5, 5, generator=torch.Generator().manual_seed(6), requires_grad=True)
    upstream = torch.randn(20, 3, 5, 5, generator=torch.Generator().manual_seed(7))
    reference = F.batch_norm(images, None, None, training=True)
    (reference_grad,) = torch.autograd.grad((reference * upstream).sum(), images)
    terms = 3 * 500  # per channel: the mean's sum, the variance's, the gradient's two sums over N
    for unbiased in (False, True):
        output = batch_norm_by_hand(images, unbiased)
        (grad,) = torch.autograd.grad((output * upstream).sum(), images)
        if unbiased:
            with pytest.raises(AssertionError):
                assert_close_to_rounding(output, reference, terms=terms)
            with pytest.raises(AssertionError):
                assert_close_to_rounding(grad, reference_grad, terms=terms)
        else:
            assert_close_to_rounding(output, reference, terms=terms)
            assert_close_to_rounding(grad, reference_grad, terms=terms)


def test_tensors_judged_together_share_the_scale_of_all_of_them():
    """A bias gradient that is 0 in exact arithmetic, judged with its layer's weight gradient:
    rounding-sized noise in it passes; alone, against its own size, it would not."""
    weight = torch.randn(64, 32, generator=torch.Generator().manual_seed(8))
    bias = torch.full((64,), 1e-7)
    noisy_bias = bias + torch.randn(64, generator=torch.Generator().manual_seed(9)) * 1e-7
    assert_close_to_rounding([weight, noisy_bias], [weight, bias], terms=100)
    with pytest.raises(AssertionError, match="over the rounding"):
        assert_close_to_rounding(noisy_bias, bias, terms=100)


def test_mismatched_shapes_non_finite_values_and_no_terms_are_refused():
    with pytest.raises(AssertionError, match="shape"):
        assert_close_to_rounding(torch.zeros(3), torch.zeros(4), terms=1)
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close_to_rounding(torch.tensor([float("nan")]), torch.zeros(1), terms=1)
    with pytest.raises(ValueError, match="at least one"):
        rounding_tolerance(1.0, 0)
    assert_close_to_rounding(1.0 + 1e-7, 1.0, terms=1)  # plain numbers too
