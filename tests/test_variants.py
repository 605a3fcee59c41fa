"""The GAN variants that ship as plugins: each trains from a recipe, its terms are logged by name,
its gradients reach the right parameters, its state resumes bit for bit, and the combinations the
variants page promises train together while the ones that cannot work are refused at check."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ganforge.errors import RecipeError
from ganforge.step_services import transform
from ganforge.training import discriminator_step, train_step

from .conftest import assert_one_line_cli_error, invoke, metric_records, run_tiny, tiny_recipe, write_recipe
from .test_variant_hooks import assert_resumes_bitwise, batch_norms, built_run
from .tolerance import assert_close_to_rounding

INFOGAN = {"codes": [{"name": "digit", "dist": "categorical", "size": 4, "weight": 1.0},
                     {"name": "slant", "dist": "uniform", "size": 1, "weight": 0.1}],
           "traverse_every_sample": False}
CLASSES = {"classes": 4}  # shapes: four sprite shapes
WGAN = {"loss": {"name": "wasserstein"}}


def logged_names(run) -> set[str]:
    return {name for record in metric_records(run.directory) for name in record}


def no_gradient(parameters) -> bool:
    return all(p.grad is None or not p.grad.any() for p in parameters)


def some_gradient(parameters) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in parameters)


def gradients_of(value: torch.Tensor, module: nn.Module) -> list[torch.Tensor | None]:
    parameters = [p for p in module.parameters() if p.requires_grad]
    return torch.autograd.grad(value, parameters, retain_graph=True, allow_unused=True)


# -- objectives and penalties ----------------------------------------------------------------------


def test_wgan_gp_trains_a_critic_without_batch_norm_five_critic_steps_and_a_penalty_on_d_only(tmp_path):
    run = built_run(tmp_path, plugins={"wgan-gp": {}}, **WGAN)
    assert not batch_norms(run.discriminator) and batch_norms(run.generator)
    assert run.d_steps == 5 and any("wgan-gp" in note for note in run.notes)
    (ctx,), _, logs = discriminator_step(run)
    (term,) = run.plugins["wgan-gp"].ganforge_discriminator_loss_terms(ctx)
    assert term.name == "gradient_penalty" and term.weight == 10.0 and term.value > 0
    assert all(g is None for g in gradients_of(term.value, run.generator))
    assert any(g is not None and g.abs().sum() > 0 for g in gradients_of(term.value, run.discriminator))
    trained = run_tiny(tmp_path / "trained", plugins={"wgan-gp": {}}, **WGAN)
    assert {"loss/D/gradient_penalty", "critic/gradient_norm", "loss/D/adv"} <= logged_names(trained)
    assert trained.images_seen == 4 * 5 * 16  # 4 generator steps, 5 critic batches each


def test_ganforge_discriminator_steps_a_plugin_asks_and_the_recipe_overrides(tmp_path):
    from ganforge import hookimpl

    from .conftest import make_host

    assert built_run(tmp_path, plugins={"wgan-gp": {"critic_steps": 3}}, **WGAN).d_steps == 3
    assert built_run(tmp_path, plugins={"wgan-gp": {}}, train={"d_steps": 2}, **WGAN).d_steps == 2
    assert built_run(tmp_path / "plain").d_steps == 1

    class AsksTwo:
        @hookimpl
        def ganforge_discriminator_steps(self, run):
            return 2

    with pytest.raises(RecipeError) as caught:
        built_run(tmp_path, make_host(("asks-two", AsksTwo())), plugins={"wgan-gp": {}}, **WGAN)
    assert caught.value.key == "train.d_steps" and "asks-two 2" in str(caught.value) and "wgan-gp 5" in str(caught.value)


def test_wasserstein_without_a_lipschitz_penalty_and_impossible_combinations_are_refused_at_check(tmp_path):
    def check(**sections):
        return invoke("check", write_recipe(tmp_path / "r.toml", tiny_recipe(tmp_path / "runs", **sections)))

    assert_one_line_cli_error(check(**WGAN), 2, "loss.name", "Lipschitz", "[plugins.wgan-gp]", "[plugins.spectral-norm]")
    assert check(plugins={"spectral-norm": {}}, **WGAN).exit_code == 0
    assert_one_line_cli_error(check(plugins={"wgan-gp": {}}), 2, "loss.name", 'set loss.name = "wasserstein"')
    assert_one_line_cli_error(check(plugins={"acgan": CLASSES, "conditional": CLASSES}), 2, "plugins.acgan",
                              "conditional", "pick one")
    assert_one_line_cli_error(check(plugins={"conditional": {"classes": 3}}), 2, "plugins.conditional.classes",
                              "4 classes")


def test_r1_is_lazy_scaled_by_its_interval_and_r2_penalises_generated_images(tmp_path):
    run = built_run(tmp_path, plugins={"r1": {"gamma": 2.0, "every": 2}, "r2": {"gamma": 2.0, "every": 1}})
    (ctx,), _, _ = discriminator_step(run)  # step 1: R1 rests, R2 (every step) works
    assert run.plugins["r1"].ganforge_discriminator_loss_terms(ctx) == []
    (r2,) = run.plugins["r2"].ganforge_discriminator_loss_terms(ctx)
    run.step += 1
    (ctx,), _, _ = discriminator_step(run)
    (r1,) = run.plugins["r1"].ganforge_discriminator_loss_terms(ctx)
    images = ctx.real.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(ctx.discriminate(images, ctx.conditions).logits.sum(), images)
    expected = gradient.flatten(1).pow(2).sum(1).mean() * (2.0 / 2 * 2)  # gamma / 2, times the interval
    assert_close_to_rounding(r1.value, expected, terms=1_000)  # 784 squares per image, a mean over 16
    assert all(g is None for g in gradients_of(r1.value + r2.value, run.generator))
    trained = run_tiny(tmp_path / "trained", plugins={"r1": {"every": 2}, "r2": {"every": 4}})
    assert {"loss/D/r1", "loss/D/r2"} <= logged_names(trained)


def test_spectral_norm_bounds_each_discriminator_layer_and_resumes_bitwise(tmp_path):
    run = built_run(tmp_path, plugins={"spectral-norm": {"generator": True}}, loss={"name": "hinge"})
    layers = [m for m in run.discriminator.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(hasattr(layer, "parametrizations") for layer in layers)
    assert any(hasattr(m, "parametrizations") for m in run.generator.modules())
    for _ in range(30):  # the power iteration converges over training passes
        train_step(run)
    for layer in layers:
        weight = layer.weight.flatten(1)
        assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(1.0, abs=0.05)
    assert_resumes_bitwise(tmp_path / "resume", lambda: [], plugins={"spectral-norm": {}}, loss={"name": "hinge"})


# -- conditioning and averaging -------------------------------------------------------------------


def test_conditional_projects_the_label_and_g_reads_it(tmp_path):
    run = built_run(tmp_path, plugins={"conditional": CLASSES})
    assert run.inputs["label"].input_dim == 4
    projection = run.discriminator.heads["projection"]
    images = torch.zeros(3, 1, 28, 28)
    labels = torch.eye(4)[:3]
    run.discriminator.eval()
    with_label = run.discriminator(images, {"label": labels})
    trunk_only = run.discriminator.trunk.adversarial(run.discriminator.trunk.features(images))
    added = projection(with_label.features, {"label": labels})
    assert torch.allclose(with_label.logits, trunk_only + added, atol=1e-6)
    # The real images' labels condition D in the D phase.
    (ctx,), _, _ = discriminator_step(run)
    assert torch.equal(ctx.conditions["label"].argmax(1), ctx.labels["shape"])


def test_conditional_runs_draw_a_row_per_class_and_report_class_accuracy(tmp_path):
    trained = run_tiny(tmp_path, plugins={"conditional": CLASSES}, train={"sample_every": 4})
    grids = sorted((trained.directory / "samples").glob("classes_*.png"))
    assert [p.name for p in grids] == ["classes_0000004.png"]
    from PIL import Image

    # One row of 28 px images per class, ten columns, 2 px apart.
    assert Image.open(grids[0]).size == (10 * 28 + 11 * 2, 4 * 28 + 5 * 2)
    from ganforge.api import load_generator

    generator = load_generator(trained.directory / "checkpoints" / "last.pt")
    one_class = generator.sample(6, seed=0, fixed={"label": 2})
    assert one_class.shape == (6, 1, 28, 28)
    # ganforge eval: how often a classifier of the sprites sees the class G was asked for.
    from ganforge.evaluator import train_evaluator
    from ganforge_plugins.data.shapes import generate_shapes

    network = tmp_path / "shapes-net.pt"
    train_evaluator(generate_shapes(600, seed=5), "shapes", "train", 100, epochs=1, out=network, log=lambda line: None)
    result = invoke("eval", trained.directory, "--metrics", "class-accuracy", "--evaluator", network, "--n", "100", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert 0 <= report["class_accuracy"] <= 1 and {f"class_accuracy/{k}" for k in range(4)} <= set(report)
    assert report["provenance"]["class-accuracy"]["images_per_class"] == 25


def test_acgan_class_loss_reaches_g_through_generated_images_and_d_through_both(tmp_path):
    run = built_run(tmp_path, plugins={"acgan": CLASSES, "infogan": {"codes": [INFOGAN["codes"][1]]}})
    from ganforge.training import StepContext

    (stepped,), (fake,), _ = discriminator_step(run)  # a step's batch; its graph is spent, so pass D again
    d_real = run.discriminator(stepped.real, stepped.conditions)
    d_fake = run.discriminator(stepped.fake, stepped.latents)
    ctx = StepContext("D", 1, run, stepped.real, stepped.labels, stepped.latents, stepped.fake, d_fake, d_real, {},
                      stepped.conditions)
    real_term, fake_term = run.plugins["acgan"].ganforge_discriminator_loss_terms(ctx)
    assert (real_term.name, fake_term.name) == ("class/real", "class/fake")
    assert all(g is None for g in gradients_of(real_term.value + fake_term.value, run.generator))
    head = run.discriminator.heads["classifier"]
    assert all(g is not None for g in gradients_of(real_term.value, head))
    d_fake = run.discriminator(transform(run, fake), ctx.latents)
    g_ctx = StepContext("G", ctx.step, run, ctx.real, ctx.labels, ctx.latents, fake, d_fake, None, {}, ctx.conditions)
    (class_term,) = run.plugins["acgan"].ganforge_generator_loss_terms(g_ctx)
    assert any(g is not None and g.abs().sum() > 0 for g in gradients_of(class_term.value, run.generator))


def test_ema_averages_with_a_warm_up_never_trains_and_serves_pictures(tmp_path):
    run = built_run(tmp_path, plugins={"ema": {"decay": 0.9}})
    ema = run.plugins["ema"]
    run.host.hook.ganforge_train_start(run=run)
    start = {k: v.clone() for k, v in ema.average.state_dict().items()}
    train_step(run)
    run.step = 1
    current = dict(run.generator.named_parameters())
    before = {k: v.clone() for k, v in ema.average.named_parameters()}
    ema.ganforge_step_end(run, 1)
    decay = min(0.9, 2 / 11)  # the warm-up's decay at step 1
    for name, value in ema.average.named_parameters():  # buffers are copied (test_variant_references.py)
        assert torch.allclose(value, before[name] * decay + current[name] * (1 - decay), atol=1e-6)
    assert not any(torch.equal(start[k], v) for k, v in ema.average.state_dict().items() if k.endswith("weight"))
    assert all(not p.requires_grad and p.grad is None for p in ema.average.parameters())
    assert run.inference_generator() is ema.average


# -- combinations -------------------------------------------------------------------------------

COMBINATIONS = {
    "infogan+wgan-gp": ({"plugins": {"infogan": INFOGAN, "wgan-gp": {"critic_steps": 2}}, **WGAN},
                        {"loss/D/gradient_penalty", "loss/D/info/digit", "loss/G/info/slant"}),
    "infogan+acgan": ({"plugins": {"infogan": {**INFOGAN, "codes": [INFOGAN["codes"][1]]}, "acgan": CLASSES}},
                      {"loss/D/class/real", "loss/D/class/fake", "loss/G/class", "loss/G/info/slant"}),
    "conditional+hinge+spectral-norm+ema": ({"plugins": {"conditional": CLASSES, "spectral-norm": {}, "ema": {}},
                                             "loss": {"name": "hinge"}}, {"loss/D/adv", "loss/G/adv"}),
    "diffaugment+infogan": ({"plugins": {"diffaugment": {}, "infogan": INFOGAN}},
                            {"loss/D/info/digit", "loss/G/info/digit"}),
}


@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_the_promised_combinations_train_log_every_term_and_resume_bitwise(tmp_path, combination):
    sections, terms = COMBINATIONS[combination]
    straight, _ = assert_resumes_bitwise(tmp_path, lambda: [], **sections)
    assert terms <= logged_names(straight)
    for parameter in straight.generator.parameters():
        assert torch.isfinite(parameter).all()


def test_diffaugment_comes_before_every_other_transform_and_heads_see_augmented_images(tmp_path):
    from ganforge import hookimpl

    class Marker:
        order = 0

        def __call__(self, images, rng):
            return images

        @hookimpl
        def ganforge_discriminator_transforms(self, run):
            return [("a-marker", self)]

    from .conftest import make_host

    run = built_run(tmp_path, host=make_host(("marker", Marker())), plugins={"diffaugment": {}})
    assert [name for name, _ in run.transforms] == ["diffaugment", "a-marker"]
    images = torch.rand(8, 1, 28, 28) * 2 - 1
    moved = transform(run, images.clone().requires_grad_(True))
    assert moved.shape == images.shape and not torch.equal(moved, images)


def test_the_image_changes_are_differentiable_seeded_and_keep_shapes():
    from ganforge_plugins.augmentation.images import colour, cutout, translate

    images = (torch.rand(6, 3, 16, 16) * 2 - 1).requires_grad_(True)
    for change in (colour, translate, cutout):
        a = change(images, torch.Generator().manual_seed(1))
        b = change(images, torch.Generator().manual_seed(1))
        assert a.shape == images.shape and torch.equal(a, b)
        (gradient,) = torch.autograd.grad(a.sum(), images)
        assert gradient.abs().sum() > 0
    shifted = translate(images, torch.Generator().manual_seed(0), fraction=0.25)
    # A whole-pixel shift: every row of the result is a row of the image or the fill.
    assert set(torch.unique(shifted.detach()).tolist()) <= set(torch.unique(images.detach()).tolist()) | {0.0}
    blanked = cutout(images, torch.Generator().manual_seed(0), fraction=0.5)
    assert 0 < (blanked == 0).float().mean() <= 0.25 + 1e-6


def test_a_bad_setting_of_a_variant_is_a_recipe_error_naming_its_key(tmp_path):
    with pytest.raises(RecipeError) as caught:
        built_run(tmp_path, plugins={"diffaugment": {"policy": ["colour", "flip"]}})
    assert caught.value.key == "plugins.diffaugment.policy[1]"
    with pytest.raises(RecipeError) as caught:
        built_run(tmp_path, plugins={"ema": {"decay": 1.5}})
    assert caught.value.key == "plugins.ema.decay"
