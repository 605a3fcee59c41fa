"""The seeded samplers of ganforge.sampling: reproducible, leaving torch's global RNG alone, and
drawing from the right distributions (Kolmogorov-Smirnov tests against scipy at fixed seeds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import distributions as D

from ganforge.sampling import beta, dirichlet, drawing_from, gamma, truncated_normal, von_mises

N = 20_000
# A fixed seed, so a failure is a real one: at a true distribution a p-value under this threshold
# happens one time in a thousand, and the seeds below are not among those times.
P_MIN = 1e-3

# Each helper with typical arguments, called as draw(shape, generator).
HELPERS = {
    "gamma": lambda shape, g: gamma(shape, 2.5, rate=3.0, generator=g),
    "beta": lambda shape, g: beta(shape, 0.5, 2.0, generator=g),
    "dirichlet": lambda n, g: dirichlet(n, [0.5, 1.0, 3.0], generator=g),
    "von_mises": lambda shape, g: von_mises(shape, 1.0, 2.0, generator=g),
    "truncated_normal": lambda shape, g: truncated_normal(shape, -1.0, 2.0, mean=0.5, std=1.5, generator=g),
}
each_helper = pytest.mark.parametrize("draw", HELPERS.values(), ids=HELPERS.keys())


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ks_pvalue(samples: torch.Tensor, cdf) -> float:
    return stats.kstest(samples.double().flatten().numpy(), cdf).pvalue


def wrapped(angle: torch.Tensor) -> torch.Tensor:
    """``angle`` in [-pi, pi)."""
    return torch.remainder(angle.double() + math.pi, 2 * math.pi) - math.pi


# Reproducibility and the global RNG.


@each_helper
def test_the_same_seed_gives_the_same_values_whatever_the_global_rng(draw):
    first = draw(50, seeded(7))
    torch.rand(13)  # moves the global generator on: it must not matter
    assert torch.equal(first, draw(50, seeded(7)))


@each_helper
def test_successive_calls_from_one_generator_differ(draw):
    generator = seeded(7)
    assert not torch.equal(draw(50, generator), draw(50, generator))


@each_helper
def test_a_helper_leaves_the_global_rng_state_as_it_was(draw):
    before = torch.get_rng_state()
    draw(50, seeded(1))
    assert torch.equal(torch.get_rng_state(), before)


def test_drawing_inside_the_block_does_not_change_what_torch_rand_gives_afterwards():
    state = torch.get_rng_state()
    expected = torch.rand(5)
    torch.set_rng_state(state)
    with drawing_from(seeded(2)):
        torch.rand(100)
        D.Gamma(torch.tensor(2.0), torch.tensor(1.0)).sample((10,))
    assert torch.equal(torch.rand(5), expected)


def test_draws_inside_the_block_come_from_the_generator_alone():
    with drawing_from(seeded(3)):
        first = (torch.rand(4), D.Beta(torch.tensor(2.0), torch.tensor(3.0)).rsample((4,)))
    torch.rand(13)
    with drawing_from(seeded(3)):
        second = (torch.rand(4), D.Beta(torch.tensor(2.0), torch.tensor(3.0)).rsample((4,)))
    with drawing_from(seeded(4)):
        other = torch.rand(4)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], other)


def test_the_generator_advances_by_exactly_one_draw_per_block():
    generator, reference = seeded(5), seeded(5)
    with drawing_from(generator):
        torch.rand(1000)
    torch.randint(0, 2**62, (1,), generator=reference)
    assert torch.equal(generator.get_state(), reference.get_state())
    # However much the block draws: drawing nothing leaves the generator in the same state.
    idle = seeded(5)
    with drawing_from(idle):
        pass
    assert torch.equal(idle.get_state(), generator.get_state())


# What comes back.


@pytest.mark.parametrize("shape", [7, (3, 4), ()], ids=["int", "tuple", "scalar"])
@pytest.mark.parametrize("name", [name for name in HELPERS if name != "dirichlet"])
def test_a_helper_returns_float32_of_the_requested_shape_on_the_cpu(name, shape):
    value = HELPERS[name](shape, seeded())
    expected = (shape,) if isinstance(shape, int) else shape
    assert (value.dtype, tuple(value.shape), value.device.type) == (torch.float32, expected, "cpu")


def test_dirichlet_returns_n_rows_of_k_float32_probabilities_on_the_cpu():
    value = dirichlet(6, torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64), generator=seeded())
    assert (value.dtype, tuple(value.shape), value.device.type) == (torch.float32, (6, 4), "cpu")
    assert (value > 0).all()
    torch.testing.assert_close(value.sum(1), torch.ones(6))


def test_tensor_parameters_broadcast_to_the_shape():
    concentration = torch.tensor([0.5, 1.0, 2.0, 40.0])
    value = gamma((N // 4, 4), concentration, rate=torch.tensor(2.0), generator=seeded())
    assert value.shape == (N // 4, 4)
    torch.testing.assert_close(value.mean(0), concentration / 2, rtol=0.05, atol=0)


# Distributions, against scipy.stats.


@pytest.mark.parametrize("concentration, rate", [(2.5, 3.0), (0.3, 1.0), (50.0, 0.5)])
def test_gamma_follows_the_gamma_distribution(concentration, rate):
    value = gamma(N, concentration, rate, generator=seeded(10))
    assert (value > 0).all()
    assert ks_pvalue(value, stats.gamma(a=concentration, scale=1 / rate).cdf) > P_MIN


@pytest.mark.parametrize("a, b", [(0.5, 2.0), (2.0, 2.0), (5.0, 0.8)])
def test_beta_follows_the_beta_distribution(a, b):
    value = beta(N, a, b, generator=seeded(11))
    assert ((value >= 0) & (value <= 1)).all()
    assert ks_pvalue(value, stats.beta(a, b).cdf) > P_MIN


def test_values_float32_would_round_onto_the_edge_of_the_support_stay_inside_it():
    # At these concentrations about a third of the float64 draws round to 0 or 1 in float32.
    assert (gamma(1000, 0.01, generator=seeded(17)) > 0).all()
    value = beta(1000, 0.05, 0.05, generator=seeded(17))
    assert ((value > 0) & (value < 1)).all()
    value = dirichlet(1000, [0.05, 0.05], generator=seeded(17))
    assert ((value > 0) & (value < 1)).all()


def test_each_dirichlet_component_follows_its_beta_marginal():
    alpha = np.array([0.5, 1.0, 3.0])
    value = dirichlet(N, alpha.tolist(), generator=seeded(12))
    for i, alpha_i in enumerate(alpha):
        assert ks_pvalue(value[:, i], stats.beta(alpha_i, alpha.sum() - alpha_i).cdf) > P_MIN, i


@pytest.mark.parametrize("loc, concentration", [(1.0, 2.0), (3.0, 5.0), (-2.0, 0.05), (0.0, 300.0)])
def test_von_mises_follows_the_von_mises_distribution(loc, concentration):
    value = von_mises(N, loc, concentration, generator=seeded(13))
    assert ((value > -math.pi) & (value <= math.pi)).all()  # in float32, as the values are
    # scipy's CDF is that of the angle from loc, unwrapped: compare the centred angles.
    assert ks_pvalue(wrapped(value - loc), stats.vonmises(kappa=concentration).cdf) > P_MIN


def test_von_mises_with_no_concentration_is_uniform_on_the_circle():
    value = von_mises((N, 2), 1.0, torch.tensor([0.0, 4.0]), generator=seeded(14))
    assert ((value > -math.pi) & (value <= math.pi)).all()
    assert ks_pvalue(value[:, 0], stats.uniform(loc=-math.pi, scale=2 * math.pi).cdf) > P_MIN
    assert ks_pvalue(wrapped(value[:, 1] - 1.0), stats.vonmises(kappa=4.0).cdf) > P_MIN


@pytest.mark.parametrize("low, high, mean, std", [
    (-1.0, 2.0, 0.5, 1.5),
    (4.0, 6.0, 0.0, 1.0),  # the far upper tail
    (-6.0, -4.0, 0.0, 1.0),  # the far lower tail
    (-math.inf, 0.2, 1.0, 0.5),
    (0.0, 1.0, 8.0, 1.0),  # all of it many sigmas below the mean
])
def test_truncated_normal_follows_the_truncated_normal_inside_its_interval(low, high, mean, std):
    value = truncated_normal(N, low, high, mean=mean, std=std, generator=seeded(15))
    assert ((value >= low) & (value <= high)).all()
    a, b = (low - mean) / std, (high - mean) / std
    assert ks_pvalue(value, stats.truncnorm(a, b, loc=mean, scale=std).cdf) > P_MIN


def test_truncated_normal_stays_inside_an_interval_far_out_in_the_tail():
    value = truncated_normal(1000, 10.0, 10.5, generator=seeded(16))
    assert ((value >= 10.0) & (value <= 10.5)).all()
    assert value.min() < 10.01 and value.max() > 10.05  # not piled up on one end


# Invalid arguments.


@pytest.mark.parametrize("call, message", [
    (lambda g: gamma(3, -1, generator=g), "concentration must be > 0 and finite, got -1"),
    (lambda g: gamma(3, 1.0, rate=0.0, generator=g), "rate must be > 0 and finite, got 0"),
    (lambda g: gamma(3, torch.tensor([1.0, -2.0, 3.0]), generator=g), "concentration must be > 0 and finite, got -2"),
    (lambda g: gamma(3, torch.ones(4), generator=g), r"concentration of shape \(4,\) does not broadcast to shape \(3,\)"),
    (lambda g: gamma(3, "two", generator=g), "concentration must be a number or a tensor, got 'two'"),
    (lambda g: gamma(-2, 1.0, generator=g), "shape must be a non-negative int or a tuple of them, got -2"),
    (lambda g: gamma((2, 2.5), 1.0, generator=g), r"shape must be .*, got \(2, 2.5\)"),
    (lambda g: beta(3, 0.0, 1.0, generator=g), "^a must be > 0 and finite, got 0"),
    (lambda g: beta(3, 1.0, math.nan, generator=g), "^b must be > 0 and finite, got nan"),
    (lambda g: dirichlet(-1, [1.0, 2.0], generator=g), "n must be a non-negative int, got -1"),
    (lambda g: dirichlet(3, [1.0, -2.0], generator=g), "concentration must be > 0 and finite, got -2"),
    (lambda g: dirichlet(3, [], generator=g), r"concentration must be a sequence or 1-D tensor .* got shape \(0,\)"),
    (lambda g: dirichlet(3, [[1.0, 2.0]], generator=g), r"concentration must be a sequence or 1-D tensor .* got shape \(1, 2\)"),
    (lambda g: von_mises(3, 0.0, -0.5, generator=g), "concentration must be >= 0 and finite, got -0.5"),
    (lambda g: von_mises(3, math.inf, 1.0, generator=g), "loc must be finite, got inf"),
    (lambda g: truncated_normal(3, 1.0, 1.0, generator=g), "low must be < high, got low=1, high=1"),
    (lambda g: truncated_normal(3, math.nan, 1.0, generator=g), "low must be a number, got nan"),
    (lambda g: truncated_normal(3, 0.0, 1.0, std=-1.0, generator=g), "std must be > 0 and finite, got -1"),
    (lambda g: truncated_normal(3, 0.0, 1.0, mean=math.inf, generator=g), "mean must be finite, got inf"),
])
def test_an_invalid_argument_is_a_value_error_naming_it(call, message):
    with pytest.raises(ValueError, match=message):
        call(seeded())
