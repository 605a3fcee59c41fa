"""Views of the generated batch (``ganforge_discriminator_fake_views``) join the D phase's one
discriminator pass: D's outputs on them, the gradient of a term on them and D's running statistics
are those of a separate pass with frozen statistics; a balanced-consistency plugin trains and
resumes bit for bit."""

from __future__ import annotations

import copy
import signal

import pytest
import torch
from torch import nn

from ganforge import hookimpl
from ganforge.errors import PluginError
from ganforge.losses import LossTerm
from ganforge.models import frozen_batch_statistics
from ganforge.training import TrainingInterrupted, train_step

from .conftest import assert_same_training, make_host, metric_records, run_tiny
from .test_resume import FOUR_STEPS, SignalAt, last_checkpoint
from .test_variant_hooks import built_run

CONDITIONAL = {"conditional": {"classes": 4}}  # a projection head: D's logits read the conditions

#: The one batched pass, and the pass per batch that ``train.compile`` takes. The networks are
#: compiled only by ``train()``, so these steps run that branch eagerly: compiling them took
#: ~100 s on a 2-core CPU, too long for a test.
PASSES = pytest.mark.parametrize("train", [{}, {"compile": True}], ids=["one-pass", "pass-per-batch"])


def summed_terms(module: nn.Module, images: torch.Tensor, conditions: dict) -> int:
    """How many terms the sums of a forward and backward pass of ``module`` on ``images`` add up,
    over all its layers: each linear or convolution layer's fan-in (forward), fan-out (the input's
    gradient) and batch times positions (the weight's gradient), and each batch norm's batch
    times positions (mean, variance and their gradients).

    Reordering a sum of n float32 terms moves it by at most about n * eps times the magnitude of
    what is summed (Higham, Accuracy and Stability of Numerical Algorithms, section 4.2); a pass
    over a batch put together with others may block these sums differently from a pass of its
    own, and the errors of successive sums add up. This count bounds the tolerance of the
    comparisons below, whatever CPU rounds them."""
    counts = []

    def count(layer, inputs, output):
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fan_out = layer.weight.shape[0] * (layer.weight[0, 0].numel() if isinstance(layer, nn.Conv2d) else 1)
            counts.append(layer.weight[0].numel() + fan_out + output.numel() // layer.weight.shape[0])
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
            counts.append(2 * output.numel() // output.shape[1])

    handles = [layer.register_forward_hook(count) for layer in module.modules()]
    try:
        with torch.no_grad(), frozen_batch_statistics(module):
            module(images, conditions)
    finally:
        for handle in handles:
            handle.remove()
    return sum(counts)


def assert_close_in_float32(actual: torch.Tensor, expected: torch.Tensor, terms: int, what: str) -> None:
    """Equal to within ``terms`` float32 roundings of the largest value compared (see
    :func:`summed_terms`)."""
    tolerance = torch.finfo(torch.float32).eps * terms * float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=0, atol=tolerance, msg=what)


class MirroredFakes:
    """D also sees the fakes mirrored; a term pulls its logits on the mirror towards those on
    the fakes. Records the D phase's context and, while the step's graph is alive, the term's
    gradient with respect to D's parameters; and the G phase's context."""

    def __init__(self, name: str = "mirror"):
        self.name = name
        self.contexts: dict[str, object] = {}

    @hookimpl
    def ganforge_discriminator_fake_views(self, run, fake, latents):
        self.images, self.latents = fake.flip(3), latents
        return [(self.name, self.images)]

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        self.contexts["D"] = ctx
        term = mirror_gap(ctx.fake_views[self.name], ctx.d_fake)
        self.gradient = torch.autograd.grad(term, list(ctx.run.discriminator.parameters()), retain_graph=True,
                                            allow_unused=True)
        return [LossTerm("mirror", term)]

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        self.contexts["G"] = ctx
        return []


def mirror_gap(view, original) -> torch.Tensor:
    return (view.logits - original.logits.detach()).pow(2).mean()


@PASSES
def test_ganforge_discriminator_fake_views_equal_a_frozen_pass_of_their_own_on_the_fakes_latents(tmp_path, train):
    plugin = MirroredFakes()
    run = built_run(tmp_path, make_host(("mirror", plugin)), plugins=CONDITIONAL, train=train)
    before = copy.deepcopy(run.discriminator)
    train_step(run)
    ctx = plugin.contexts["D"]
    assert set(ctx.fake_views) == {"mirror"} and ctx.views == {} and plugin.contexts["G"].fake_views == {}
    assert torch.equal(plugin.images, ctx.fake.flip(3)) and not plugin.images.requires_grad
    assert plugin.latents is ctx.latents

    # D as it was before the step, on the same images, conditioned on the latents the fakes were drawn from.
    with frozen_batch_statistics(before):
        alone = before(plugin.images, ctx.latents)
    terms = summed_terms(before, plugin.images, ctx.latents)
    view = ctx.fake_views["mirror"]
    assert_close_in_float32(view.logits.detach(), alone.logits.detach(), terms, "logits")
    assert_close_in_float32(view.features.detach(), alone.features.detach(), terms, "features")
    # Conditioned on the real batch's labels instead, the projection head gives other logits.
    with frozen_batch_statistics(before):
        misconditioned = before(plugin.images, ctx.conditions)
    assert not torch.allclose(misconditioned.logits, alone.logits, rtol=0, atol=1e-3)

    # The term's gradient into D through the shared pass equals the separate pass's.
    expected = torch.autograd.grad(mirror_gap(alone, ctx.d_fake), list(before.parameters()), allow_unused=True)
    for (name, _), gradient, reference in zip(before.named_parameters(), plugin.gradient, expected):
        if reference is None:
            assert gradient is None, name
            continue
        assert_close_in_float32(gradient, reference, terms, name)
    assert any(reference is not None and reference.abs().sum() > 0 for reference in expected)


@PASSES
def test_a_fake_view_leaves_the_running_statistics_as_a_step_without_it(tmp_path, train):
    """Only the real and fake batches move D's batch-norm running statistics. Compared to float32
    tolerance, not bitwise: the real and fake chunks go through convolutions and linear layers
    over a larger batch with the view, which may sum in another order (see summed_terms)."""
    with_view = built_run(tmp_path / "view", make_host(("mirror", MirroredFakes())), train=train)
    without = built_run(tmp_path / "plain", train=train)
    tracked = [int(m.num_batches_tracked) for m in with_view.discriminator.modules() if hasattr(m, "num_batches_tracked")]
    train_step(with_view)
    train_step(without)
    terms = summed_terms(without.discriminator, torch.zeros(16, 1, 28, 28), {})
    buffers = list(without.discriminator.named_buffers())
    assert buffers, "the test needs a discriminator with batch norm"
    for (name, expected), actual in zip(buffers, with_view.discriminator.buffers()):
        if name.endswith("num_batches_tracked"):
            assert int(actual) == int(expected), name
        else:
            assert_close_in_float32(actual, expected, terms, name)
    after = [int(m.num_batches_tracked) for m in with_view.discriminator.modules() if hasattr(m, "num_batches_tracked")]
    assert after == [count + 2 for count in tracked]  # real and fake, not the view


def test_two_fake_views_of_one_name_are_a_plugin_error(tmp_path):
    run = built_run(tmp_path, make_host(("a", MirroredFakes()), ("b", MirroredFakes())))
    with pytest.raises(PluginError, match=r"two plugins contribute a discriminator fake view of one name: \['mirror', 'mirror'\]"):
        train_step(run)


def test_a_fake_view_may_share_its_name_with_a_real_view(tmp_path):
    class MirroredReals:
        @hookimpl
        def ganforge_discriminator_views(self, run, real):
            return [("mirror", real.flip(3))]

    plugin = MirroredFakes()
    train_step(built_run(tmp_path, make_host(("fakes", plugin), ("reals", MirroredReals()))))
    assert set(plugin.contexts["D"].views) == set(plugin.contexts["D"].fake_views) == {"mirror"}


class LossContexts:
    """Adds no term; keeps the last context each phase's loss-term hooks saw."""

    def __init__(self):
        self.seen: dict[str, object] = {}

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        self.seen["D"] = ctx
        return []

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        self.seen["G"] = ctx
        return []


class ViewsWithInfo:
    """Views given as ``(name, images, info)`` beside views given as ``(name, images)``."""

    @hookimpl
    def ganforge_discriminator_views(self, run, real):
        self.real_info = {"flipped": True}
        return [("flip", real.flip(3), self.real_info), ("roll", real.roll(1, dims=3))]

    @hookimpl
    def ganforge_discriminator_fake_views(self, run, fake):
        self.fake_info = torch.arange(len(fake))
        return [("flip", fake.flip(3), self.fake_info), ("roll", fake.roll(1, dims=3))]


def test_a_view_s_third_element_reaches_the_d_phase_s_terms_as_its_info(tmp_path):
    plugin, contexts = ViewsWithInfo(), LossContexts()
    train_step(built_run(tmp_path, make_host(("info", plugin), ("contexts", contexts))))
    ctx = contexts.seen["D"]
    # Every view is seen, with or without info; only those given with one have an entry.
    assert set(ctx.views) == set(ctx.fake_views) == {"flip", "roll"}
    assert ctx.view_info == {"flip": plugin.real_info} and ctx.view_info["flip"] is plugin.real_info
    assert set(ctx.fake_view_info) == {"flip"} and ctx.fake_view_info["flip"] is plugin.fake_info
    assert contexts.seen["G"].view_info == contexts.seen["G"].fake_view_info == {}


def test_a_view_of_other_than_two_or_three_items_is_a_plugin_error(tmp_path):
    class TooLong:
        @hookimpl
        def ganforge_discriminator_views(self, run, real):
            return [("flip", real.flip(3), None, None)]

    with pytest.raises(PluginError, match=r"a discriminator view must be \(name, images\) or \(name, images, info\),"
                                          " got 4 items"):
        train_step(built_run(tmp_path, make_host(("long", TooLong()))))


# -- balanced consistency regularisation ------------------------------------------------------


def translate(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Each image moved by its own whole-pixel shift ``(dy, dx)``, zeros (mid-grey is 0 in [-1, 1])
    shifted in."""
    moved = torch.zeros_like(images)
    height, width = images.shape[-2:]
    for index, (dy, dx) in enumerate(shifts.tolist()):
        source = images[index, :, max(-dy, 0):height - max(dy, 0), max(-dx, 0):width - max(dx, 0)]
        moved[index, :, max(dy, 0):height - max(-dy, 0), max(dx, 0):width - max(-dx, 0)] = source
    return moved


class BalancedConsistency:
    """bCR (Zhao et al. 2020, "Improved consistency regularization for GANs"): D's
    logits on randomly flipped and translated real and generated images pulled towards its
    logits on the originals, an MSE for each half, weighted 10 each, the gradient through both
    passes, as StudioGAN computes it (src/worker.py, ``WORKER.train_discriminator``, the
    ``apply_bcr`` branch). Unlike StudioGAN's, the moved passes here leave D's running statistics
    alone. The moves draw from the plugin's own stream, which checkpoints keep."""

    STREAM = "bcr"

    def move(self, run, images: torch.Tensor) -> torch.Tensor:
        rng = run.rng(self.STREAM, device="cpu")
        flips = torch.rand(len(images), generator=rng) < 0.5
        shifts = torch.randint(-images.shape[-1] // 8, images.shape[-1] // 8 + 1, (len(images), 2), generator=rng)
        return translate(torch.where(flips.to(images.device)[:, None, None, None], images.flip(3), images), shifts)

    @hookimpl
    def ganforge_discriminator_views(self, run, real):
        return [("bcr", self.move(run, real))]

    @hookimpl
    def ganforge_discriminator_fake_views(self, run, fake):
        return [("bcr", self.move(run, fake))]

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        real_gap = ctx.views["bcr"].logits - ctx.d_real.logits
        fake_gap = ctx.fake_views["bcr"].logits - ctx.d_fake.logits
        return [LossTerm("bcr/real", real_gap.pow(2).mean(), weight=10.0),
                LossTerm("bcr/fake", fake_gap.pow(2).mean(), weight=10.0)]


def test_balanced_consistency_trains_a_tiny_run_and_resumes_bitwise(tmp_path):
    straight = run_tiny(tmp_path / "straight", make_host(("bcr", BalancedConsistency())), train=FOUR_STEPS)
    with pytest.raises(TrainingInterrupted):
        run_tiny(tmp_path / "stopped", make_host(("bcr", BalancedConsistency()), ("signal", SignalAt(3, signal.SIGINT))),
                 train=FOUR_STEPS)
    stored = torch.load(last_checkpoint(tmp_path / "stopped"), weights_only=False)
    assert stored["step"] == 3 and "bcr" in stored["rng"]["streams"]
    resumed = run_tiny(tmp_path / "stopped", make_host(("bcr", BalancedConsistency())), resume=True, train=FOUR_STEPS)
    assert resumed.step == 4
    assert_same_training(last_checkpoint(tmp_path / "straight"), last_checkpoint(tmp_path / "stopped"))
    records = metric_records(straight.directory)
    assert metric_records(resumed.directory) == records
    assert all(record["loss/D/bcr/real"] > 0 and record["loss/D/bcr/fake"] > 0 for record in records)
