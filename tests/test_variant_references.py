"""The variants compute what their references define: EMA's buffers, per-sample critics under
R1/R2 and spectral norm, the gradient penalties under ``train.compile``, DiffAugment's translation
fill and the condition of WGAN-GP's interpolates. Each test cites the reference file it follows."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from ganforge import testing
from ganforge.plugin_spec import LIPSCHITZ
from ganforge.training import discriminator_step, train_step

from .conftest import assert_one_line_cli_error, invoke, make_host, tiny_recipe, write_recipe
from .test_variant_hooks import INFOGAN, batch_norms, built_run

EPS = torch.finfo(torch.float32).eps
WIDEST_SUM = 128 * 7 * 7  # dcgan-28's D: its linear layer sums 6,272 products per output
PASSES = 8  # forward and backward through its four weight layers, each rounding once per value


def step_with_ema(run) -> None:
    """One training step and the EMA's step end, as the training loop calls them."""
    logs = train_step(run)
    run.step += 1
    run.host.hook.ganforge_step_end(run=run, step=run.step, logs=logs)


def spectral_normalised(module: nn.Module) -> list[nn.Module]:
    return [layer for layer in module.modules() if hasattr(layer, "parametrizations")]


def parameter_set(groups) -> set[int]:
    return {id(parameter) for group in groups for parameter in group["params"]}


# -- EMA: parameters averaged, buffers copied --------------------------------------------------


def test_ema_lerps_parameters_and_copies_every_buffer(tmp_path):
    """stylegan2-ada-pytorch ``training/training_loop.py`` (the G_ema update in the training loop):
    ``p_ema.copy_(p.lerp(p_ema, ema_beta))`` for parameters, ``b_ema.copy_(b)`` for buffers."""
    run = built_run(tmp_path, plugins={"ema": {"decay": 0.9}})  # dcgan-28: batch norm in G
    ema = run.plugins["ema"]
    run.host.hook.ganforge_train_start(run=run)
    for step in (1, 2):
        before = {name: p.detach().clone() for name, p in ema.average.named_parameters()}
        step_with_ema(run)
        decay = min(0.9, (1 + step) / (10 + step))
        trained = dict(run.generator.named_parameters())
        for name, average in ema.average.named_parameters():
            current = trained[name].detach()
            expected = decay * before[name] + (1 - decay) * current
            # Three roundings (two products, one sum) against lerp's own two, on values this large.
            bound = 4 * EPS * (before[name].abs() + current.abs()) + torch.finfo(torch.float32).tiny
            assert ((average - expected).abs() <= bound).all(), name
    buffers = dict(run.generator.named_buffers())
    assert any(name.endswith("running_mean") for name in buffers)
    for name, average in ema.average.named_buffers():
        assert torch.equal(average, buffers[name]), name


def test_ema_of_a_spectrally_normalised_generator_keeps_unit_power_iteration_vectors(tmp_path):
    """stylegan2-ada-pytorch ``training/training_loop.py`` copies buffers; spectral norm's ``_u``
    and ``_v`` are buffers and must stay unit vectors (torch ``nn/utils/parametrizations.py``,
    ``_SpectralNorm``), so the average divides its weight by a true singular value estimate."""
    run = built_run(tmp_path, plugins={"spectral-norm": {"generator": True}, "ema": {}}, loss={"name": "hinge"})
    ema = run.plugins["ema"]
    run.host.hook.ganforge_train_start(run=run)
    for _ in range(2):
        step_with_ema(run)
    averaged = spectral_normalised(ema.average)
    assert len(averaged) == len(spectral_normalised(run.generator)) == 4
    assert "project.0.parametrizations.weight.original" in dict(ema.average.named_parameters())
    ema.average.eval()
    for layer in averaged:
        normaliser = layer.parametrizations.weight[0]
        for vector in (normaliser._u, normaliser._v):
            # A normalised vector's norm is 1 up to one rounding per entry summed.
            assert abs(vector.norm().item() - 1) <= 4 * EPS * math.sqrt(vector.numel())
        weight = layer.weight  # what the average's forward uses
        matrix = weight.transpose(0, 1).flatten(1) if isinstance(layer, nn.ConvTranspose2d) else weight.flatten(1)
        # Not a rounding tolerance: one power iteration per training pass, two steps in.
        assert torch.linalg.matrix_norm(matrix, ord=2).item() == pytest.approx(1.0, abs=0.05)


# -- R1 and R2: a per-sample gradient ----------------------------------------------------------


