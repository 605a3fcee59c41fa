"""bCR and zCR (Zhao et al. 2021, "Improved Consistency Regularization for GANs"): the terms'
values and gradients against the reference's formulas on the same inputs, zero where nothing
moves, the sign of G's term, the combinations, an exact resume and the refusals.

The reference is POSTECH-CVLab/PyTorch-StudioGAN@947b35e9835b67860fdce44d337f6d7fee7c8db3:
``src/utils/cr.py`` (``apply_cr_aug``: ``random_flip`` with p = 0.5, then ``random_translation``
by up to ``int(size / 8)`` pixels with reflected padding), ``src/worker.py``
(``train_discriminator``: ``real_bcr_loss = l2_loss(real_dict["adv_output"],
real_prl_dict["adv_output"])``, the same for the fakes, ``fake_zcr_loss = l2_loss(
fake_dict["adv_output"], fake_eps_dict["adv_output"])``; ``train_generator``: ``fake_zcr_loss =
-1 * l2_loss(fake_images, fake_images_eps)``; ``l2_loss = torch.nn.MSELoss()``, nothing detached)
and ``src/utils/sample.py`` (``sample_zy``: ``zs_eps = zs + radius * N(0, 1)`` on the noise alone,
the labels unchanged).
"""

from __future__ import annotations

import copy
import math
import types

import pytest
import torch
from torch.nn import functional as F

from ganforge import hookimpl, testing
from ganforge.models import frozen_batch_statistics
from ganforge.training import train_step
from ganforge_plugins.augmentation.images import flip_and_translate
from ganforge_plugins.objectives.consistency import (BCR_DEFAULTS, ZCR_DEFAULTS, BalancedConsistency,
                                                     LatentConsistency)

from .conftest import assert_one_line_cli_error, invoke, make_host, tiny_recipe, write_recipe
from .test_fake_views import CONDITIONAL
from .test_variant_hooks import INFOGAN, assert_resumes_bitwise, built_run, last_checkpoint
from .tolerance import (D28_FORWARD_TERMS, D28_GRADIENT_TERMS, G28_GRADIENT_TERMS, assert_close_to_rounding, by_layer,
                        rounding_tolerance)

MSE = torch.nn.MSELoss()  # the reference's l2_loss


def studiogan_move(images: torch.Tensor, mirrored: torch.Tensor, t_rows: torch.Tensor, t_columns: torch.Tensor
                   ) -> torch.Tensor:
    """StudioGAN's ``apply_cr_aug`` given its draws: the images flagged ``mirrored`` flipped along
    the width, then ``out[b, :, i, j] = reflect_pad(x)[b, :, i + t_rows[b] + m, j + t_columns[b] + m]``
    with ``m = int(size / 8)`` (``random_translation``'s gather over a meshgrid)."""
    n, _, height, width = images.shape
    images = torch.where(mirrored.view(-1, 1, 1, 1), images.flip(3), images)
    most_rows, most_columns = int(height / 8), int(width / 8)
    padded = F.pad(images, [most_columns, most_columns, most_rows, most_rows], mode="reflect")
    batch, rows, columns = torch.meshgrid(torch.arange(n), torch.arange(height), torch.arange(width), indexing="ij")
    rows = rows + t_rows.view(-1, 1, 1) + most_rows
    columns = columns + t_columns.view(-1, 1, 1) + most_columns
    return padded.permute(0, 2, 3, 1)[batch, rows, columns].permute(0, 3, 1, 2)


