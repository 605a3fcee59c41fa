"""Each hook is called with what docs/hooks.md says, in the documented order.

Every hook in ganforge.hookspecs has a test here named ``test_<hook name>...``; the meta-tests at
the end fail when a hook lacks one, or lacks its section in docs/hooks.md.
"""

from __future__ import annotations

import copy
import inspect
import re

import pytest
import torch
from torch import nn

from ganforge import hookimpl, hookspecs
from ganforge.contracts import LOSS_CHECK_BATCH
from ganforge.data import DataSettings
from ganforge.errors import PluginError
from ganforge.losses import LossTerm
from ganforge.pluginmanager import HOOK_NAMES, REGISTRY_KINDS
from ganforge.training import StepContext
from ganforge_plugins.models.dcgan import build_dcgan_28
from ganforge_plugins.latents.distributions import Uniform
from ganforge_plugins.objectives.losses import NonSaturating
from ganforge_plugins.data.shapes import generate_shapes

from .conftest import REPO, make_host, run_tiny
from .tolerance import D28_GRADIENT_TERMS, G28_GRADIENT_TERMS, assert_close_to_rounding

HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("ganforge_"))


# -- registration -------------------------------------------------------------------------------


def test_ganforge_register_models_builds_with_the_image_shape_and_input_width(tmp_path):
    calls = []

    class Models:
        @hookimpl
        def ganforge_register_models(self, register):
            def build(image_shape, input_dim):
                calls.append((image_shape, input_dim))
                return build_dcgan_28(image_shape, input_dim)

            register("probe-28", build)

    run_tiny(tmp_path, make_host(("models-probe", Models())), model={"name": "probe-28"})
    assert calls == [((1, 28, 28), 8)]


def test_ganforge_register_losses_receives_discriminator_logits(tmp_path):
    shapes = []

    class Recording(NonSaturating):
        def discriminator_loss(self, real_logits, fake_logits):
            shapes.append((tuple(real_logits.shape), tuple(fake_logits.shape)))
            return super().discriminator_loss(real_logits, fake_logits)

    class Losses:
        @hookimpl
        def ganforge_register_losses(self, register):
            register("recording", Recording())

    run = run_tiny(tmp_path, make_host(("loss-probe", Losses())), loss={"name": "recording"})
    # The contract check tries the loss once on a few logits before the first step.
    checked = (LOSS_CHECK_BATCH,)
    assert shapes == [(checked, checked)] + [((16,), (16,))] * run.step


def test_ganforge_register_datasets_loads_with_resolved_settings(tmp_path):
    seen = []

    class Datasets:
        @hookimpl
        def ganforge_register_datasets(self, register):
            def load(settings):
                seen.append(settings)
                return generate_shapes(64, 28, settings.seed)

            register("probe-shapes", load)

    run_tiny(tmp_path, make_host(("data-probe", Datasets())), data={"name": "probe-shapes", "root": str(tmp_path)},
             run={"seed": 5})
    assert len(seen) == 1 and isinstance(seen[0], DataSettings)
    assert (seen[0].name, seen[0].root, seen[0].split, seen[0].seed) == ("probe-shapes", tmp_path, "train", 5)


def test_ganforge_register_latents_factory_gets_the_size_and_samples_from_the_run_generator(tmp_path):
    generators = []

    class Recorded(Uniform):
        def sample(self, n, generator, device="cpu"):
            generators.append(generator)
            return super().sample(n, generator, device)

    class Latents:
        @hookimpl
        def ganforge_register_latents(self, register):
            register("recorded", Recorded)

    run = run_tiny(tmp_path, make_host(("latent-probe", Latents())), latent={"noise": "recorded", "noise_dim": 5})
    assert run.inputs["z"].size == 5
    assert all(isinstance(g, torch.Generator) for g in generators)
    assert run.latent_rng in generators


