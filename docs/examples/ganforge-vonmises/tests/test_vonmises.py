"""The plugin's own tests: found through its entry point, and the NLL is the von Mises density."""

import torch
from torch import distributions as D

from ganforge.pluginmanager import make_plugin_host


def test_the_entry_point_registers_vonmises():
    host = make_plugin_host()
    assert host.latents.entry("vonmises").plugin == "vonmises"


def test_nll_is_minus_the_von_mises_log_density():
    code = make_plugin_host().latents.get("vonmises")(1)
    value = code.sample(16, torch.Generator().manual_seed(0))
    params = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    mean, kappa = code.mean_and_concentration(params)
    angle = torch.atan2(value[:, 1:], value[:, :1])
    expected = -D.VonMises(mean, kappa).log_prob(angle).sum(1)
    torch.testing.assert_close(code.nll(value, params), expected, rtol=1e-5, atol=1e-5)
