"""The hooks GAN variants stand on, and the core defects they exposed: each test trains a tiny run
with an example plugin of the kind docs/hooks.md shows, and checks gradients, batch statistics,
random streams and checkpoints, not only that it runs."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ganforge import hookimpl, testing
from ganforge.losses import LossTerm
from ganforge.models import frozen_batch_statistics, unwrap
from ganforge.training import Meter, objective, train_step

from .conftest import (assert_same_training, make_host, metric_records, run_tiny, tiny_recipe, write_recipe)

INFOGAN = {"codes": [{"name": "digit", "dist": "categorical", "size": 4, "weight": 1.0},
                     {"name": "slant", "dist": "uniform", "size": 1, "weight": 0.1}],
           "traverse_every_sample": False}


def built_run(tmp_path, host=None, **sections):
    """A run built as ``ganforge run`` builds it, before any step."""
    return testing.build_run(tiny_recipe(tmp_path / "runs", **sections), host=host or make_host())


FOUR_STEPS = {"steps": 4, "log_every": 2, "sample_every": 1000, "checkpoint_every": 2, "keep_checkpoints": 1}


def last_checkpoint(tmp_path):
    return tmp_path / "runs" / "tiny" / "checkpoints" / "last.pt"


def assert_resumes_bitwise(tmp_path, extra, train=None, **sections):
    """Four steps straight, and two steps then a resume to four, end bit for bit alike;
    ``extra()`` makes the extra ``(name, plugin)`` pairs afresh for each run; ``train`` adds to
    the four steps' settings (a smaller batch)."""
    four = {**FOUR_STEPS, **(train or {})}
    straight = run_tiny(tmp_path / "straight", make_host(*extra()), train=four, **sections)
    run_tiny(tmp_path / "halves", make_host(*extra()), train={**four, "steps": 2}, **sections)
    resumed = run_tiny(tmp_path / "halves", make_host(*extra()), resume=True, train=four, **sections)
    assert_same_training(last_checkpoint(tmp_path / "straight"), last_checkpoint(tmp_path / "halves"))
    assert metric_records(resumed.directory) == metric_records(straight.directory)
    return straight, resumed


