"""Gradient accumulation, ``train.accumulate``: an update from k micro-batches of b images is the
update on one batch of k x b, fed the same images and latents (on a model without batch norm,
whose outputs do not depend on what else is in the batch); it resumes bit for bit, a bad value is
one line, and on two processes DDP averages the micro-batches' summed gradients once.

The arithmetic is BigGAN's accumulation, each micro-batch's loss divided by the number of them
before its backward pass (google/lecam-gan@f9af9485eda4637b25e694c142ce8e6992eb7243,
``third_party/train_fns.py``, ``GAN_training_function``: ``D_loss / float(config['num_D_accumulations'])``).
"""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from ganforge import hookimpl
from ganforge.launch import run_recipe
from ganforge.testing import build_run
from ganforge.training import train_step
from ganforge_plugins.objectives.normalisation import replace_batch_norms

from .conftest import (assert_one_line_cli_error, assert_same_training, invoke, make_host, metric_records, run_tiny,
                       tiny_recipe, write_recipe)
from .distributed_probe import PLAIN_MLP_GRADIENT_TERMS, Probe, build_plain
from .test_distributed import launch
from .test_distributed import recipe as distributed_recipe
from .tolerance import assert_close_to_rounding, by_layer

#: With InfoGAN's Q head (32 and 128 inputs, a layer norm over 128) and R1's second backward pass
#: through D (its conv, linear and head again, and the input gradient's sum over 16 x 14 x 14
#: positions) on top of the plain MLP's: at most twice its operations.
WITH_Q_AND_PENALTY_TERMS = 2 * PLAIN_MLP_GRADIENT_TERMS
INFOGAN_CODES = [{"name": "digit", "dist": "categorical", "size": 4, "weight": 1.0},
                 {"name": "slant", "dist": "uniform", "size": 1, "weight": 0.1}]


class PlainModels:
    """The distributed tests' MLP generator and batch-norm-free discriminator as a model family,
    and the context of every micro-batch each phase's loss-term hooks saw."""

    def __init__(self):
        self.seen: dict[str, list] = {"D": [], "G": []}

    @hookimpl
    def ganforge_register_models(self, register):
        register("plain-mlp", build_plain)

    @hookimpl(trylast=True)
    def ganforge_models_built(self, run):
        # InfoGAN's Q head brings a batch norm, which it keeps under R1: a layer norm in its place
        # keeps each of its outputs independent of the rest of the batch, as D's are.
        replace_batch_norms(run.discriminator, "layer")

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        self.seen["D"].append(ctx)
        return []

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        self.seen["G"].append(ctx)
        return []


def one_update(tmp_path, batch_size: int, accumulate: int, **sections):
    """A run of the plain MLP after its first step, the step's logs and what its hooks saw."""
    recorder = PlainModels()
    train = {"batch_size": batch_size, "accumulate": accumulate, **sections.pop("train", {})}
    recipe = tiny_recipe(tmp_path / f"runs{accumulate}", model={"name": "plain-mlp"}, train=train, **sections)
    run = build_run(recipe, host=make_host(("plain", recorder)))
    return run, train_step(run), recorder.seen


def gradients(run) -> dict[str, torch.Tensor]:
    """What each parameter's ``.grad`` holds after a step: D's from its last update, G's from G's."""
    return {f"{network}.{name}": parameter.grad for network, module in (("G", run.generator), ("D", run.discriminator))
            for name, parameter in module.named_parameters() if parameter.grad is not None}


def batches_put_together(seen: list, parts: int) -> list:
    """Each update's real images and latents, its ``parts`` micro-batches put back together."""
    updates = [seen[start:start + parts] for start in range(0, len(seen), parts)]
    return [(torch.cat([ctx.real for ctx in update]),
             {name: torch.cat([ctx.latents[name] for ctx in update]) for name in update[0].latents}) for update in updates]


@pytest.mark.parametrize("sections", [
    {},
    {"train": {"d_steps": 2}},
    # InfoGAN's information terms in both phases (its Q head's batch norm swapped, above); R1
    # each step.
    {"plugins": {"infogan": {"codes": INFOGAN_CODES}, "r1": {"every": 1}}},
], ids=["plain", "two-d-steps", "infogan-and-r1"])
def test_two_micro_batches_update_as_one_batch_twice_their_size(tmp_path, sections):
    whole, whole_logs, whole_seen = one_update(tmp_path, 16, 1, **sections)
    parts, parts_logs, parts_seen = one_update(tmp_path, 8, 2, **sections)
    d_steps = whole.d_steps
    assert [len(whole_seen["D"]), len(whole_seen["G"])] == [d_steps, 1]
    assert [len(parts_seen["D"]), len(parts_seen["G"])] == [2 * d_steps, 2]
    assert all(len(ctx.real) == 8 for ctx in parts_seen["D"] + parts_seen["G"])
    # The same images and latents, cut in two: nothing is drawn differently.
    for phase in ("D", "G"):
        for (real, latents), (whole_real, whole_latents) in zip(batches_put_together(parts_seen[phase], 2),
                                                                batches_put_together(whole_seen[phase], 1), strict=True):
            assert torch.equal(real, whole_real)
            assert latents.keys() == whole_latents.keys()
            assert all(torch.equal(latents[name], whole_latents[name]) for name in latents)
    assert parts.images_seen == whole.images_seen == 16 * d_steps

    terms = WITH_Q_AND_PENALTY_TERMS if "plugins" in sections else PLAIN_MLP_GRADIENT_TERMS
    expected, actual = gradients(whole), gradients(parts)
    assert actual.keys() == expected.keys()
    assert all(gradient.abs().sum() > 0 for gradient in expected.values())
    for layer, layer_gradients in by_layer(expected.items()).items():
        assert_close_to_rounding(by_layer(actual.items())[layer], layer_gradients, terms=terms, what=f"{layer} gradient")
    for network in ("generator", "discriminator"):
        assert_close_to_rounding([p.detach() for p in getattr(parts, network).parameters()],
                                 [p.detach() for p in getattr(whole, network).parameters()], terms=terms, what=network)
    # Each logged term is its mean over the micro-batches: the whole batch's mean.
    assert parts_logs.keys() == whole_logs.keys()
    for name, value in whole_logs.items():
        assert_close_to_rounding(parts_logs[name], value, terms=terms, what=name)


