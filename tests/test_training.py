"""The training loop end to end on generated sprites: outputs, determinism, resume, guards."""

from __future__ import annotations

import json

import pytest
import torch

from ganforge import hookimpl
from ganforge.checkpoint import CheckpointError, load_checkpoint
from ganforge.errors import GanforgeError, RecipeError
from ganforge.losses import LossTerm

from .conftest import make_host, run_tiny


def weights(run) -> dict[str, torch.Tensor]:
    return {**{f"G.{k}": v for k, v in run.generator.state_dict().items()},
            **{f"D.{k}": v for k, v in run.discriminator.state_dict().items()}}


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run.directory / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_a_run_fills_its_directory(tmp_path):
    run = run_tiny(tmp_path, train={"steps": 4, "checkpoint_every": 2, "keep_checkpoints": 1})
    directory = run.directory
    assert (directory / "recipe.toml").read_text().startswith("[run]")
    assert sorted(p.name for p in (directory / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    assert sorted(p.name for p in (directory / "checkpoints").iterdir()) == ["last.pt", "step_0000004.pt"]
    records = metrics(run)
    assert [r["step"] for r in records] == [2, 4]
    assert [r["images"] for r in records] == [32, 64]
    assert {"loss/D/adv", "loss/D/total", "loss/G/adv", "loss/G/total", "images_per_s"} <= set(records[0])
    state = load_checkpoint(directory / "checkpoints" / "last.pt")
    assert state["step"] == 4 and state["images_seen"] == 64


def test_the_same_seed_gives_the_same_numbers(tmp_path):
    first = run_tiny(tmp_path / "a")
    second = run_tiny(tmp_path / "b")
    assert_same_weights(first, second)
    strip = lambda records: [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]
    assert strip(metrics(first)) == strip(metrics(second))


def test_another_seed_gives_other_numbers(tmp_path):
    first = run_tiny(tmp_path / "a")
    second = run_tiny(tmp_path / "b", run={"seed": 1})
    assert not torch.equal(first.generator.project[0].weight, second.generator.project[0].weight)


def test_a_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path):
    straight = run_tiny(tmp_path / "a", train={"steps": 4, "checkpoint_every": 2})
    run_tiny(tmp_path / "b", train={"steps": 2, "checkpoint_every": 2})
    resumed = run_tiny(tmp_path / "b", overrides=["train.steps=4"], resume=True, train={"steps": 2, "checkpoint_every": 2})
    assert resumed.step == 4
    assert_same_weights(straight, resumed)


def test_several_discriminator_steps_per_generator_step(tmp_path):
    run = run_tiny(tmp_path, train={"steps": 2, "d_steps": 3})
    assert run.images_seen == 2 * 3 * 16
    assert run.batcher.epoch == 0 and run.batcher.position == 6 * 16


def test_a_new_run_never_overwrites_an_existing_one(tmp_path):
    run_tiny(tmp_path, train={"steps": 1})
    with pytest.raises(GanforgeError, match="already holds a run; continue it with --resume"):
        run_tiny(tmp_path, train={"steps": 1})


def test_resuming_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot resume: .*last.pt does not exist"):
        run_tiny(tmp_path, resume=True)


def test_resuming_with_a_different_recipe_lists_the_differing_keys(tmp_path):
    run_tiny(tmp_path, train={"steps": 2})
    with pytest.raises(RecipeError, match="differs from the run being resumed in train.g_lr"):
        run_tiny(tmp_path, resume=True, train={"steps": 2, "g_lr": 0.01})


def test_a_non_finite_loss_term_stops_the_run_naming_the_term_and_keeps_the_checkpoint(tmp_path):
    class Poison:
        @hookimpl
        def ganforge_generator_loss_terms(self, ctx):
            value = torch.tensor(float("nan")) if ctx.step >= 3 else torch.tensor(0.0)
            return [LossTerm("poison", value)]

    with pytest.raises(GanforgeError, match=r"loss term loss/G/poison became nan by step 4"):
        run_tiny(tmp_path, make_host(("poison", Poison())), train={"steps": 6, "log_every": 2, "checkpoint_every": 2})
    state = load_checkpoint(tmp_path / "runs" / "tiny" / "checkpoints" / "last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["generator"].values() if v.is_floating_point())


def test_an_image_size_the_model_cannot_take_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match="model.name: takes 28x28 images, the data has 64x64"):
        run_tiny(tmp_path, data={"image_size": 64})


def test_a_batch_larger_than_the_dataset_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match="train.batch_size: 512 exceeds the dataset's 256 images"):
        run_tiny(tmp_path, train={"batch_size": 512})


def test_the_classic_dcgan_trains_on_32_px_images(tmp_path):
    run = run_tiny(tmp_path, model={"name": "dcgan"}, data={"image_size": 64, "size": 64},
                   train={"steps": 1, "batch_size": 8})
    assert run.generate(run.fixed_latents).shape == (64, 1, 64, 64)
    assert run.discriminator.trunk.feature_dim == 512 * 4 * 4