def batch_norms(module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def batch_stats_updates(run) -> int:
    return int(batch_norms(run.discriminator.trunk)[0].num_batches_tracked)


# -- defects ---------------------------------------------------------------------------------------


def test_infogan_trains_with_three_discriminator_steps_each_term_logged_as_its_mean(tmp_path):
    recipe = tiny_recipe(tmp_path / "runs", plugins={"infogan": {**INFOGAN, "consistency_weight": 1.0}},
                         train={"d_steps": 3})
    step = testing.step_once(recipe, host=make_host())
    assert step.run.images_seen == 3 * step.images
    logs = step.logs
    for name in ("loss/D/info/digit", "loss/D/consistency/digit", "loss/D/total", "mi/digit", "loss/G/info/digit"):
        assert logs[name].dim() == 0 and torch.isfinite(logs[name]), name
    trained = run_tiny(tmp_path / "cli", plugins={"infogan": INFOGAN}, train={"d_steps": 3})
    assert trained.step == 4


def test_only_the_d_phase_real_and_fake_passes_move_d_batch_statistics(tmp_path):
    """The G pass and InfoGAN's consistency pass run D in training mode but leave its running
    statistics alone: one real and one fake update per D step."""
    run = built_run(tmp_path, plugins={"infogan": {**INFOGAN, "consistency_weight": 1.0}})
    norm = batch_norms(run.discriminator.trunk)[0]
    train_step(run)
    assert batch_stats_updates(run) == 2
    # The statistics are those of the real and the fake batch (momentum 0.1 from mean 0):
    # re-running the two D-phase passes from the start gives the same running mean.
    assert torch.isfinite(norm.running_mean).all()


def test_frozen_batch_statistics_normalises_with_the_batch_and_changes_no_buffer():
    norm = nn.BatchNorm1d(3)
    x = torch.randn(8, 3) * 5 + 2
    before = {name: value.clone() for name, value in norm.state_dict().items()}
    with frozen_batch_statistics(norm):
        out = norm(x)
    assert all(torch.equal(before[name], value) for name, value in norm.state_dict().items())
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    assert norm.track_running_stats
    norm(x)
    assert int(norm.num_batches_tracked) == 1


class FreezeFirstConv:
    """A plugin that froze a part of D, as one with a pretrained feature extractor would."""

    @hookimpl
    def ganforge_models_built(self, run):
        run.discriminator.trunk.trunk[0].requires_grad_(False)


def test_ganforge_models_built_a_part_of_d_a_plugin_froze_stays_frozen_and_untrained(tmp_path):
    run = built_run(tmp_path, make_host(("freeze", FreezeFirstConv())))
    conv = run.discriminator.trunk.trunk[0]
    weight = conv.weight.detach().clone()
    optimized = {id(p) for group in run.optimizer_d.param_groups for p in group["params"]}
    assert id(conv.weight) not in optimized
    for _ in range(3):
        train_step(run)
    assert not conv.weight.requires_grad and torch.equal(conv.weight, weight)
    assert conv.weight.grad is None


def test_the_g_phase_gives_gradients_to_g_only_and_keeps_d_flags(tmp_path):
    run = built_run(tmp_path, plugins={"infogan": INFOGAN})
    train_step(run)
    d_grads = {name: p.grad.clone() for name, p in run.discriminator.named_parameters()}
    assert all(p.requires_grad for p in run.discriminator.parameters())
    # The D gradients left on the parameters are the D step's: the G phase added nothing to them.
    run2 = built_run(tmp_path / "again", plugins={"infogan": INFOGAN})
    from ganforge.training import discriminator_step

    discriminator_step(run2)
    for name, p in run2.discriminator.named_parameters():
        torch.testing.assert_close(p.grad, d_grads[name], rtol=0, atol=0)


class EveryOtherStep:
    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        return [LossTerm("lazy", torch.tensor(4.0), 0.0)] if ctx.step % 2 == 0 else []


def test_the_meter_averages_each_term_over_the_steps_that_logged_it(tmp_path):
    meter = Meter()
    meter.add({"a": torch.tensor(1.0), "lazy": torch.tensor(4.0)})
    meter.add({"a": torch.tensor(3.0)})
    assert meter.flush(2) == {"a": 2.0, "lazy": 4.0}
    run = run_tiny(tmp_path, make_host(("lazy", EveryOtherStep())), train={"steps": 4, "log_every": 4})
    assert metric_records(run.directory)[-1]["loss/G/lazy"] == 4.0


def test_the_objective_sums_in_float32_whatever_the_terms_precision():
    logs = {}
    total = objective("D", torch.tensor(1.0, dtype=torch.bfloat16),
                      [[LossTerm("half", torch.tensor(0.5, dtype=torch.float16)),
                        LossTerm("double", torch.tensor(0.25, dtype=torch.float64))]], logs)
    assert total.dtype == torch.float32 and float(total) == 1.75
    assert all(value.dtype == torch.float32 for value in logs.values())


def test_a_learned_log_sigma_keeps_a_gradient_outside_its_bounds():
    from ganforge_plugins.latents.distributions import LOG_SIGMA_MAX, LOG_SIGMA_MIN, Uniform

    code = Uniform(1, sigma="learned")
    value = torch.zeros(3, 1)
    raw = torch.tensor([[0.0, -12.0], [0.0, 0.0], [0.0, 9.0]], requires_grad=True)
    code.nll(value, raw).sum().backward()
    assert (raw.grad[:, 1].abs() > 0).all()
    _, log_sigma = code.split_params(raw.detach())
    assert (log_sigma > LOG_SIGMA_MIN - 0.01).all() and (log_sigma < LOG_SIGMA_MAX).all()
    assert (log_sigma.diff(dim=0) > 0).all()  # increasing: Q reaches any σ in the bounds


def test_loading_a_generator_leaves_global_state_alone_and_takes_a_device(tmp_path):
    import ganforge

    run = run_tiny(tmp_path, train={"steps": 1, "threads": 1})
    torch.set_num_threads(2)
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    generator = ganforge.load_generator(run.directory / "checkpoints" / "last.pt", device="cpu")
    images = generator.sample(4)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == 2
    assert images.device.type == "cpu" and images.shape == (4, 1, 28, 28)


def test_a_checkpoint_trained_on_cuda_loads_on_a_machine_without_one(tmp_path):
    import ganforge
    from ganforge.checkpoint import load_checkpoint, save_atomically

    run = run_tiny(tmp_path, train={"steps": 1})
    path = run.directory / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    state["recipe"]["run"]["device"] = "cuda"
    save_atomically(state, path)
    generator = ganforge.load_generator(path)
    assert generator.sample(2).device.type == ("cuda" if torch.cuda.is_available() else "cpu")


# -- held-out evaluation ---------------------------------------------------------------------------


def test_data_holdout_keeps_the_same_images_out_of_training_for_every_seed(tmp_path):
    from ganforge.data import ImageData, select_holdout

    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 1, 2, 2).contiguous()
    data = ImageData(images, {"label": torch.arange(100)})
    train, held = select_holdout(data, 20, "train"), select_holdout(data, 20, "holdout")
    assert len(train) == 80 and len(held) == 20
    assert set(train.labels["label"].tolist()).isdisjoint(held.labels["label"].tolist())
    assert sorted(train.labels["label"].tolist() + held.labels["label"].tolist()) == list(range(100))
    assert torch.equal(held.images[:, 0, 0, 0].long(), held.labels["label"])  # images keep their labels


