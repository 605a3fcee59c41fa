"""The truncation trick at sampling: a normal noise drawn within the threshold, and refused with
one line where it cannot apply."""

from __future__ import annotations

import pytest
import torch

from ganforge import load_generator
from ganforge.errors import UsageError
from ganforge.testing import train_steps, tiny_recipe
from ganforge_plugins.latents.distributions import Gaussian

from .conftest import assert_one_line_cli_error, invoke


def test_a_truncated_normal_stays_within_the_threshold_and_is_normal_inside_it():
    values = Gaussian(4).sample_truncated(20_000, 0.5, torch.Generator().manual_seed(0))
    assert values.shape == (20_000, 4) and values.abs().max() <= 0.5
    # N(0, 1) on [-0.5, 0.5] has variance 1 - 2 * 0.5 * phi(0.5) / (2 * Phi(0.5) - 1) = 0.0796.
    assert abs(float(values.var()) - 0.0796) < 0.003  # 80,000 draws: the variance's error is ~0.0004


def test_sampling_a_checkpoint_with_truncation(tmp_path):
    run = train_steps(tiny_recipe(tmp_path), tmp_path / "runs", steps=1)
    checkpoint = run.directory / "checkpoints" / "last.pt"
    generator = load_generator(checkpoint)
    plain, truncated = generator.sample(8, seed=3), generator.sample(8, seed=3, truncation=0.25)
    assert truncated.shape == plain.shape and not torch.equal(plain, truncated)
    assert torch.equal(truncated, generator.sample(8, seed=3, truncation=0.25))
    with pytest.raises(UsageError, match="greater than 0"):
        generator.sample(8, truncation=0.0)
    result = invoke("sample", checkpoint, "--out", tmp_path / "t.png", "--truncation", "0.5")
    assert result.exit_code == 0 and (tmp_path / "t.png").is_file()
    assert_one_line_cli_error(invoke("sample", checkpoint, "--out", tmp_path / "x.png", "--truncation", "0.5",
                                     "--traverse", "z"), 2, "--truncation", "--traverse")


def test_truncation_of_a_noise_without_one_is_a_one_line_error(tmp_path):
    run = train_steps(tiny_recipe(tmp_path, latent={"noise": "uniform"}), tmp_path / "runs", steps=1)
    result = invoke("sample", run.directory / "checkpoints" / "last.pt", "--out", tmp_path / "u.png",
                    "--truncation", "0.5")
    assert_one_line_cli_error(result, 2, "--truncation", "no truncation", "uniform")