def test_r1_penalises_each_samples_own_gradient(tmp_path):
    """stylegan2-ada-pytorch ``training/loss.py``, ``StyleGAN2Loss.accumulate_gradients``: R1 is
    the gradient of ``real_logits.sum()``, squared and summed per sample, which is each sample's
    own gradient only when D has no batch statistics (StyleGAN2's D has none). Each norm in the
    batch equals the one of that image alone, through the same D in train mode."""
    run = built_run(tmp_path, plugins={"r1": {"gamma": 2.0, "every": 1}})
    assert not batch_norms(run.discriminator) and any("r1:" in note for note in run.notes)
    (ctx,), _, _ = discriminator_step(run)
    (term,) = run.plugins["r1"].ganforge_discriminator_loss_terms(ctx)
    run.discriminator.train()
    alone = []
    for image in ctx.real.detach():
        image = image.unsqueeze(0).requires_grad_(True)
        (gradient,) = torch.autograd.grad(ctx.discriminate(image, ctx.conditions).logits.sum(), image)
        alone.append(gradient.flatten().norm())
    alone = torch.stack(alone)
    images = ctx.real.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(ctx.discriminate(images, ctx.conditions).logits.sum(), images)
    together = gradient.flatten(1).norm(dim=1)
    tolerance = PASSES * EPS * math.sqrt(WIDEST_SUM)
    assert ((together - alone).abs() <= tolerance * alone.abs()).all(), (together, alone)
    expected = (alone**2).mean() * (2.0 / 2)
    assert term.value.item() == pytest.approx(expected.item(), rel=2 * tolerance)
    # The penalty trains every weight of D, the new layer norms' too, and never G. (The biases just
    # before a leaky ReLU or the output only move where its kink is, which has no slope.)
    named = {name: p for name, p in run.discriminator.trunk.named_parameters() if name.endswith("weight")}
    gradients = torch.autograd.grad(term.value, list(named.values()), allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in gradients), [
        name for name, g in zip(named, gradients) if g is None or not g.abs().sum()]
    assert any(isinstance(m, nn.GroupNorm) for m in run.discriminator.modules())
    assert all(p.grad is None for p in run.generator.parameters())


@pytest.mark.parametrize("plugins", [{"r1": {}, "r2": {}}, {"r1": {"normalisation": "instance"}, "wgan-gp": {}}],
                         ids=["r1+r2", "r1+wgan-gp"])
def test_two_penalties_replace_d_batch_norms_once_and_the_optimizer_trains_the_new_layers(tmp_path, plugins):
    sections = {"loss": {"name": "wasserstein"}} if "wgan-gp" in plugins else {}
    run = built_run(tmp_path, plugins=plugins, **sections)
    assert not batch_norms(run.discriminator) and batch_norms(run.generator)
    assert sum("batch norms are" in note for note in run.notes) == 1
    assert any(isinstance(m, nn.GroupNorm) for m in run.discriminator.modules())
    d_parameters = {id(p) for p in run.discriminator.parameters()}
    assert parameter_set(run.parameter_groups["D"]) == d_parameters
    assert parameter_set(run.optimizer_d.param_groups) == d_parameters


# -- spectral norm: no batch statistics in a Lipschitz D ---------------------------------------


def test_spectral_norm_removes_d_batch_norms_so_a_sample_is_scored_alone(tmp_path):
    """StudioGAN ``src/models/deep_conv.py`` and ``src/models/resnet.py`` (``DiscBlock``,
    ``DiscOptBlock``): D's batch norms exist only ``if not apply_d_sn``."""
    run = built_run(tmp_path, plugins={"spectral-norm": {}}, loss={"name": "wasserstein"})
    assert not batch_norms(run.discriminator) and batch_norms(run.generator)
    assert any("spectral-norm: the discriminator's 2 batch norms are removed" in note for note in run.notes)
    run.discriminator.train()
    # A train-mode pass also steps the power iteration: each batch goes through its own copy of D.
    twin = copy.deepcopy(run.discriminator)
    images = torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        first = run.discriminator(images[:8]).logits[:4]
        other_company = twin(torch.cat([images[:4], images[8:]])).logits[:4]
    tolerance = PASSES * EPS * math.sqrt(WIDEST_SUM) * first.abs().max()
    assert (first - other_company).abs().max() <= tolerance
    assert parameter_set(run.optimizer_d.param_groups) == {id(p) for p in run.discriminator.parameters()}


@pytest.mark.parametrize("plugins", [{"spectral-norm": {}}, {"r1": {}}], ids=["spectral-norm", "r1"])
def test_q_head_keeps_its_batch_norm_where_d_loses_its_own_and_info_loss_trains_it(tmp_path, plugins):
    """Only the road to D's logits must score a sample alone; Q's outputs are its own."""
    step = testing.step_once(tiny_recipe(tmp_path, plugins={**plugins, "infogan": INFOGAN}, loss={"name": "hinge"}),
                             host=make_host())
    assert not batch_norms(step.run.discriminator.trunk)
    trained = batch_norms(step.run.discriminator.heads["q"])
    assert trained, "InfoGAN's Q head lost its batch norm"
    assert all(int(norm.num_batches_tracked) > 0 for norm in trained)
    # Batch norm's scale starts at 1: one step of the info loss must have moved it.
    assert not torch.equal(trained[0].weight, torch.ones_like(trained[0].weight)), "Q's batch norm was not trained"


def test_spectral_norm_with_layer_norms_trains_the_new_layers(tmp_path):
    run = built_run(tmp_path, plugins={"spectral-norm": {"normalisation": "layer"}}, loss={"name": "hinge"})
    norms = [m for m in run.discriminator.modules() if isinstance(m, (nn.GroupNorm, nn.LayerNorm))]
    assert len(norms) == 2 and not batch_norms(run.discriminator)
    assert parameter_set(run.optimizer_d.param_groups) == {id(p) for p in run.discriminator.parameters()}