def test_eval_on_the_holdout_scores_only_images_the_run_never_saw(tmp_path):
    from .conftest import invoke

    values = tiny_recipe(tmp_path / "runs", data={"holdout": 56}, plugins={"infogan": INFOGAN})
    recipe = write_recipe(tmp_path / "tiny.toml", values)
    assert invoke("run", recipe).exit_code == 0
    run_dir = tmp_path / "runs" / "tiny"
    on_train = json.loads(invoke("eval", run_dir, "--json").stdout)
    on_holdout = json.loads(invoke("eval", run_dir, "--json", "--on", "holdout").stdout)
    assert (on_train["eval_images"], on_holdout["eval_images"]) == (200, 56)
    assert on_holdout["on"] == "holdout" and "digit/accuracy" in on_holdout
    result = invoke("eval", run_dir, "--on", "heldout")
    assert result.exit_code == 2 and "--on must be one of train, holdout" in result.stderr


# -- hooks for variants ----------------------------------------------------------------------------


class Relativistic:
    """A relativistic average-free objective: G's loss needs D(real)."""

    def discriminator_loss(self, real_logits, fake_logits):
        return F.softplus(fake_logits - real_logits).mean()

    def generator_loss(self, fake_logits, real_logits):
        return F.softplus(real_logits - fake_logits).mean()


class RegisterRelativistic:
    @hookimpl
    def ganforge_register_losses(self, register):
        register("relativistic", Relativistic())


def test_an_adversarial_loss_that_names_real_logits_in_the_g_phase_gets_them(tmp_path):
    host = make_host(("relativistic", RegisterRelativistic()))
    run = built_run(tmp_path, host, loss={"name": "relativistic"})
    generator = copy.deepcopy(run.generator)
    logs = train_step(run)
    assert torch.isfinite(logs["loss/G/adv"])
    assert any(not torch.equal(a, b) for a, b in zip(generator.parameters(), run.generator.parameters()))
    assert batch_stats_updates(run) == 2  # the G phase's D(real) pass did not move the statistics


