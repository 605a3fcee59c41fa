"""LeCam regularisation: the reference's term on D's own outputs, its moving averages and their
start, gradients into D alone, and an exact resume."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ganforge.testing import step_once, tiny_recipe
from ganforge_plugins.objectives.lecam import DEFAULTS, LeCam

from .test_variant_hooks import assert_resumes_bitwise
from .tolerance import assert_close_to_rounding


def test_the_term_is_the_reference_on_the_step_s_own_outputs(tmp_path):
    result = step_once(tiny_recipe(tmp_path, plugins={"lecam": {"start": 0, "weight": 0.5}}))
    real, fake = result.d_ctx.d_real.logits.detach(), result.d_ctx.d_fake.logits.detach()
    # At its first step each average is the batch's mean: the reference's lecam_reg with them.
    expected = F.relu(real - fake.mean()).pow(2).mean() + F.relu(real.mean() - fake).pow(2).mean()
    assert_close_to_rounding(result.logs["loss/D/lecam"], expected, terms=64)
    total = result.logs["loss/D/adv"] + 0.5 * result.logs["loss/D/lecam"]
    assert_close_to_rounding(result.logs["loss/D/total"], total, terms=4)


def test_the_averages_copy_before_start_then_decay_and_carry_no_gradient():
    lecam = LeCam({**DEFAULTS, "decay": 0.75, "start": 3})
    real = torch.tensor([1.0, 3.0], requires_grad=True)
    fake = torch.tensor([-2.0, 0.0], requires_grad=True)
    lecam.track(1, real, fake)
    lecam.track(2, real * 2, fake * 2)  # before start: the batch's means, not an average
    assert (float(lecam.ema_real), float(lecam.ema_fake)) == (4.0, -2.0)
    lecam.track(3, real, fake)
    assert (float(lecam.ema_real), float(lecam.ema_fake)) == (0.75 * 4.0 + 0.25 * 2.0, 0.75 * -2.0 + 0.25 * -1.0)
    assert lecam.ema_real.grad_fn is None and lecam.ema_fake.grad_fn is None


def test_before_start_it_adds_nothing_and_its_gradient_reaches_d_only(tmp_path):
    early = step_once(tiny_recipe(tmp_path, plugins={"lecam": {"start": 5}}))
    assert "loss/D/lecam" not in early.logs
    lecam = LeCam({**DEFAULTS, "start": 0})
    lecam.track(1, torch.zeros(2), torch.zeros(2))
    real = torch.tensor([0.5, 2.0], requires_grad=True)
    fake = torch.tensor([-1.0, 1.0], requires_grad=True)
    lecam.track(2, real, fake)
    term = F.relu(real - lecam.ema_fake).pow(2).mean() + F.relu(lecam.ema_real - fake).pow(2).mean()
    grad_real, grad_fake = torch.autograd.grad(term, (real, fake))
    # d/dx of mean(relu(x - m)^2) is relu(x - m) (2 / n), the averages held fixed.
    assert torch.allclose(grad_real, F.relu(real - lecam.ema_fake).detach() * 2 / 2)
    assert torch.allclose(grad_fake, -F.relu(lecam.ema_real - fake).detach() * 2 / 2)


def test_a_run_with_lecam_resumes_bit_for_bit(tmp_path):
    assert_resumes_bitwise(tmp_path, lambda: [], plugins={"lecam": {"start": 1}}, loss={"name": "hinge"})