def test_spectral_norm_keeping_batch_norm_provides_no_lipschitz_critic_and_wasserstein_is_refused(tmp_path):
    from ganforge_plugins.objectives.spectral_norm import DEFAULTS, SPEC

    assert SPEC.provided(DEFAULTS) == {LIPSCHITZ}
    assert SPEC.provided({**DEFAULTS, "normalisation": "keep"}) == set()

    def check(**sections):
        return invoke("check", write_recipe(tmp_path / "r.toml", tiny_recipe(tmp_path / "runs", **sections)))

    kept = {"spectral-norm": {"normalisation": "keep"}}
    assert_one_line_cli_error(check(plugins=kept, loss={"name": "wasserstein"}), 2, "loss.name", "Lipschitz",
                              '"keep"', "batch norm in D")
    assert check(plugins=kept, loss={"name": "hinge"}).exit_code == 0
    assert len(batch_norms(built_run(tmp_path, plugins=kept, loss={"name": "hinge"}).discriminator)) == 2
    removed = check(plugins={"spectral-norm": {}}, loss={"name": "wasserstein"})
    assert removed.exit_code == 0 and "batch norms are removed" in removed.stdout
    assert_one_line_cli_error(check(plugins={"spectral-norm": {"normalisation": "batch"}}, loss={"name": "hinge"}), 2,
                              "plugins.spectral-norm.normalisation", "'keep'", "'batch'")


# -- gradient penalties and train.compile --------------------------------------------------------


@pytest.mark.parametrize("plugin", ["r1", "r2", "wgan-gp"])
def test_a_gradient_penalty_with_compiled_networks_is_refused_at_check(tmp_path, plugin):
    """torch.compile's aot_autograd raises "does not currently support double backward" at the
    first penalty step; the recipe is refused before anything trains."""
    sections = {"loss": {"name": "wasserstein"}} if plugin == "wgan-gp" else {}
    recipe = tiny_recipe(tmp_path / "runs", plugins={plugin: {"every": 1} if plugin != "wgan-gp" else {}},
                         train={"compile": True}, **sections)
    result = invoke("check", write_recipe(tmp_path / "r.toml", recipe))
    assert_one_line_cli_error(result, 2, "train.compile", "double backward", "set train.compile = false")
    assert invoke("check", write_recipe(tmp_path / "eager.toml", {**recipe, "train": {**recipe["train"],
                                                                                        "compile": False}})).exit_code == 0


# -- DiffAugment's translation and WGAN-GP's conditions ------------------------------------------


def test_diffaugment_translation_fills_with_zero():
    """mit-han-lab/data-efficient-gans ``DiffAugment_pytorch.py``, ``rand_translation``: the image
    is zero-padded (``F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])``) before the shifted gather."""
    from ganforge_plugins.augmentation.diffaugment import DiffAugment

    augment = DiffAugment({"policy": ["translation"]})
    images = torch.ones(16, 1, 16, 16)
    moved = augment(images, torch.Generator().manual_seed(0))
    assert set(torch.unique(moved).tolist()) == {0.0, 1.0}
    # Every uncovered pixel is the fill: as many as the shifts uncover, none elsewhere.
    assert (moved == 0).any(dim=(1, 2, 3)).sum() > 0


def test_conditional_wgan_gp_scores_interpolates_with_the_real_labels(tmp_path):
    """StudioGAN ``src/utils/losses.py``, ``cal_grad_penalty(real_images, real_labels, ...)``: the
    mixes are scored with the real images' labels (``src/worker.py`` passes ``real_labels``)."""
    from ganforge_plugins.objectives.wgan_gp import STREAM

    run = built_run(tmp_path, plugins={"wgan-gp": {}, "conditional": {"classes": 4}}, loss={"name": "wasserstein"})
    (ctx,), _, _ = discriminator_step(run)
    real_labels, fake_labels = ctx.conditions["label"], ctx.latents["label"]
    assert not torch.equal(real_labels, fake_labels)
    stream = run.rng(STREAM)
    state = stream.get_state()
    (term,) = run.plugins["wgan-gp"].ganforge_discriminator_loss_terms(ctx)

    def penalty(labels):
        stream.set_state(state)  # the same interpolation draws
        real, fake = ctx.real.detach(), ctx.fake.detach()
        mix = torch.rand(real.shape[0], 1, 1, 1, generator=stream)
        between = (mix * real + (1 - mix) * fake).requires_grad_(True)
        logits = ctx.discriminate(between, {"label": labels}).logits
        (gradient,) = torch.autograd.grad(logits.sum(), between)
        return ((gradient.flatten(1).norm(dim=1) - 1) ** 2).mean()

    with_real, with_fake = penalty(real_labels), penalty(fake_labels)
    tolerance = PASSES * EPS * math.sqrt(WIDEST_SUM)
    assert term.value.item() == pytest.approx(with_real.item(), rel=tolerance)
    assert abs(with_fake.item() - with_real.item()) > 100 * tolerance * with_real.item()