def test_ganforge_register_metrics_records_the_metric_and_its_plugin():
    def count_images(run, data):
        return {"images": float(len(data))}

    class Metrics:
        @hookimpl
        def ganforge_register_metrics(self, register):
            register("count", count_images)

    host = make_host(("metric-probe", Metrics()))
    assert host.metrics.get("count") is count_images
    assert host.metrics.entry("count").plugin == "metric-probe"


class Switchable:
    """A run plugin: registered by a plugin module, switched on by ``[plugins.switchable]``."""

    made = []

    def __init__(self, settings):
        self.settings = settings
        Switchable.made.append(self)

    @hookimpl
    def ganforge_train_start(self, run):
        self.started_with = run


class SwitchableModule:
    @hookimpl
    def ganforge_register_run_plugins(self, register):
        register("switchable", Switchable, defaults={"strength": 1.0, "label": "x"})


def test_ganforge_register_run_plugins_factory_gets_merged_settings_and_joins_the_run(tmp_path):
    Switchable.made.clear()
    host = make_host(("switchable-module", SwitchableModule()))
    run = run_tiny(tmp_path, host, plugins={"switchable": {"strength": 2}})
    (plugin,) = Switchable.made
    assert plugin.settings == {"strength": 2.0, "label": "x"}
    assert run.plugins == {"switchable": plugin}
    assert plugin.started_with is run


def test_ganforge_register_run_plugins_without_the_table_nothing_is_switched_on(tmp_path):
    Switchable.made.clear()
    run = run_tiny(tmp_path, make_host(("switchable-module", SwitchableModule())))
    assert Switchable.made == [] and run.plugins == {}


# -- setup --------------------------------------------------------------------------------------


class CodeAndHead:
    """An InfoGAN-shaped plugin: one extra input, one head, a term in each objective."""

    def __init__(self, weight_d=1.0, weight_g=1.0):
        self.weight_d, self.weight_g = weight_d, weight_g
        self.contexts: list[StepContext] = []
        self.feature_dims = []

    @hookimpl
    def ganforge_generator_inputs(self, run):
        return [("code", Uniform(2))]

    @hookimpl
    def ganforge_discriminator_heads(self, run, feature_dim):
        self.feature_dims.append(feature_dim)
        return [("probe", nn.Linear(feature_dim, 2))]

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        self.contexts.append(ctx)
        return [LossTerm("probe", ctx.d_real.features.pow(2).mean(), self.weight_d)]

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        self.contexts.append(ctx)
        return [LossTerm("probe", ctx.fake.mean(), self.weight_g)]


def test_ganforge_generator_inputs_are_sampled_and_concatenated_after_z(tmp_path):
    plugin = CodeAndHead()
    run = run_tiny(tmp_path, make_host(("code", plugin)), train={"steps": 1})
    assert list(run.inputs) == ["z", "code"]
    assert run.input_dim == 8 + 2
    latents = plugin.contexts[0].latents
    assert latents["code"].shape == (16, 2) and latents["code"].abs().max() <= 1
    joined = run.generator_input(latents)
    assert torch.equal(joined[:, 8:], latents["code"]) and torch.equal(joined[:, :8], latents["z"])


def test_ganforge_discriminator_heads_attach_to_the_features_and_train_with_d(tmp_path):
    plugin = CodeAndHead()
    run = run_tiny(tmp_path, make_host(("code", plugin)), train={"steps": 1})
    assert plugin.feature_dims == [1024]
    head = run.discriminator.heads["probe"]
    optimized = {id(p) for group in run.optimizer_d.param_groups for p in group["params"]}
    assert all(id(p) in optimized for p in head.parameters())
    d_phase, g_phase = plugin.contexts
    assert d_phase.d_real.heads["probe"].shape == (16, 2)
    assert d_phase.d_fake.heads["probe"].shape == (16, 2)
    # D(real) is computed in the G phase only when something reads ctx.d_real.
    assert g_phase.d_fake.heads["probe"].requires_grad and g_phase._d_real is None


# -- per step: the terms' gradients reach exactly the networks the docs say ------------------------


