"""``train.lr_factors``: the optimizers' rates times a factor from a step on, piecewise constant."""

from __future__ import annotations

import signal

import pytest
import torch

from ganforge import hookimpl
from ganforge.checkpoint import load_checkpoint
from ganforge.schedule import factor_at

from .conftest import (assert_one_line_cli_error, assert_same_training, invoke, make_host, metric_records, run_tiny,
                       tiny_recipe, write_recipe)
from .test_resume import FOUR_STEPS, INFOGAN_CODES, interrupted_at, last_checkpoint


class RatesSeen:
    """Records every optimizer group's rate at the end of each step (the rate that step used)."""

    def __init__(self):
        self.rates = []

    @hookimpl
    def ganforge_step_end(self, run, step):
        self.rates.append([group["lr"] for optimizer in (run.optimizer_g, run.optimizer_d)
                           for group in optimizer.param_groups])


def test_the_factor_holds_from_its_step_on_and_is_one_before_the_first():
    factors = [[2, 1.5], [5, 0.5]]
    assert [factor_at(factors, done) for done in range(7)] == [1.0, 1.0, 1.5, 1.5, 1.5, 0.5, 0.5]
    assert factor_at([], 10) == 1.0


def test_every_group_trains_at_its_rate_times_the_factor(tmp_path):
    # InfoGAN's Q at a rate of its own (q_lr) is a group of D's optimizer: it is scaled too.
    seen = RatesSeen()
    plugins = {"infogan": {"codes": INFOGAN_CODES, "traverse_every_sample": False, "q_lr": 1e-3}}
    train = {**FOUR_STEPS, "g_lr": 2e-3, "d_lr": 4e-4, "lr_factors": [[0, 2.0], [2, 1.0], [3, 0.25]]}
    run_tiny(tmp_path, make_host(("rates", seen)), plugins=plugins, train=train)
    base = seen.rates[1]  # the step after 1 done, at factor 2
    assert sorted(base) == [8e-4, 2e-3, 4e-3]  # D, Q (its own 1e-3), G: each twice its rate
    assert seen.rates == [base, base, [rate / 2 for rate in base], [rate / 8 for rate in base]]


def test_a_factor_of_two_trains_as_rates_twice_as_large_bit_for_bit(tmp_path):
    # Doubling a float is exact, so the schedule's weights equal those of the doubled rates.
    plugins = {"infogan": {"codes": INFOGAN_CODES, "traverse_every_sample": False}}
    doubled = run_tiny(tmp_path / "doubled", plugins=plugins, train={**FOUR_STEPS, "g_lr": 2e-3, "d_lr": 4e-4})
    scheduled = run_tiny(tmp_path / "scheduled", plugins=plugins,
                         train={**FOUR_STEPS, "g_lr": 1e-3, "d_lr": 2e-4, "lr_factors": [[0, 2.0]]})
    for a, b in ((doubled.generator, scheduled.generator), (doubled.discriminator, scheduled.discriminator)):
        for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(p, q), name
    plain = run_tiny(tmp_path / "plain", plugins=plugins, train={**FOUR_STEPS, "g_lr": 1e-3, "d_lr": 2e-4})
    assert not torch.equal(next(plain.generator.parameters()), next(scheduled.generator.parameters()))


def test_a_run_stopped_inside_the_schedule_resumes_bit_for_bit(tmp_path):
    plugins = {"infogan": {"codes": INFOGAN_CODES, "traverse_every_sample": False}}
    train = {**FOUR_STEPS, "lr_factors": [[0, 1.5], [3, 0.5]]}
    straight = run_tiny(tmp_path / "straight", plugins=plugins, train=train)
    interrupted_at(tmp_path / "stopped", 2, signal.SIGINT, plugins=plugins, train=train)
    assert load_checkpoint(last_checkpoint(tmp_path / "stopped"))["step"] == 2
    resumed = run_tiny(tmp_path / "stopped", resume=True, plugins=plugins, train=train)
    assert_same_training(last_checkpoint(tmp_path / "straight"), last_checkpoint(tmp_path / "stopped"))
    assert metric_records(resumed.directory) == metric_records(straight.directory)


@pytest.mark.parametrize(("value", "fragment"), [
    ("[[0, 1.5], [0, 1.0]]", "0 comes after 0"),
    ("[[10, 1.5], [5, 1.0]]", "5 comes after 10"),
    ("[[0, 0.0]]", "a factor is a number more than 0"),
    ("[[0, -1.0]]", "a factor is a number more than 0"),
    ("[[-1, 1.0]]", "whole numbers from 0"),
    ("[[0.5, 1.0]]", "whole numbers from 0"),
    ("[[4294967296, 1.0]]", "whole numbers from 0"),
    ("[1.5]", "pairs [steps done, factor]"),
    ("[[0, 1.5, 2]]", "pairs [steps done, factor]"),
    ('[[0, "x"]]', "a factor is a number"),
])
def test_a_wrong_schedule_is_a_one_line_error_naming_the_key(tmp_path, value, fragment):
    recipe = write_recipe(tmp_path / "tiny.toml", tiny_recipe(tmp_path / "runs"))
    result = invoke("check", recipe, "--set", f"train.lr_factors={value}")
    assert_one_line_cli_error(result, 2, "train.lr_factors", fragment)
