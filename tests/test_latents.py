"""The built-in latent distributions: sampling, priors, likelihoods, traversals, option checks.

Two proofs the InfoGAN objective rests on are here: a fixed-σ Gaussian NLL trains exactly like
mean squared error (same gradients up to a known factor), and the categorical NLL is
cross-entropy on logits, not on softmax outputs.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D
from torch import nn
from torch.nn import functional as F

from ganforge.latents import LatentDistribution, gaussian_nll
from ganforge_plugins.latents.distributions import LOG_SIGMA_MAX, LOG_SIGMA_MIN, soft_bound

from .conftest import make_host

# (registered name, size, options) covering every built-in and each likelihood mode.
CASES = [
    ("normal", 3, {}),
    ("gaussian", 2, {"sigma": "learned"}),
    ("uniform", 2, {}),
    ("uniform", 3, {"low": 0, "high": 4, "sigma": "learned"}),
    ("categorical", 10, {}),
    ("bernoulli", 4, {"p": 0.3}),
]
IDS = [f"{name}-{size}-{'-'.join(map(str, options.values())) or 'default'}" for name, size, options in CASES]


def build(name: str, size: int, **options) -> LatentDistribution:
    return make_host().latents.get(name)(size, **options)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_params(distribution: LatentDistribution, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, distribution.param_dim, generator=seeded(seed))


def test_the_builtins_are_registered_by_the_latents_plugin():
    host = make_host()
    assert host.latents.by_plugin("latents") == ["bernoulli", "categorical", "gaussian", "normal", "uniform"]
    # The noise z (latent.noise = "normal") and a Gaussian code are one class.
    assert host.latents.get("normal") is host.latents.get("gaussian")


# -- shapes and sampling -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "size", "options"), CASES, ids=IDS)
def test_shapes_of_samples_likelihoods_and_traversals(name, size, options):
    distribution = build(name, size, **options)
    assert isinstance(distribution, LatentDistribution)
    assert distribution.kind in ("categorical", "continuous", "binary")
    value = distribution.sample(5, seeded(), "cpu")
    assert value.shape == (5, distribution.input_dim) and value.dtype == torch.float32
    nll = distribution.nll(value, random_params(distribution, 5))
    assert nll.shape == (5,) and torch.isfinite(nll).all()
    traversal = distribution.traversal_values(7)
    assert traversal.dim() == 2 and traversal.shape[1] == distribution.input_dim
    assert isinstance(distribution.entropy(), float)


@pytest.mark.parametrize(("name", "size", "options"), CASES, ids=IDS)
def test_sampling_is_determined_by_the_generator_alone(name, size, options):
    distribution = build(name, size, **options)
    global_state = torch.random.get_rng_state()
    first, again = distribution.sample(64, seeded(7)), distribution.sample(64, seeded(7))
    other = distribution.sample(64, seeded(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # Nothing is drawn from torch's global generator, which model initialisation uses.
    assert torch.equal(torch.random.get_rng_state(), global_state)


def test_noise_draws_the_same_numbers_as_before_the_move_to_a_plugin():
    # Existing runs resume with the same latent stream: N(0, 1) is randn, U(a, b) is a scaled rand.
    assert torch.equal(build("normal", 4).sample(3, seeded(2)), torch.randn(3, 4, generator=seeded(2)))
    expected = torch.rand(3, 4, generator=seeded(2)) * 2.0 - 1.0
    assert torch.equal(build("uniform", 4).sample(3, seeded(2)), expected)


# -- priors --------------------------------------------------------------------------------------


def test_uniform_prior_covers_its_interval_evenly():
    value = build("uniform", 2, low=-3, high=1).sample(20_000, seeded())
    assert value.min() >= -3 and value.max() <= 1
    assert value.mean().item() == pytest.approx(-1.0, abs=0.05)
    assert value.var().item() == pytest.approx(16 / 12, rel=0.05)


def test_gaussian_prior_is_standard_normal():
    value = build("gaussian", 3).sample(20_000, seeded())
    assert value.mean().item() == pytest.approx(0.0, abs=0.03)
    assert value.std().item() == pytest.approx(1.0, rel=0.03)


def test_categorical_prior_is_one_hot_and_uniform_over_the_categories():
    value = build("categorical", 10).sample(20_000, seeded())
    assert set(value.unique().tolist()) == {0.0, 1.0} and torch.equal(value.sum(1), torch.ones(20_000))
    frequencies = value.mean(0)
    assert torch.allclose(frequencies, torch.full((10,), 0.1), atol=0.01)


def test_bernoulli_prior_is_zeros_and_ones_with_probability_p():
    value = build("bernoulli", 3, p=0.2).sample(20_000, seeded())
    assert set(value.unique().tolist()) == {0.0, 1.0}
    assert value.mean().item() == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize(("name", "size", "options", "reference"), [
    ("uniform", 3, {"low": -1, "high": 2}, D.Uniform(torch.full((3,), -1.0), torch.full((3,), 2.0))),
    ("gaussian", 3, {}, D.Normal(torch.zeros(3), torch.ones(3))),
    ("categorical", 10, {}, D.OneHotCategorical(logits=torch.zeros(10))),
    ("bernoulli", 3, {"p": 0.3}, D.Bernoulli(torch.full((3,), 0.3))),
], ids=["uniform", "gaussian", "categorical", "bernoulli"])
def test_entropy_is_the_priors(name, size, options, reference):
    assert build(name, size, **options).entropy() == pytest.approx(reference.entropy().sum().item(), rel=1e-6)


# -- likelihoods against hand computations ---------------------------------------------------------


def test_fixed_sigma_nll_is_the_gaussian_nll_with_that_sigma():
    code = build("uniform", 2, std=0.5)
    value, mean = torch.tensor([[0.3, -0.8]]), torch.tensor([[0.1, 0.2]])
    by_hand = sum(0.5 * ((v - m) / 0.5) ** 2 + math.log(0.5) + 0.5 * math.log(2 * math.pi)
                  for v, m in [(0.3, 0.1), (-0.8, 0.2)])
    assert code.nll(value, mean).item() == pytest.approx(by_hand, rel=1e-6)
    reference = -D.Normal(mean, 0.5).log_prob(value).sum(1)
    torch.testing.assert_close(code.nll(value, mean), reference)


@pytest.mark.parametrize("name", ["uniform", "gaussian"])
def test_learned_sigma_nll_is_the_gaussian_log_density_with_q_predicting_mean_then_log_sigma(name):
    code = build(name, 3, sigma="learned")
    assert code.param_dim == 6
    value = code.sample(8, seeded())
    params = random_params(code, 8)  # raw log σ in about [-2, 2]: inside the bounds
    mean, raw_log_sigma = params[:, :3], params[:, 3:]
    assert LOG_SIGMA_MIN < raw_log_sigma.min() and raw_log_sigma.max() < LOG_SIGMA_MAX
    # Q's second half is log σ through the soft bound: a smooth, increasing map of the raw output.
    expected = -D.Normal(mean, soft_bound(raw_log_sigma).exp()).log_prob(value).sum(1)
    torch.testing.assert_close(code.nll(value, params), expected)


def test_learned_log_sigma_is_softly_bounded_so_the_nll_stays_finite():
    code = build("gaussian", 1, sigma="learned")
    value, mean = torch.tensor([[0.5]]), torch.tensor([[0.0]])
    for raw, bound in [(-80.0, LOG_SIGMA_MIN), (80.0, LOG_SIGMA_MAX)]:
        params = torch.tensor([[0.0, raw]], requires_grad=True)
        nll = code.nll(value, params)
        expected = -D.Normal(mean, math.exp(bound)).log_prob(value).sum(1)
        torch.testing.assert_close(nll.detach(), expected, rtol=5e-3, atol=0)  # at the bound, within 0.001 of it
        nll.sum().backward()
        assert torch.isfinite(params.grad).all()


def test_gaussian_nll_helper_takes_a_fixed_or_a_per_sample_log_sigma():
    value, mean = torch.randn(4, 3, generator=seeded(1)), torch.randn(4, 3, generator=seeded(2))
    torch.testing.assert_close(gaussian_nll(value, mean, 0.3), gaussian_nll(value, mean, torch.full((4, 3), 0.3)))


def test_bernoulli_nll_is_binary_cross_entropy_on_logits_summed_over_columns():
    code = build("bernoulli", 4)
    value, logits = code.sample(6, seeded()), random_params(code, 6)
    torch.testing.assert_close(code.nll(value, logits), -D.Bernoulli(logits=logits).log_prob(value).sum(1))


def test_categorical_nll_of_uniform_logits_is_ln_k_so_the_information_bound_starts_at_zero():
    code = build("categorical", 10)
    value = code.sample(4, seeded())
    torch.testing.assert_close(code.nll(value, torch.zeros(4, 10)), torch.full((4,), math.log(10)))
    confident = 50.0 * value  # Q puts all its mass on the sampled category
    assert code.entropy() - code.nll(value, confident).mean().item() == pytest.approx(math.log(10), abs=1e-6)


def test_a_wrongly_sized_head_output_is_named_in_the_error():
    code = build("uniform", 2, sigma="learned")
    with pytest.raises(ValueError, match=r"params must be \(n, 4\), got \(3, 2\)"):
        code.nll(torch.zeros(3, 2), torch.zeros(3, 2))


# -- proof (a): a fixed-σ Gaussian NLL trains exactly like mean squared error ------------------------


@pytest.mark.parametrize("std", [1.0, 0.5])
def test_fixed_sigma_nll_has_the_gradients_of_mse_up_to_a_constant_factor(std):
    # Per sample, NLL = sum_d [0.5 (v - m)² / σ² + log σ + 0.5 log 2π]. Averaged over the batch,
    # with MSE = F.mse_loss = the mean over the n·size squared errors:
    #     mean_n NLL = 0.5 · size / σ² · MSE + size · (log σ + 0.5 log 2π).
    size, n = 3, 16
    code = build("uniform", size, std=std)
    factor = 0.5 * size / std**2
    value = code.sample(n, seeded())

    # The gradient with respect to the predicted mean.
    mean = torch.randn(n, size, generator=seeded(1), requires_grad=True)
    nll = code.nll(value, mean).mean()
    mse = F.mse_loss(mean, value)
    (grad_nll,) = torch.autograd.grad(nll, mean)
    (grad_mse,) = torch.autograd.grad(mse, mean)
    torch.testing.assert_close(grad_nll, factor * grad_mse)
    constant = size * (math.log(std) + 0.5 * math.log(2 * math.pi))
    assert nll.item() == pytest.approx(factor * mse.item() + constant, rel=1e-6)

    # Through a small network: every parameter's gradient is the same multiple.
    torch.manual_seed(0)
    head = nn.Linear(5, size)
    features = torch.randn(n, 5, generator=seeded(2))
    grads_nll = torch.autograd.grad(code.nll(value, head(features)).mean(), list(head.parameters()))
    grads_mse = torch.autograd.grad(F.mse_loss(head(features), value), list(head.parameters()))
    for g_nll, g_mse in zip(grads_nll, grads_mse):
        torch.testing.assert_close(g_nll, factor * g_mse)


# -- proof (b): the categorical NLL is cross-entropy on logits ------------------------------------


def test_categorical_nll_is_cross_entropy_on_logits_in_value_and_gradient():
    code = build("categorical", 10)
    value = code.sample(32, seeded())
    target = value.argmax(1)
    logits = (3.0 * torch.randn(32, 10, generator=seeded(1))).requires_grad_(True)

    nll = code.nll(value, logits)
    reference = F.cross_entropy(logits, target, reduction="none")
    torch.testing.assert_close(nll, reference)
    torch.testing.assert_close(nll, -D.OneHotCategorical(logits=logits).log_prob(value))
    (grad,) = torch.autograd.grad(nll.mean(), logits)
    (grad_reference,) = torch.autograd.grad(reference.mean(), logits)
    torch.testing.assert_close(grad, grad_reference)

    # The known public mistake: a softmax before a cross-entropy that expects logits. It computes
    # something else and trains with different (much weaker) gradients.
    mistaken = F.cross_entropy(F.softmax(logits, dim=1), target, reduction="none")
    assert not torch.allclose(nll, mistaken, atol=1e-3)
    (grad_mistaken,) = torch.autograd.grad(mistaken.mean(), logits)
    assert not torch.allclose(grad, grad_mistaken, atol=1e-4)
    assert grad_mistaken.norm() < grad.norm()


# -- traversals ----------------------------------------------------------------------------------


def test_continuous_traversal_sweeps_minus_two_to_two_in_every_column():
    for code in (build("uniform", 3), build("gaussian", 3)):
        sweep = code.traversal_values(5)
        expected = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]).unsqueeze(1).repeat(1, 3)
        torch.testing.assert_close(sweep, expected)


def test_uniform_traversal_doubles_its_interval_by_default_and_takes_a_range():
    torch.testing.assert_close(build("uniform", 1, low=0, high=1).traversal_values(3),
                               torch.tensor([[-0.5], [0.5], [1.5]]))
    torch.testing.assert_close(build("uniform", 1, traverse_range=[-1, 1]).traversal_values(3),
                               torch.tensor([[-1.0], [0.0], [1.0]]))


def test_categorical_traversal_shows_every_category_whatever_the_steps():
    assert torch.equal(build("categorical", 4).traversal_values(10), torch.eye(4))


def test_bernoulli_traversal_is_all_zeros_then_all_ones():
    assert torch.equal(build("bernoulli", 3).traversal_values(10), torch.tensor([[0.0] * 3, [1.0] * 3]))


# -- chosen values (Generator.sample(fixed=...)) -------------------------------------------------


def test_encode_turns_a_chosen_value_into_one_row_of_generator_input():
    assert torch.equal(build("categorical", 4).encode(2), torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
    assert torch.equal(build("uniform", 2).encode(0.5), torch.tensor([[0.5, 0.5]]))
    assert torch.equal(build("gaussian", 2).encode([-1, 2.5]), torch.tensor([[-1.0, 2.5]]))
    assert torch.equal(build("bernoulli", 2).encode([1, 0]), torch.tensor([[1.0, 0.0]]))


@pytest.mark.parametrize(("name", "size", "value", "message"), [
    ("categorical", 4, 4, "must be a category index from 0 to 3, got 4"),
    ("categorical", 4, 1.0, "must be a category index"),
    ("uniform", 2, [0.1], "must be a number or a list of 2 numbers"),
    ("gaussian", 1, "one", "must be a number, got 'one'"),
    ("bernoulli", 2, [0, 0.5], r"must be 0 or 1 \(or a list of 2 of them\)"),
])
def test_encode_rejects_a_value_the_distribution_cannot_take(name, size, value, message):
    with pytest.raises(ValueError, match=message):
        build(name, size).encode(value)


# -- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "size", "options", "message"), [
    ("uniform", 1, {"low": 1, "high": -1}, "high must exceed low"),
    ("uniform", 1, {"low": -1e308, "high": 1e308}, "high - low must be at most 1e6"),
    ("uniform", 1, {"low": "zero"}, "low must be a finite number, got 'zero'"),
    ("uniform", 1, {"sigma": "learnt"}, 'sigma must be "fixed" or "learned"'),
    ("uniform", 1, {"std": 0}, "std must be greater than 0"),
    ("uniform", 1, {"sigma": "learned", "std": 0.5}, 'applies only with sigma = "fixed"'),
    ("uniform", 1, {"traverse_range": [2]}, r"traverse_range must be two numbers \[from, to\]"),
    ("uniform", 1, {"sigm": "fixed"}, "unknown option 'sigm'; did you mean 'sigma'?"),
    ("gaussian", 1, {"mean": 0.0}, "unknown option 'mean'; Gaussian takes: sigma, std, traverse_range"),
    ("categorical", 1, {}, "at least 2 categories"),
    ("categorical", 10, {"sigma": "fixed"}, "unknown option 'sigma'; Categorical takes none"),
    ("bernoulli", 1, {"p": 1.0}, "p must be strictly between 0 and 1"),
    ("bernoulli", 0, {}, "size must be a positive integer"),
])
def test_bad_options_are_value_errors_that_say_what_would_be_right(name, size, options, message):
    with pytest.raises(ValueError, match=message):
        build(name, size, **options)