class R1:
    """R1 (Mescheder et al. 2018): the squared gradient norm of D on real images, every second
    step (lazy, scaled by the interval), through a pass of its own."""

    interval = 2

    def __init__(self):
        self.images: list[torch.Tensor] = []

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        if ctx.step % self.interval:
            return []
        real = ctx.real.detach().requires_grad_(True)
        self.images.append(real)
        scores = ctx.discriminate(real).logits
        (grad,) = torch.autograd.grad(scores.sum(), real, create_graph=True)
        return [LossTerm("r1", grad.pow(2).flatten(1).sum(1).mean(), 5.0 * self.interval)]


def test_ganforge_discriminator_loss_terms_a_lazy_r1_penalty_trains_d_only_and_logs_its_own_mean(tmp_path):
    plugin = R1()
    run = built_run(tmp_path, make_host(("r1-example", plugin)))
    train_step(run)
    run.step += 1  # as the training loop counts
    discriminator_before = copy.deepcopy(run.discriminator)
    logs = train_step(run)
    assert "loss/D/r1" in logs and float(logs["loss/D/r1"]) > 0
    assert plugin.images[0].grad is None  # the penalty's images are not trained
    assert batch_stats_updates(run) == 4  # two D steps, two passes each; the R1 pass moved nothing
    # The penalty's gradient is in D's update: a run without it ends with another D.
    run_without = built_run(tmp_path / "without")
    train_step(run_without)
    run_without.step += 1
    train_step(run_without)
    assert any(not torch.equal(a, b) for a, b in zip(run.discriminator.parameters(), run_without.discriminator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(discriminator_before.parameters(), run.discriminator.parameters()))
    record = metric_records(run_tiny(tmp_path / "logged", make_host(("r1-example", R1())),
                                     train={"steps": 4, "log_every": 4}).directory)[-1]
    assert record["loss/D/r1"] > 0  # the mean of the two steps that computed it, not diluted by four


class Translate:
    """A differentiable augmentation of every image D sees, as DiffAugment's translation."""

    order = 1

    def __init__(self):
        self.seen = []

    def __call__(self, images, rng):
        self.seen.append(images.requires_grad)
        n = images.shape[0]
        shift = (torch.rand(n, 2, generator=rng, device=rng.device) - 0.5) / 4
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, padding_mode="border", align_corners=False)


class Flip:
    order = 0

    def __call__(self, images, rng):
        return images.flip(3)


class Augment:
    def __init__(self):
        self.translate = Translate()

    @hookimpl
    def ganforge_discriminator_transforms(self, run):
        return [("translate", self.translate), ("flip", Flip())]


def test_ganforge_discriminator_transforms_apply_to_real_and_fake_in_both_phases_in_order(tmp_path):
    plugin = Augment()
    run = built_run(tmp_path, make_host(("augment", plugin)))
    assert [name for name, _ in run.transforms] == ["flip", "translate"]  # by order, not by name
    generator = copy.deepcopy(run.generator)
    train_step(run)
    # D phase: real, detached fake; G phase: attached fake (the generator learns through it).
    assert plugin.translate.seen == [False, False, True]
    assert any(not torch.equal(a, b) for a, b in zip(generator.parameters(), run.generator.parameters()))
    assert "transform/translate" in run.streams.state_dict()


def test_transforms_draw_from_checkpointed_streams_and_resume_bitwise(tmp_path):
    assert_resumes_bitwise(tmp_path, lambda: [("augment", Augment())])


class Projection(nn.Module):
    adds_to_logits = True

    def __init__(self, feature_dim, classes):
        super().__init__()
        self.embed = nn.Linear(classes, feature_dim, bias=False)

    def forward(self, features, conditions):
        return (self.embed(conditions["label"]) * features).sum(dim=1)