def _first_step(tmp_path, plugin):
    """Models as built, and the run after one step with ``plugin``; the gradients of the last
    update stay on the parameters (they are only cleared before the next backward pass)."""
    host = make_host(("code", plugin))
    from ganforge.launch import read_recipe
    from ganforge.run import Run
    from .conftest import tiny_recipe, write_recipe

    recipe = read_recipe(write_recipe(tmp_path / "r.toml", tiny_recipe(tmp_path / "runs")), [], host)
    run = Run(recipe, host, tmp_path / "runs" / "tiny")
    initial = (copy.deepcopy(run.generator), copy.deepcopy(run.discriminator))
    from ganforge.training import train_step

    train_step(run)
    return run, initial


def test_ganforge_discriminator_loss_terms_gradient_is_added_to_d(tmp_path):
    with_term, initial = _first_step(tmp_path / "a", CodeAndHead(weight_d=3.0))
    without, _ = _first_step(tmp_path / "b", CodeAndHead(weight_d=0.0))
    _, discriminator = initial
    ctx = [c for c in with_term.host.pm.get_plugin("code").contexts if c.phase == "D"][0]
    # The term alone, recomputed on the same real batch with the initial weights.
    term = discriminator(ctx.real).features.pow(2).mean()
    # The shared features are Discriminator28's ``trunk``; its adversarial ``head`` is not involved.
    expected = torch.autograd.grad(term, list(discriminator.trunk.trunk.parameters()))
    with_grads = [p.grad for p in with_term.discriminator.trunk.trunk.parameters()]
    without_grads = [p.grad for p in without.discriminator.trunk.trunk.parameters()]
    # The difference cancels the adversarial gradient: it keeps rounding of the whole gradient's size.
    assert_close_to_rounding([a - b for a, b in zip(with_grads, without_grads)], [3.0 * grad for grad in expected],
                             terms=D28_GRADIENT_TERMS, scale=with_grads)


def test_ganforge_generator_loss_terms_gradient_reaches_g_and_not_d(tmp_path):
    with_term, initial = _first_step(tmp_path / "a", CodeAndHead(weight_g=2.0))
    without, _ = _first_step(tmp_path / "b", CodeAndHead(weight_g=0.0))
    generator, _ = initial
    ctx = [c for c in with_term.host.pm.get_plugin("code").contexts if c.phase == "G"][0]
    term = generator(with_term.generator_input(ctx.latents)).mean()
    expected = torch.autograd.grad(term, list(generator.parameters()))
    with_grads = [p.grad for p in with_term.generator.parameters()]
    without_grads = [p.grad for p in without.generator.parameters()]
    assert_close_to_rounding([a - b for a, b in zip(with_grads, without_grads)], [2.0 * grad for grad in expected],
                             terms=G28_GRADIENT_TERMS, scale=with_grads)
    # The D phase is untouched by a generator term: same D gradients either way.
    for p_with, p_without in zip(with_term.discriminator.trunk.parameters(), without.discriminator.trunk.parameters()):
        assert torch.equal(p_with.grad, p_without.grad)