def test_a_step_takes_k_batches_and_g_batch_statistics_move_once_per_micro_batch(tmp_path):
    run = run_tiny(tmp_path, train={"steps": 2, "batch_size": 8, "accumulate": 3, "d_steps": 2})
    assert run.images_seen == 2 * 2 * 3 * 8 and run.batcher.position == 2 * 2 * 3 * 8
    # The G update makes each micro-batch's fakes again without moving G's statistics: they move
    # when the D updates make them, once per micro-batch.
    generator_norms = [m for m in run.generator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert generator_norms and all(int(norm.num_batches_tracked) == 2 * 2 * 3 for norm in generator_norms)
    records = metric_records(run.directory)
    assert [record["images"] for record in records] == [96]


def test_lecam_moves_its_averages_once_per_micro_batch(tmp_path):
    run, _, seen = one_update(tmp_path, 8, 2, plugins={"lecam": {"start": 0, "decay": 0.5}})
    first, second = ([ctx.d_real.logits.detach().mean(), ctx.d_fake.logits.detach().mean()] for ctx in seen["D"])
    lecam = run.plugins["lecam"]
    # The first micro-batch's means start the averages, the second's move them by the decay.
    assert torch.equal(lecam.ema_real, first[0] * 0.5 + second[0] * (1 - 0.5))
    assert torch.equal(lecam.ema_fake, first[1] * 0.5 + second[1] * (1 - 0.5))


def test_an_accumulated_run_resumes_bit_for_bit(tmp_path):
    train = {"steps": 4, "batch_size": 8, "accumulate": 2, "log_every": 2, "sample_every": 1000,
             "checkpoint_every": 2, "keep_checkpoints": 1}
    plugins = {"infogan": {"codes": INFOGAN_CODES}, "lecam": {"start": 1}}
    straight = run_tiny(tmp_path / "straight", train=train, plugins=plugins)
    run_tiny(tmp_path / "halves", train={**train, "steps": 2}, plugins=plugins)
    resumed = run_tiny(tmp_path / "halves", resume=True, train=train, plugins=plugins)
    assert resumed.step == 4 and resumed.images_seen == 4 * 16
    checkpoints = [path / "runs" / "tiny" / "checkpoints" / "last.pt" for path in (tmp_path / "straight", tmp_path / "halves")]
    assert_same_training(*checkpoints)
    assert metric_records(resumed.directory) == metric_records(straight.directory)


@pytest.mark.parametrize(("value", "expected"), [
    (0, "train.accumulate: must be from 1 to 1000, got 0"),
    ("2", "train.accumulate: must be an integer, got '2'"),
    (2.5, "train.accumulate: must be an integer, got 2.5"),
    # 17 micro-batches of 16 are more images than the 256 sprites hold.
    (17, "train.accumulate: 17 micro-batches of train.batch_size 16 are 272 images per update, more than the"
         " dataset's 256"),
])
def test_a_bad_accumulate_is_one_line_naming_the_key(tmp_path, value, expected):
    path = write_recipe(tmp_path / "bad.toml", tiny_recipe(tmp_path / "runs", train={"accumulate": value}))
    assert_one_line_cli_error(invoke("check", path), 2, expected)


def test_check_tries_a_step_of_micro_batches(tmp_path):
    path = write_recipe(tmp_path / "r.toml", tiny_recipe(tmp_path / "runs", train={"accumulate": 2}))
    result = invoke("check", path)
    assert result.exit_code == 0, result.output
    assert "one step on 8 images in 2 micro-batches: D " in result.stdout


def test_two_ranks_accumulate_locally_and_average_once_like_one_process_on_the_whole_batch(tmp_path):
    micro = write_recipe(tmp_path / "micro.toml", distributed_recipe(steps=1, batch_size=8, accumulate=2))
    two = launch([tmp_path / "rank0", tmp_path / "rank1"], micro, "--record", str(tmp_path / "two.pt"),
                 "--record-sync", str(tmp_path / "sync.pt"))
    assert [r.returncode for r in two] == [0, 0], two[0].stderr + two[1].stderr
    # The first micro-batch's backward pass ran under no_sync(), the last one's averaged.
    assert torch.load(tmp_path / "sync.pt") == {"D": [False, True], "G": [False, True]}
    header = " ".join(two[0].stdout.split())  # as printed, but for where the console wrapped it
    assert "1 steps of 16 (2 micro-batches of 8)" in header
    assert "the global batch of 8 is 4 per process in each micro-batch" in header

    # One process on the whole batch, in this process (starting a third would cost more than the step).
    whole = write_recipe(tmp_path / "whole.toml", distributed_recipe(steps=1, batch_size=16))
    run_recipe(whole, [f"run.out_dir={tmp_path / 'alone'}"], host=make_host(("probe", Probe(tmp_path / "one.pt", False))),
               console=Console(file=io.StringIO()))
    averaged, single = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "one.pt")
    assert averaged.keys() == single.keys()
    for layer, layer_gradients in by_layer(single.items()).items():
        assert_close_to_rounding(by_layer(averaged.items())[layer], layer_gradients, terms=PLAIN_MLP_GRADIENT_TERMS,
                                 what=layer)