class ConditionalBatchNormGenerator(nn.Module):
    """A generator whose batch norm is scaled per class (conditional BN): it reads the label from
    ``conditions``, not only from the concatenated input row."""

    def __init__(self, input_dim, classes=4):
        super().__init__()
        self.project = nn.Linear(input_dim, 32)
        self.norm = nn.BatchNorm1d(32, affine=False)
        self.scale = nn.Embedding(classes, 32)
        self.out = nn.Linear(32, 28 * 28)
        self.labels_seen = []

    def forward(self, inputs, conditions):
        label = conditions["label"].argmax(1)
        self.labels_seen.append(label)
        hidden = self.norm(self.project(inputs)) * (1 + self.scale(label))
        return torch.tanh(self.out(F.relu(hidden))).view(-1, 1, 28, 28)


class Conditional:
    def __init__(self):
        self.real_labels = []

    @hookimpl
    def ganforge_register_models(self, register):
        from ganforge_plugins.models.dcgan import Discriminator28

        register("cbn", lambda image_shape, input_dim: (ConditionalBatchNormGenerator(input_dim),
                                                        Discriminator28(image_shape[0])))

    @hookimpl
    def ganforge_generator_inputs(self, run):
        return [("label", run.make_distribution("categorical", 4, {}, key="plugins.conditional"))]

    @hookimpl
    def ganforge_discriminator_heads(self, run, feature_dim):
        return [("projection", Projection(feature_dim, 4))]

    @hookimpl
    def ganforge_real_conditions(self, run, labels):
        self.real_labels.append(labels["shape"])
        return {"label": F.one_hot(labels["shape"], 4).float()}


def test_ganforge_real_conditions_reach_a_projection_head_and_the_generator_reads_its_label(tmp_path):
    plugin = Conditional()
    run = built_run(tmp_path, make_host(("conditional-example", plugin)), model={"name": "cbn"})
    head = run.discriminator.heads["projection"]
    train_step(run)
    assert len(plugin.real_labels) == 1 and plugin.real_labels[0].shape == (16,)
    assert head.embed.weight.grad is not None and head.embed.weight.grad.abs().sum() > 0
    assert run.generator.scale.weight.grad.abs().sum() > 0  # G learned through its class scales
    # The projection term is part of the logits: with another class, another score.
    features = torch.randn(2, run.discriminator.trunk.feature_dim)
    one, other = (F.one_hot(torch.tensor([k, k]), 4).float() for k in (0, 1))
    assert not torch.equal(head(features, {"label": one}), head(features, {"label": other}))
    images = run.generate(run.sample_latents(4, torch.Generator().manual_seed(0)))
    assert images.shape == (4, 1, 28, 28)


class Optimizers:
    @hookimpl
    def ganforge_register_optimizers(self, register):
        register("rmsprop", lambda param_groups, betas: torch.optim.RMSprop(param_groups, alpha=betas[1]))


def test_ganforge_register_optimizers_the_recipe_chooses_the_optimizer(tmp_path):
    run = built_run(tmp_path, make_host(("optimizers-extra", Optimizers())), train={"optimizer": "rmsprop"})
    assert isinstance(run.optimizer_g, torch.optim.RMSprop) and isinstance(run.optimizer_d, torch.optim.RMSprop)
    assert isinstance(built_run(tmp_path / "sgd", train={"optimizer": "sgd"}).optimizer_d, torch.optim.SGD)
    from ganforge.errors import RecipeError

    with pytest.raises(RecipeError, match="train.optimizer: unknown name 'adamm'; did you mean 'adam'"):
        built_run(tmp_path / "typo", train={"optimizer": "adamm"})


class SpectralNormAndGroups:
    @hookimpl
    def ganforge_models_built(self, run):
        from torch.nn.utils.parametrizations import spectral_norm

        spectral_norm(run.discriminator.trunk.head)
        for group in run.parameter_groups["D"]:
            group["lr"] = 1e-3