def test_loss_terms_are_logged_by_name_and_summed_with_their_weights(tmp_path):
    plugin = CodeAndHead(weight_d=0.5, weight_g=2.0)
    run = run_tiny(tmp_path, make_host(("code", plugin)), train={"steps": 2, "log_every": 1})
    import json

    records = [json.loads(line) for line in (run.directory / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert record["loss/D/total"] == pytest.approx(record["loss/D/adv"] + 0.5 * record["loss/D/probe"], rel=1e-5)
        assert record["loss/G/total"] == pytest.approx(record["loss/G/adv"] + 2.0 * record["loss/G/probe"], rel=1e-5)


# -- events -------------------------------------------------------------------------------------


class Recorder:
    """Records every call of every hook, in order: it implements them all."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def ganforge_register_models(self, register):
        self.calls.append(("register_models",))

    @hookimpl
    def ganforge_register_losses(self, register):
        self.calls.append(("register_losses",))

    @hookimpl
    def ganforge_register_datasets(self, register):
        self.calls.append(("register_datasets",))

    @hookimpl
    def ganforge_register_latents(self, register):
        self.calls.append(("register_latents",))

    @hookimpl
    def ganforge_register_metrics(self, register):
        self.calls.append(("register_metrics",))

    @hookimpl
    def ganforge_register_optimizers(self, register):
        self.calls.append(("register_optimizers",))

    @hookimpl
    def ganforge_register_run_plugins(self, register):
        self.calls.append(("register_run_plugins",))

    @hookimpl
    def ganforge_models_built(self, run):
        self.calls.append(("models_built",))

    @hookimpl
    def ganforge_discriminator_steps(self):  # a subset of the arguments: the contract allows it
        self.calls.append(("discriminator_steps",))

    @hookimpl
    def ganforge_discriminator_transforms(self, run):
        self.calls.append(("discriminator_transforms",))
        return []

    @hookimpl
    def ganforge_inference_generator(self, run):
        self.calls.append(("inference_generator",))

    @hookimpl
    def ganforge_real_conditions(self, run, labels):
        self.calls.append(("real_conditions",))
        return {}

    @hookimpl
    def ganforge_log(self, run, step, record):
        self.calls.append(("log", step))

    @hookimpl
    def ganforge_generator_inputs(self, run):
        self.calls.append(("generator_inputs",))

    @hookimpl
    def ganforge_discriminator_heads(self, run, feature_dim):
        self.calls.append(("discriminator_heads",))

    @hookimpl
    def ganforge_discriminator_networks(self, run, image_shape):
        self.calls.append(("discriminator_networks", tuple(image_shape)))

    @hookimpl
    def ganforge_train_start(self, run):
        self.calls.append(("train_start", run.step))

    @hookimpl
    def ganforge_discriminator_views(self, run, real):
        self.calls.append(("discriminator_views",))

    @hookimpl
    def ganforge_discriminator_fake_views(self, run, fake, latents):
        self.calls.append(("discriminator_fake_views",))

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        self.calls.append(("discriminator_loss_terms", ctx.step))

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        self.calls.append(("generator_loss_terms", ctx.step))

    @hookimpl
    def ganforge_step_end(self, run, step, logs):
        self.calls.append(("step_end", step, sorted(logs)))

    @hookimpl
    def ganforge_epoch_end(self, run, epoch):
        self.calls.append(("epoch_end", epoch))

    @hookimpl
    def ganforge_samples(self, run, step, images, path):
        self.calls.append(("samples", step, tuple(images.shape), path.name, path.exists()))
        assert 0 <= images.min() and images.max() <= 1

    @hookimpl
    def ganforge_train_end(self, run, error):
        self.calls.append(("train_end", error))


def test_hooks_are_called_in_the_documented_order(tmp_path):
    recorder = Recorder()
    host = make_host(("recorder", recorder))
    # Registration: once, when the plugin manager is built, in the order of hookspecs.py.
    assert recorder.calls == [("register_models",), ("register_losses",), ("register_datasets",),
                              ("register_latents",), ("register_metrics",), ("register_optimizers",),
                              ("register_run_plugins",)]
    recorder.calls.clear()
    # 48 images in batches of 16: every third batch starts a new epoch.
    run_tiny(tmp_path, host, data={"size": 48}, train={"steps": 4, "sample_every": 2, "checkpoint_every": 4,
                                                        "log_every": 4})
    logs = ["loss/D/adv", "loss/D/total", "loss/G/adv", "loss/G/total"]
    step = lambda n: [("real_conditions",), ("discriminator_views",), ("discriminator_fake_views",),
                      ("discriminator_loss_terms", n), ("generator_loss_terms", n), ("step_end", n, logs)]
    samples = lambda n: [("inference_generator",), ("samples", n, (64, 1, 28, 28), f"step_{n:07d}.png", True)]
    assert recorder.calls == [
        ("generator_inputs",), ("discriminator_heads",), ("discriminator_networks", (1, 28, 28)), ("models_built",),
        ("discriminator_steps",),
        ("discriminator_transforms",), ("train_start", 0),
        *step(1), *step(2), *samples(2),
        *step(3), ("epoch_end", 1), *step(4), ("log", 4), *samples(4),
        ("train_end", None),
    ]
    specified = {name.removeprefix("ganforge_") for name in HOOK_NAMES}
    assert specified == {call[0] for call in recorder.calls} | {f"register_{kind}" for kind in REGISTRY_KINDS}


def test_ganforge_train_start_sees_the_built_run(tmp_path):
    recorder = Recorder()
    run_tiny(tmp_path, make_host(("recorder", recorder)), train={"steps": 1})
    assert ("train_start", 0) in recorder.calls


def test_ganforge_step_end_gets_detached_scalar_logs(tmp_path):
    seen = []

    class StepEnd:
        @hookimpl
        def ganforge_step_end(self, run, step, logs):
            seen.append((step, run.step, {k: (v.dim(), v.requires_grad) for k, v in logs.items()}))

    run_tiny(tmp_path, make_host(("step-end", StepEnd())), train={"steps": 2})
    assert [(s, r) for s, r, _ in seen] == [(1, 1), (2, 2)]
    assert all(shape == (0, False) for _, _, logs in seen for shape in logs.values())


def test_ganforge_epoch_end_counts_finished_epochs(tmp_path):
    recorder = Recorder()
    run_tiny(tmp_path, make_host(("recorder", recorder)), data={"size": 32}, train={"steps": 5})
    assert [call for call in recorder.calls if call[0] == "epoch_end"] == [("epoch_end", 1), ("epoch_end", 2)]


def test_ganforge_samples_gets_the_fixed_batch_and_the_written_grid(tmp_path):
    recorder = Recorder()
    run_tiny(tmp_path, make_host(("recorder", recorder)), train={"steps": 2, "sample_every": 1})
    samples = [call for call in recorder.calls if call[0] == "samples"]
    assert samples == [("samples", 1, (64, 1, 28, 28), "step_0000001.png", True),
                       ("samples", 2, (64, 1, 28, 28), "step_0000002.png", True)]


def test_ganforge_train_end_is_called_with_the_error_that_stopped_the_run(tmp_path):
    recorder = Recorder()

    class Failing:
        @hookimpl
        def ganforge_step_end(self, run, step, logs):
            if step == 2:
                raise RuntimeError("plugin failure at step 2")

    with pytest.raises(PluginError, match="plugin 'failing' failed in ganforge_step_end: RuntimeError: plugin failure at step 2"):
        run_tiny(tmp_path, make_host(("recorder", recorder), ("failing", Failing())), train={"steps": 4})
    name, error = recorder.calls[-1]
    assert name == "train_end" and isinstance(error, PluginError) and isinstance(error.__cause__, RuntimeError)


# -- meta-tests: every hook documented and tested ----------------------------------------------------


def _signature(name: str) -> str:
    return f"{name}{inspect.signature(getattr(hookspecs, name))}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docs_section_with_its_exact_signature(hook):
    docs = (REPO / "docs" / "hooks.md").read_text()
    assert f"### `{_signature(hook)}`" in docs, f"docs/hooks.md lacks a section '### `{_signature(hook)}`'"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring(hook):
    assert len(inspect.getdoc(getattr(hookspecs, hook)) or "") > 40


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test_of_its_own(hook):
    sources = "\n".join(path.read_text() for path in (REPO / "tests").glob("test_*.py"))
    assert re.search(rf"def test_{hook}\w*\(", sources), f"no test function named test_{hook}..."


def test_docs_describe_no_hook_that_does_not_exist():
    docs = (REPO / "docs" / "hooks.md").read_text()
    documented = set(re.findall(r"### `(ganforge_\w+)\(", docs))
    assert documented == set(HOOKS)