def studiogan_move_from_draws(images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """The plugin's draws (mirrored, dy, dx: the image moves down by dy) in StudioGAN's terms,
    which read the source pixel at ``i + t``: ``t = -dy``."""
    return studiogan_move(images, draws[:, 0].bool(), -draws[:, 1], -draws[:, 2])


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_t_is_studiogan_s_flip_then_reflected_translation_by_up_to_an_eighth(shape):
    images = torch.randn(256, *shape)
    moved, draws = flip_and_translate(images, torch.Generator().manual_seed(5))
    assert torch.equal(moved, studiogan_move_from_draws(images, draws))
    # The draws: one uniform triple per image from the stream, a flip below 1/2, every whole shift
    # from -int(size / 8) to int(size / 8) equally likely.
    uniform = torch.rand(256, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(draws[:, 0].bool(), uniform[:, 0] < 0.5)
    most = int(shape[1] / 8)
    assert set(draws[:, 1:].flatten().tolist()) == set(range(-most, most + 1))
    still, none = flip_and_translate(images, torch.Generator().manual_seed(5), flip=False, fraction=0.0)
    assert torch.equal(still, images) and not none.any()


def root_mean_square(*tensors: torch.Tensor) -> float:
    return math.sqrt(sum(float(t.detach().double().square().sum()) for t in tensors) / sum(t.numel() for t in tensors))


def assert_same_squared_gap(actual, original: torch.Tensor, other: torch.Tensor, terms: int, what: str) -> None:
    """``actual`` is the reference's ``MSELoss(original, other)``, up to rounding: each of the
    compared values carries rounding in proportion to the values' own size, and the mean of
    squared gaps moves by twice the gap times that."""
    scale = 2 * root_mean_square(original - other) * root_mean_square(original, other)
    assert_close_to_rounding(actual, MSE(original, other), terms=terms, scale=scale, what=what)


def assert_same_gradients(module, actual, expected, terms: int) -> None:
    """Each layer's gradients as one, up to the rounding of ``terms`` operations."""
    names = [name for name, _ in module.named_parameters()]
    actual = by_layer(zip(names, actual))
    for layer, gradients in by_layer(zip(names, expected)).items():
        assert_close_to_rounding(actual[layer], gradients, terms=terms, what=layer)
    assert any(gradient.abs().sum() > 0 for gradient in expected)


def parameters(module) -> list[torch.Tensor]:
    return list(module.parameters())


def weighted_gradient(terms, module) -> tuple[torch.Tensor, ...]:
    """The gradient of the terms' weighted sum into ``module``'s parameters, the step's graph kept
    for its own backward pass."""
    return torch.autograd.grad(sum(term.weight * term.value for term in terms), parameters(module), retain_graph=True)


class RecordedBCR(BalancedConsistency):
    """bCR as the table makes it, recording the D phase's context and, while the step's graph is
    alive, the gradient of its weighted terms with respect to D's parameters."""

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        terms = super().ganforge_discriminator_loss_terms(ctx)
        self.ctx, self.gradient = ctx, weighted_gradient(terms, ctx.run.discriminator)
        return terms


def test_bcr_s_terms_and_gradient_are_studiogan_s_on_the_step_s_images(tmp_path):
    """With a projection D (the views must see their batch's conditions), against separate passes
    of D as it was before the step, on StudioGAN's moves of the same images with the same draws."""
    plugin = RecordedBCR(BCR_DEFAULTS)
    run = built_run(tmp_path, make_host(("recorded-bcr", plugin)), plugins=CONDITIONAL)
    before = copy.deepcopy(run.discriminator)
    logs = train_step(run)
    ctx = plugin.ctx
    moved_real = studiogan_move_from_draws(ctx.real, ctx.view_info["bcr"])
    moved_fake = studiogan_move_from_draws(ctx.fake, ctx.fake_view_info["bcr"])
    with frozen_batch_statistics(before):
        real, fake = before(ctx.real, ctx.conditions).logits, before(ctx.fake, ctx.latents).logits
        real_moved, fake_moved = before(moved_real, ctx.conditions).logits, before(moved_fake, ctx.latents).logits
    assert_same_squared_gap(logs["loss/D/bcr/real"], real, real_moved, D28_FORWARD_TERMS, "bcr/real")
    assert_same_squared_gap(logs["loss/D/bcr/fake"], fake, fake_moved, D28_FORWARD_TERMS, "bcr/fake")
    # The reference detaches neither side: the gradient flows through the originals' outputs too.
    reference = 10.0 * MSE(real, real_moved) + 10.0 * MSE(fake, fake_moved)
    expected = torch.autograd.grad(reference, parameters(before))
    assert_same_gradients(run.discriminator, plugin.gradient, expected, D28_GRADIENT_TERMS)


class RecordedZCR(LatentConsistency):
    """zCR, recording each phase's context and its term's gradient (D's into D, G's into G)."""

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        terms = super().ganforge_discriminator_loss_terms(ctx)
        self.d_ctx, self.d_gradient = ctx, weighted_gradient(terms, ctx.run.discriminator)
        return terms

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        terms = super().ganforge_generator_loss_terms(ctx)
        self.g_ctx, self.g_gradient = ctx, weighted_gradient(terms, ctx.run.generator)
        return terms


def replayed_normal(run, stream: str, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The plugin's first two normal draws of ``shape`` from the run's ``stream``, replayed on a
    copy of the stream as it is now (the D phase's ``dz``, then the G phase's)."""
    replay = torch.Generator().set_state(run.rng(stream).get_state())
    return torch.randn(shape, generator=replay), torch.randn(shape, generator=replay)


def test_zcr_s_terms_and_gradients_are_studiogan_s_on_the_step_s_latents(tmp_path):
    """D's term on G(z) and G(z + sigma n), G's on the same pair with the G phase's own n, against
    G and D as they were before the step, each in a separate pass, with the conditional label kept."""
    settings = {**ZCR_DEFAULTS, "sigma": 0.1}
    plugin = RecordedZCR(settings)
    run = built_run(tmp_path, make_host(("recorded-zcr", plugin)), plugins=CONDITIONAL)
    generator, discriminator = copy.deepcopy(run.generator), copy.deepcopy(run.discriminator)
    d_noise, g_noise = replayed_normal(run, "zcr", (16, 8))
    logs = train_step(run)
    d_ctx, g_ctx = plugin.d_ctx, plugin.g_ctx
    latents = d_ctx.latents
    moved = d_ctx.fake_view_info["zcr"]
    assert moved["label"] is latents["label"]  # sample_zy perturbs the noise alone
    assert torch.equal(moved["z"], latents["z"] + 0.1 * d_noise)

    with frozen_batch_statistics(generator):
        fake, fake_moved = (run.generator_forward(values, generator) for values in (latents, moved))
    assert_close_to_rounding(d_ctx.fake, fake, terms=G28_GRADIENT_TERMS)
    with frozen_batch_statistics(discriminator):
        original, perturbed = (discriminator(images, latents).logits for images in (fake.detach(), fake_moved.detach()))
    assert_same_squared_gap(logs["loss/D/zcr"], original, perturbed, G28_GRADIENT_TERMS, "D's zcr")
    expected = torch.autograd.grad(5.0 * MSE(original, perturbed), parameters(discriminator))
    assert_same_gradients(run.discriminator, plugin.d_gradient, expected, D28_GRADIENT_TERMS)

    # G's term: minus the images' mean squared distance, a fresh dz, the gradient through both images.
    assert g_ctx.latents is latents
    with frozen_batch_statistics(generator):
        fake = run.generator_forward(latents, generator)
        fake_moved = run.generator_forward({**latents, "z": latents["z"] + 0.1 * g_noise}, generator)
    assert float(logs["loss/G/zcr"]) < 0
    assert_same_squared_gap(-logs["loss/G/zcr"], fake, fake_moved, G28_GRADIENT_TERMS, "G's zcr")
    expected = torch.autograd.grad(0.5 * -MSE(fake, fake_moved), parameters(generator))
    assert_same_gradients(run.generator, plugin.g_gradient, expected, G28_GRADIENT_TERMS)


def test_g_s_term_pushes_g_z_and_g_z_plus_dz_apart(tmp_path):
    """A small step of G's parameters down the term's gradient widens the pair's distance, and a
    step up it narrows it: the term asks G for different images (the paper's -lambda_gen)."""
    run = built_run(tmp_path, plugins={"zcr": {"sigma": 0.5, "dis_weight": 0.0}})
    plugin = run.plugins["zcr"]
    latents = run.sample_latents(16)
    with frozen_batch_statistics(run.generator):
        fake = run.generator_forward(latents)
    noise, _ = replayed_normal(run, "zcr", (16, 8))
    (term,) = plugin.ganforge_generator_loss_terms(types.SimpleNamespace(run=run, fake=fake, latents=latents))
    weighted = term.weight * term.value
    gradient = torch.autograd.grad(weighted, parameters(run.generator))

    def distance_after(step: float) -> float:
        moved = copy.deepcopy(run.generator)
        with torch.no_grad(), frozen_batch_statistics(moved):
            for parameter, slope in zip(moved.parameters(), gradient):
                parameter -= step * slope
            return float(MSE(run.generator_forward(latents, moved),
                             run.generator_forward({**latents, "z": latents["z"] + 0.5 * noise}, moved)))

    distance = -float(term.value.detach())
    assert distance > 0
    # To first order a step of lr changes the distance by lr |gradient|^2 / gen_weight: make it 1%.
    squared_norm = sum(float(slope.square().sum()) for slope in gradient)
    lr = 0.01 * distance * term.weight / squared_norm
    assert distance_after(lr) > distance * 1.005
    assert distance_after(-lr) < distance * 0.995


class StillBCR(BalancedConsistency):
    """bCR with a T that moves nothing, which the table refuses (its check is not a hook here)."""

    def ganforge_models_built(self, run):
        pass


def test_the_terms_are_zero_when_t_moves_nothing_and_sigma_is_zero(tmp_path):
    still = StillBCR({**BCR_DEFAULTS, "flip": False, "translation": 0.0})
    unmoved = LatentConsistency({**ZCR_DEFAULTS, "sigma": 0.0})
    result = testing.step_once(tiny_recipe(tmp_path / "runs"), still, unmoved)
    ctx, logs = result.d_ctx, result.logs
    for original, copy_of_it, name in ((ctx.d_real, ctx.views["bcr"], "bcr/real"),
                                       (ctx.d_fake, ctx.fake_views["bcr"], "bcr/fake"),
                                       (ctx.d_fake, ctx.fake_views["zcr"], "zcr")):
        # The same images in the one pass, each batch normalised alone: the same logits up to rounding.
        assert_close_to_rounding(copy_of_it.logits, original.logits, terms=D28_FORWARD_TERMS, what=name)
        rounding = rounding_tolerance(root_mean_square(original.logits), D28_FORWARD_TERMS)
        assert 0 <= float(logs[f"loss/D/{name}"]) <= rounding**2, name
    rounding = rounding_tolerance(root_mean_square(result.g_ctx.fake), G28_GRADIENT_TERMS)
    assert -rounding**2 <= float(logs["loss/G/zcr"]) <= 0


def test_g_s_extra_passes_leave_its_running_statistics_to_the_step_s_fakes(tmp_path):
    """zCR's G(z + dz) passes, in both phases, move none of G's batch-norm statistics: after a step
    they are bit for bit those of a step without zCR (the same fakes from the same streams)."""
    with_zcr = built_run(tmp_path / "zcr", plugins={"zcr": {}})
    without = built_run(tmp_path / "plain")
    train_step(with_zcr)
    train_step(without)
    buffers = list(without.generator.named_buffers())
    assert buffers, "the test needs a generator with batch norm"
    for (name, expected), actual in zip(buffers, with_zcr.generator.buffers()):
        assert torch.equal(actual, expected), name


COMBINATIONS = {"infogan": {"infogan": INFOGAN}, "conditional": CONDITIONAL, "diffaugment": {"diffaugment": {}},
                "r1": {"r1": {"every": 1}}}


@pytest.mark.parametrize("combination", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_bcr_and_zcr_train_with_another_variant(tmp_path, combination):
    result = testing.step_once(tiny_recipe(tmp_path / "runs", plugins={"bcr": {}, "zcr": {}, **combination}))
    logs, ctx = result.logs, result.d_ctx
    for name in ("loss/D/bcr/real", "loss/D/bcr/fake", "loss/D/zcr"):
        assert torch.isfinite(logs[name]) and float(logs[name]) > 0, name
    assert torch.isfinite(logs["loss/G/zcr"]) and float(logs["loss/G/zcr"]) < 0
    moved = ctx.fake_view_info["zcr"]
    assert set(moved) == set(ctx.latents) and not torch.equal(moved["z"], ctx.latents["z"])
    assert all(moved[name] is ctx.latents[name] for name in ctx.latents if name != "z")  # codes and labels kept


def test_a_zero_weight_leaves_out_its_batch_and_its_term(tmp_path):
    real_only = testing.step_once(tiny_recipe(tmp_path / "a", plugins={"bcr": {"fake_weight": 0.0}}))
    assert set(real_only.d_ctx.views) == {"bcr"} and real_only.d_ctx.fake_views == {}
    assert "loss/D/bcr/real" in real_only.logs and "loss/D/bcr/fake" not in real_only.logs
    generator_only = testing.step_once(tiny_recipe(tmp_path / "b", plugins={"zcr": {"dis_weight": 0.0}}))
    assert generator_only.d_ctx.fake_views == {} and "loss/D/zcr" not in generator_only.logs
    assert "loss/G/zcr" in generator_only.logs


def test_a_run_with_bcr_zcr_and_diffaugment_resumes_bit_for_bit(tmp_path):
    assert_resumes_bitwise(tmp_path, lambda: [], plugins={"bcr": {}, "zcr": {}, "diffaugment": {}, **CONDITIONAL})
    streams = torch.load(last_checkpoint(tmp_path / "halves"), weights_only=False)["rng"]["streams"]
    assert {"bcr", "zcr"} <= set(streams)


REFUSALS = {
    "discrete-noise": ({"zcr": {}}, {"latent": {"noise": "bernoulli"}}, "latent.noise",
                       "a binary noise cannot take"),
    "zcr-weights": ({"zcr": {"dis_weight": 0.0, "gen_weight": 0.0}}, {}, "plugins.zcr.dis_weight", "both 0"),
    "zcr-sigma": ({"zcr": {"sigma": 0.0}}, {}, "plugins.zcr.sigma", "must be greater than 0"),
    "bcr-weights": ({"bcr": {"real_weight": 0.0, "fake_weight": 0.0}}, {}, "plugins.bcr.real_weight", "both 0"),
    "bcr-negative": ({"bcr": {"fake_weight": -1.0}}, {}, "plugins.bcr.fake_weight", "must be 0 or more"),
    "bcr-still": ({"bcr": {"flip": False, "translation": 0.0}}, {}, "plugins.bcr.translation",
                  "less than one pixel and flip = false"),
    "bcr-below-a-pixel": ({"bcr": {"flip": False, "translation": 0.03}}, {}, "plugins.bcr.translation",
                          "0.03 shifts 28x28 px images by less than one pixel"),
    "bcr-too-far": ({"bcr": {"translation": 0.75}}, {}, "plugins.bcr.translation", "must be from 0 to 0.5"),
}


@pytest.mark.parametrize("plugins, sections, key, reason", REFUSALS.values(), ids=REFUSALS.keys())
def test_what_cannot_work_is_refused_at_check_in_one_line(tmp_path, plugins, sections, key, reason):
    recipe = write_recipe(tmp_path / "r.toml", tiny_recipe(tmp_path / "runs", plugins=plugins, **sections))
    assert_one_line_cli_error(invoke("check", recipe), 2, key, reason)
    assert not (tmp_path / "runs").exists()