def test_ganforge_models_built_spectral_norm_and_parameter_groups_reach_training_and_checkpoints(tmp_path):
    run = run_tiny(tmp_path, make_host(("sn", SpectralNormAndGroups())), train={"steps": 2})
    assert all(group["lr"] == 1e-3 for group in run.optimizer_d.param_groups)
    head = run.discriminator.trunk.head
    assert float(torch.linalg.matrix_norm(head.weight.detach(), ord=2)) == pytest.approx(1.0, rel=0.05)
    from ganforge.checkpoint import load_checkpoint

    stored = load_checkpoint(run.directory / "checkpoints" / "last.pt")["discriminator"]
    assert any("parametrizations" in key for key in stored)


class EMA:
    """An exponential moving average of the generator, used for every picture and evaluation."""

    def __init__(self, settings=None):
        self.decay, self.average = 0.5, None

    @hookimpl
    def ganforge_models_built(self, run):
        self.average = copy.deepcopy(run.generator).requires_grad_(False)

    @hookimpl
    def ganforge_step_end(self, run):
        with torch.no_grad():
            for average, current in zip(self.average.state_dict().values(), run.generator.state_dict().values()):
                average.copy_(average * self.decay + current * (1 - self.decay) if average.is_floating_point() else current)

    @hookimpl
    def ganforge_inference_generator(self, run):
        return self.average

    def state_dict(self):
        return {"average": self.average.state_dict()}

    def load_state_dict(self, state):
        self.average.load_state_dict(state["average"])


class EMATable:
    @hookimpl
    def ganforge_register_run_plugins(self, register):
        register("ema-example", EMA, defaults={})


def test_ganforge_inference_generator_serves_samples_and_load_generator_and_resumes_bitwise(tmp_path):
    from ganforge.launch import run_from_checkpoint

    straight, _ = assert_resumes_bitwise(tmp_path, lambda: [("ema-table", EMATable())], plugins={"ema-example": {}})
    ema = straight.plugins["ema-example"].average
    assert straight.inference_generator() is ema
    latents = straight.sample_latents(4, torch.Generator().manual_seed(0))
    ema.eval()
    with torch.no_grad():
        expected = ema(straight.generator_input(latents)).add(1).div(2).clamp(0, 1)
    torch.testing.assert_close(straight.generate(latents), expected)
    assert all(p.grad is None for p in ema.parameters())
    assert not torch.equal(straight.generate(latents), expected.new_zeros(()))
    loaded, _ = run_from_checkpoint(last_checkpoint(tmp_path / "straight"), make_host(("ema-table", EMATable())))
    torch.testing.assert_close(loaded.generate(latents), expected)


class Noisy:
    """Draws from its own stream on the run's device; resets a counter in train_start, which the
    checkpoint's state must then replace."""

    def __init__(self, settings=None):
        self.calls = 0

    @hookimpl
    def ganforge_train_start(self, run):
        self.calls = 0

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        self.calls += 1
        noise = torch.rand(1, generator=ctx.run.rng("noisy"), device=ctx.run.device)
        return [LossTerm("noisy", ctx.fake.mean() * noise.squeeze() + self.calls * 0.0, 0.1)]

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


class NoisyTable:
    @hookimpl
    def ganforge_register_run_plugins(self, register):
        register("noisy", Noisy, defaults={})


def test_plugin_streams_resume_exactly_and_plugin_state_is_restored_after_train_start(tmp_path):
    _, resumed = assert_resumes_bitwise(tmp_path, lambda: [("t", NoisyTable())], plugins={"noisy": {}})
    assert resumed.plugins["noisy"].calls == 4  # 2 restored after train_start reset it, then 2 more
    assert "noisy" in resumed.streams.state_dict()


