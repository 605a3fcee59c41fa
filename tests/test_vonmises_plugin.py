"""The example third-party plugin of docs/writing-a-latent-plugin.md, installed and used for real.

``make test`` installs it (``pip install -e docs/examples/ganforge-vonmises``); elsewhere the tests
that need it are skipped, saying how to install it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re

import pytest
import torch
from torch import distributions as D

from ganforge.latents import LatentDistribution
from ganforge.pluginmanager import make_plugin_host

from .conftest import REPO, run_tiny

EXAMPLE = REPO / "docs" / "examples" / "ganforge-vonmises"
GUIDE = REPO / "docs" / "writing-a-latent-plugin.md"
NOT_INSTALLED = "the example plugin is not installed: pip install -e docs/examples/ganforge-vonmises"
needs_the_package = pytest.mark.skipif(importlib.util.find_spec("ganforge_vonmises") is None, reason=NOT_INSTALLED)


@pytest.fixture
def von_mises():
    """The VonMises class, imported from the installed package."""
    return pytest.importorskip("ganforge_vonmises", reason=NOT_INSTALLED).VonMises


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@needs_the_package
def test_the_entry_point_registers_vonmises_under_the_plugin_and_its_distribution():
    host = make_plugin_host()
    assert host.latents.entry("vonmises").plugin == "vonmises"
    assert host.info["vonmises"].distribution == "ganforge-vonmises"
    code = host.latents.get("vonmises")(2)
    assert isinstance(code, LatentDistribution)
    assert (code.input_dim, code.param_dim, code.kind) == (4, 4, "continuous")


def test_samples_are_unit_vectors_drawn_from_the_generator_alone(von_mises):
    code = von_mises(3)
    value = code.sample(500, seeded(1))
    assert value.shape == (500, 6)
    torch.testing.assert_close(value.reshape(500, 3, 2).norm(dim=-1), torch.ones(500, 3))
    assert torch.equal(value, code.sample(500, seeded(1)))
    # Uniform on the circle: the mean resultant vector is near zero.
    assert value.reshape(500, 3, 2).mean(0).norm(dim=-1).max() < 0.15


def test_a_concentrated_prior_is_von_mises_around_loc(von_mises):
    code = von_mises(1, concentration=4.0, loc=1.0)
    angles = code.sample_angles(20_000, seeded(3))
    assert torch.equal(angles, code.sample_angles(20_000, seeded(3)))
    mean_direction = torch.atan2(angles.sin().mean(), angles.cos().mean())
    assert mean_direction.item() == pytest.approx(1.0, abs=0.02)
    # E[cos(θ - loc)] = I1(κ)/I0(κ).
    expected = (torch.special.i1e(torch.tensor(4.0)) / torch.special.i0e(torch.tensor(4.0))).item()
    assert torch.cos(angles - 1.0).mean().item() == pytest.approx(expected, abs=0.01)


def test_nll_is_the_von_mises_log_density_with_q_predicting_direction_and_concentration(von_mises):
    code = von_mises(2)
    value = code.sample(64, seeded(4))
    params = (3.0 * torch.randn(64, 4, generator=seeded(5))).requires_grad_(True)
    nll = code.nll(value, params)
    mean, kappa = code.mean_and_concentration(params)
    angles = torch.atan2(value.reshape(64, 2, 2)[..., 1], value.reshape(64, 2, 2)[..., 0])
    expected = -D.VonMises(mean, kappa).log_prob(angles).sum(1)
    torch.testing.assert_close(nll, expected, rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(nll.sum(), params)
    assert torch.isfinite(grad).all()
    # Bounded gradients: at most 2 in norm per angle, however confident Q is.
    assert grad.reshape(64, 2, 2).norm(dim=-1).max() <= 2.0


def test_nll_gradients_stay_finite_at_zero_and_at_huge_concentrations(von_mises):
    code = von_mises(1)
    value = code.sample(3, seeded(6))
    params = torch.tensor([[0.0, 0.0], [1e-9, 0.0], [5e3, -2e3]], requires_grad=True)
    nll = code.nll(value, params)
    (grad,) = torch.autograd.grad(nll.sum(), params)
    assert torch.isfinite(nll).all() and torch.isfinite(grad).all()
    assert nll[0].item() == pytest.approx(math.log(2 * math.pi))  # κ = 0: the uniform circle


def test_entropy_and_traversal(von_mises):
    assert von_mises(2).entropy() == pytest.approx(2 * math.log(2 * math.pi))
    # -∫ p log p over the circle, by the trapezoid rule on a fine grid.
    angles = torch.linspace(-math.pi, math.pi, 20_001, dtype=torch.float64)
    reference = D.VonMises(torch.tensor(0.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64))
    log_density = reference.log_prob(angles)
    integrated = -torch.trapezoid(log_density.exp() * log_density, angles).item()
    assert von_mises(1, concentration=2.0).entropy() == pytest.approx(integrated, abs=1e-5)
    sweep = von_mises(2).traversal_values(4)
    expected = torch.tensor([[1.0, 0.0] * 2, [0.0, 1.0] * 2, [-1.0, 0.0] * 2, [0.0, -1.0] * 2])
    torch.testing.assert_close(sweep, expected, atol=1e-6, rtol=0)


def test_encode_takes_an_angle_in_radians(von_mises):
    torch.testing.assert_close(von_mises(1).encode(math.pi / 2), torch.tensor([[0.0, 1.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(von_mises(2).encode([0.0, math.pi]), torch.tensor([[1.0, 0.0, -1.0, 0.0]]),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize(("options", "message"), [
    ({"concentration": -1}, "concentration must be 0"),
    ({"loc": "north"}, "loc must be a finite number"),
    ({"kappa": 2}, "unknown option 'kappa'; VonMises takes: concentration, loc"),
])
def test_bad_options_are_value_errors(von_mises, options, message):
    with pytest.raises(ValueError, match=message):
        von_mises(1, **options)


@needs_the_package
def test_infogan_trains_a_few_steps_with_the_vonmises_code_from_its_entry_point(tmp_path):
    host = make_plugin_host()
    if "infogan" not in host.run_plugins:
        pytest.skip("the infogan plugin is not installed as an entry point (pip install -e . after adding it)")
    codes = [{"name": "angle", "dist": "vonmises", "size": 1, "weight": 0.5}]
    run = run_tiny(tmp_path, host=host, plugins={"infogan": {"codes": codes}})
    assert run.step == 4
    assert run.inputs["angle"].input_dim == 2 and run.input_dim == 8 + 2
    records = [json.loads(line) for line in (run.directory / "metrics.jsonl").read_text().splitlines()]
    assert records and all(math.isfinite(record["loss/G/info/angle"]) for record in records)
    # The traversal picture sweeps the angle through the distribution's own traversal_values.
    assert (run.directory / "samples" / "traverse_angle_0000004.png").exists()


def test_the_guide_shows_the_code_that_these_tests_run():
    # Every Python and TOML block of the guide is copied verbatim from the example package, so
    # what a reader copies is what the tests above exercise.
    sources = [path.read_text() for path in EXAMPLE.rglob("*") if path.suffix in (".py", ".toml")]
    blocks = re.findall(r"```(?:python|toml)\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) >= 6
    for block in blocks:
        assert any(block in source for source in sources), f"not in docs/examples/ganforge-vonmises:\n{block}"