def test_checkpoints_of_wrapped_models_have_plain_keys_and_load_into_plain_ones(tmp_path):
    from ganforge.checkpoint import load_checkpoint, run_state

    run = run_tiny(tmp_path, train={"steps": 1})
    plain_keys = set(run.generator.state_dict())
    compiled = torch.compile(run.generator, backend="eager")
    assert any(key.startswith("_orig_mod.") for key in compiled.state_dict())
    assert unwrap(compiled) is run.generator
    run.generator = compiled
    assert set(run_state(run)["generator"]) == plain_keys
    assert set(load_checkpoint(run.directory / "checkpoints" / "last.pt")["generator"]) == plain_keys


def test_the_gradient_penalty_example_in_the_hook_docs_trains_a_critic_without_batch_norm(tmp_path):
    """The docs' WGAN-GP example, run as written: mixing weights from the run's own stream on the
    images' device, the penalty through ctx.discriminate, gradients into D only."""
    import re
    import types

    from .conftest import REPO

    docs = (REPO / "docs" / "hooks.md").read_text()
    source = re.search(r"```python\n(import torch\nfrom ganforge.losses import LossTerm\n\nclass GradientPenalty:.*?)```",
                       docs, re.S).group(1)
    module = types.ModuleType("gp_example")
    module.hookimpl = hookimpl
    exec(compile(source, "docs/hooks.md", "exec"), module.__dict__)

    class NoBatchNorm:
        @hookimpl
        def ganforge_models_built(self, run):
            for index, layer in enumerate(run.discriminator.trunk.trunk):
                if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                    run.discriminator.trunk.trunk[index] = nn.Identity()
            run.parameter_groups["D"] = [{"params": list(run.discriminator.parameters()), "lr": 1e-4}]

    run = built_run(tmp_path, make_host(("gp", module.GradientPenalty()), ("no-bn", NoBatchNorm())),
                    loss={"name": "wasserstein"}, train={"d_steps": 2})
    logs = train_step(run)
    assert float(logs["loss/D/gp"]) > 0 and "gradient-penalty" in run.streams.state_dict()
    assert not batch_norms(run.discriminator)


class PairCritic:
    """An example plugin of docs/hooks.md's kind: a network beside D that reads a real image and a
    fake one stacked, trained by a term of its own in D's objective."""

    def __init__(self):
        self.passes = 0

    def count(self, module, args, output):
        self.passes += 1

    @hookimpl
    def ganforge_discriminator_networks(self, run, image_shape):
        network = nn.Sequential(nn.Conv2d(2 * image_shape[0], 4, 4, 2, 1), nn.LeakyReLU(0.2),
                                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        network.register_forward_hook(self.count)
        network.learning_rate = 1e-3
        return [("pairs", network)]

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        network = unwrap(ctx.run.discriminator).networks["pairs"]
        logits = network(torch.cat([ctx.real, ctx.fake], dim=1))
        return [LossTerm("pairs", F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long)))]


def test_ganforge_discriminator_networks_are_trained_with_d_at_their_rate_run_only_by_their_plugin(tmp_path):
    plugin = PairCritic()
    run = built_run(tmp_path, make_host(("pairs", plugin)))
    network = run.discriminator.networks["pairs"]
    ids = {id(p) for p in network.parameters()}
    (group,) = [g for g in run.optimizer_d.param_groups if {id(p) for p in g["params"]} & ids]
    assert {id(p) for p in group["params"]} == ids and group["lr"] == 1e-3
    assert not ids & {id(p) for p in run.optimizer_g.param_groups[0]["params"]}
    before = copy.deepcopy(network.state_dict())
    train_step(run)
    # D's real/fake pass and G's pass did not run it: the plugin's own call did, once.
    assert plugin.passes == 1
    assert any(not torch.equal(before[name], value) for name, value in network.state_dict().items())
    assert any(key.startswith("networks.pairs.") for key in run.discriminator.state_dict())
    assert_resumes_bitwise(tmp_path / "resume", lambda: [("pairs", PairCritic())])
