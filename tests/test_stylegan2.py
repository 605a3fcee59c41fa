"""StyleGAN2: the reference configurations' sizes, its layers against transcriptions of their
definitions (modulated convolution, minibatch standard deviation, mapping, style mixing,
truncation), the plugins that train on it, what ``ganforge check`` refuses, and an exact resume
with style mixing on. The reference is NVlabs/stylegan2-ada-pytorch at
d72cc7d041b42ec8e806021a205ed9349f87c6a4 (``training/networks.py``, ``training/loss.py``,
``train.py``), and path-length regularisation against ``training/loss.py``."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from ganforge.checkpoint import load_checkpoint
from ganforge.data import to_unit_range
from ganforge.models import batch_norm_per_chunk, count_parameters
from ganforge.testing import build_run, step_once, train_steps
from ganforge.training import train_step
from ganforge_plugins.models.stylegan2.family import build_stylegan2
from ganforge_plugins.models.stylegan2.generator import StyleGAN2Generator, TrainingDraws
from ganforge_plugins.models.stylegan2.layers import EqualisedLinear, MinibatchStd, modulated_conv2d, upsample
from ganforge_plugins.objectives.path_length import path_length_penalty

from .conftest import assert_one_line_cli_error, invoke, make_host, tiny_recipe, write_recipe
from .test_variant_hooks import FOUR_STEPS, assert_resumes_bitwise, last_checkpoint
from .tolerance import assert_close_to_rounding

# The reference's parameter counts (z_dim = w_dim = 512, c_dim = 0, 3 channels), added up from
# training/networks.py's layers with train.py's cfg_specs for one GPU; the reference's own
# Generator and Discriminator, built with these arguments, report the same numbers.
# 32 px, `cifar` (channel_base 32768, channel_max 512: 512 channels at every resolution; map 2):
#   G: mapping 2 x (512 x 512 + 512) = 525,312; b4: const 512 x 16 = 8,192, conv1 (affine
#   512 x 512 + 512, weight 512 x 512 x 9, noise_strength 1, bias 512) = 2,622,465, torgb (affine
#   262,656, weight 3 x 512, bias 3) = 264,195; b8, b16, b32: conv0 + conv1 + torgb = 5,509,125 each.
#   D: b32 (fromrgb 3 x 512 + 512, conv0 and conv1 2 x (512 x 512 x 9 + 512), skip 512 x 512 without
#   bias) = 4,983,808; b16, b8 without fromrgb 4,981,760 each; epilogue: conv (512 + 1) x 512 x 9 +
#   512 = 2,364,416, fc 8,192 x 512 + 512 = 4,194,816, out 513. `cifar` sets architecture 'orig':
#   no skip, 3 x 262,144 fewer.
# 64 px, `auto` (channel_base 16384: 256 channels at 64 px, 512 below; map 2): G adds b64 (conv0
#   512 -> 256: 262,656 + 1,179,648 + 1 + 256; conv1 256 -> 256: 131,328 + 589,824 + 1 + 256; torgb
#   131,328 + 768 + 3) = 2,296,069 to the 32 px G; D: b64 (fromrgb 1,024, conv0 590,080, conv1
#   1,180,160, skip 131,072) = 1,902,336, b32 to b8 3 x 4,981,760, epilogue 6,559,745.
# 128 px, `auto` (128 channels at 128 px): G adds b128 (426,369 + 213,249 + 66,051); D: b128
#   (512 + 147,584 + 295,168 + 32,768) = 476,032, b64 without fromrgb 1,901,312, the rest as at 64.
REFERENCE_PARAMETERS = {(32, "orig"): (19_947_539, 20_720_641), (32, "resnet"): (19_947_539, 21_507_073),
                        (64, "resnet"): (22_243_608, 23_407_361), (128, "resnet"): (22_949_277, 23_882_369)}
SMALL = {"name": "stylegan2", "options": {"channel_base": 128, "channel_max": 32, "w_dim": 16}}
SHAPES_64 = {"image_size": 64}


def small_generator(z_dim=6, c_dim=0, style_mixing=0.9, seed=0) -> StyleGAN2Generator:
    torch.manual_seed(seed)
    layout = {"z": z_dim, **({"label": c_dim} if c_dim else {})}
    generator, _ = build_stylegan2((3, 32, 32), z_dim + c_dim, layout, channel_base=128, channel_max=16, w_dim=8,
                                   style_mixing=style_mixing)
    return generator


def seeded_draws(seed: int) -> TrainingDraws:
    return TrainingDraws(torch.Generator().manual_seed(seed), lambda n, rng: torch.randn(n, 6, generator=rng),
                         torch.Generator().manual_seed(seed + 1))


@pytest.mark.parametrize(("size", "architecture"), sorted(REFERENCE_PARAMETERS))
def test_the_networks_have_the_reference_configurations_sizes(size, architecture):
    generator, discriminator = build_stylegan2((3, size, size), 512, d_architecture=architecture)
    assert (count_parameters(generator), count_parameters(discriminator)) == REFERENCE_PARAMETERS[(size, architecture)]
    assert generator.num_ws == {32: 8, 64: 10, 128: 12}[size] and discriminator.feature_dim == 512


def reference_modulated_conv2d(x, weight, styles, noise=None, demodulate=True):
    """training/networks.py ``modulated_conv2d``, its fused path: each sample's own weight,
    ``weight * styles`` over the input channels, each output channel divided by
    ``rsqrt(sum(w^2) + 1e-8)``, applied as a grouped convolution over the batch; then the noise."""
    batch, (out_channels, in_channels, kh, kw) = x.shape[0], weight.shape
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(batch, -1, 1, 1, 1)
    y = F.conv2d(x.reshape(1, -1, *x.shape[2:]), w.reshape(-1, in_channels, kh, kw), padding=kh // 2, groups=batch)
    y = y.reshape(batch, out_channels, *y.shape[2:])
    return y if noise is None else y + noise


@pytest.mark.parametrize(("demodulate", "up", "kernel"), [(True, False, 3), (True, True, 3), (False, False, 1)])
def test_the_modulated_convolution_is_the_reference_definition_values_and_gradients(demodulate, up, kernel):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6, 6, requires_grad=True)
    weight = torch.randn(4, 5, kernel, kernel, requires_grad=True)
    styles = (torch.randn(3, 5) + 1).requires_grad_()
    size = 12 if up else 6
    noise = torch.randn(3, 1, size, size, requires_grad=True)
    ours = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, noise=noise)
    # With up, the reference convolves the upsampled input with the kernel flipped (flip_weight = False).
    seen, kernel_seen = (upsample(x), weight.flip(2, 3)) if up else (x, weight)
    expected = reference_modulated_conv2d(seen, kernel_seen, styles, noise, demodulate)
    upstream = torch.randn_like(expected)
    grads = torch.autograd.grad((ours * upstream).sum(), (x, weight, styles, noise))
    expected_grads = torch.autograd.grad((expected * upstream).sum(), (x, weight, styles, noise))
    # Each output sums 5 x 9 products; the weight and style gradients sum over 3 x 12 x 12 positions.
    terms = 5 * kernel * kernel + 3 * size * size
    assert_close_to_rounding(ours, expected, terms=terms)
    for name, got, want in zip(("x", "weight", "styles", "noise"), grads, expected_grads):
        assert_close_to_rounding(got, want, terms=terms, what=name)


def reference_minibatch_std(x, group_size):
    """training/networks.py ``MinibatchStdLayer`` (one channel), written as loops: image ``i`` is
    in group ``i mod (N / G)``; each group's per-feature standard deviation (biased, + 1e-8 under
    the root), averaged over channels and positions, is a new channel of its members."""
    n = x.shape[0]
    groups = n // min(group_size, n)
    extra = torch.empty(n, 1, *x.shape[2:])
    for group in range(groups):
        members = x[group::groups]
        std = ((members - members.mean(dim=0)).square().mean(dim=0) + 1e-8).sqrt().mean()
        extra[group::groups] = std
    return torch.cat([x, extra], dim=1)


def test_minibatch_std_is_the_reference_and_a_batched_pass_keeps_each_batch_apart():
    torch.manual_seed(0)
    x = torch.randn(8, 6, 4, 4, requires_grad=True)
    for group in (4, 8, 32):
        ours, expected = MinibatchStd(group)(x), reference_minibatch_std(x, group)
        upstream = torch.randn_like(ours)
        assert_close_to_rounding(ours, expected, terms=6 * 16 * 8)
        got, = torch.autograd.grad((ours * upstream).sum(), x)
        want, = torch.autograd.grad((expected * upstream).sum(), x)
        assert_close_to_rounding(got, want, terms=6 * 16 * 8 * 2)
    _, discriminator = build_stylegan2((3, 32, 32), 4, channel_base=128, channel_max=16, mbstd_group=4)
    real, fake = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32) * 3
    apart = torch.cat([discriminator(real), discriminator(fake)])
    with batch_norm_per_chunk(discriminator, [4, 4], [True, True]):
        together = discriminator(torch.cat([real, fake]))
    assert_close_to_rounding(together, apart, terms=16 * 9 * 4 + 256)
    assert not torch.allclose(discriminator(torch.cat([real, fake])), apart)  # mixed groups would differ


def test_the_mapping_network_is_the_reference_with_equalised_rates_and_its_w_average():
    """``MappingNetwork.forward``: normalize_2nd_moment(z), the embedded label likewise, two
    leaky-ReLU layers (weights times 0.01 / sqrt(fan_in), biases times 0.01, gain sqrt(2)), and
    ``w_avg.copy_(w.mean(0).lerp(w_avg, 0.995))`` in training, not for the mixing's second pass."""
    generator = small_generator(z_dim=6, c_dim=3)
    mapping = generator.mapping
    with torch.no_grad():
        for parameter in mapping.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)  # biases away from their initial zeros
    z, c = torch.randn(5, 6), torch.randn(5, 3)

    def linear(layer, x, lr):
        return x @ (layer.weight * lr / math.sqrt(x.shape[1])).t() + layer.bias * lr

    rms = lambda t: t * (t.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()  # noqa: E731
    x = torch.cat([rms(z), rms(linear(mapping.embed, c, 1.0))], dim=1)
    for layer in mapping.layers:
        x = F.leaky_relu(linear(layer, x, 0.01), 0.2) * math.sqrt(2)
    before = mapping.w_avg.clone()
    ws = mapping(z * 7.0, c, track_average=True)  # the normalisation makes z's scale irrelevant
    assert ws.shape == (5, generator.num_ws, 8) and torch.equal(ws[:, 0], ws[:, -1])
    assert_close_to_rounding(ws[:, 0], x, terms=3 * 14)
    assert_close_to_rounding(mapping.w_avg, x.mean(dim=0).lerp(before, 0.995), terms=3 * 14, scale=x.abs().max())
    layer = EqualisedLinear(4, 2, lr_multiplier=0.01)
    assert layer.weight.std() > 10  # stored at N(0, 1) / 0.01, used at 0.01 / sqrt(4) of that
    x = torch.randn(3, 4)
    layer(x).sum().backward()
    assert_close_to_rounding(layer.weight.grad, (0.01 / 2) * x.sum(dim=0).expand(2, 4), terms=3)


def test_style_mixing_draws_from_its_stream_and_eval_mode_neither_mixes_nor_adds_random_noise():
    """training/loss.py ``run_G``: a cutoff from 1 to num_ws - 1, then mixing with probability
    0.9; from the cutoff on, the ws of a second z with the same conditions."""
    generator = small_generator(z_dim=6, c_dim=2, style_mixing=1.0)
    generator.draws = seeded_draws(5)
    row = torch.randn(4, 8)
    global_state = torch.get_rng_state()
    mixed = generator.style_latents(row)
    assert torch.equal(torch.get_rng_state(), global_state)  # nothing from torch's global generator
    replay = torch.Generator().manual_seed(5)
    cutoff = int(torch.randint(1, generator.num_ws, (), generator=replay))
    torch.rand((), generator=replay)  # below style_mixing = 1.0: this batch mixes
    second_z = torch.randn(4, 6, generator=replay)
    with torch.no_grad():
        first, second = generator.mapping(row[:, :6], row[:, 6:]), generator.mapping(second_z, row[:, 6:])
    assert torch.equal(mixed[:, :cutoff], first[:, :cutoff]) and torch.equal(mixed[:, cutoff:], second[:, cutoff:])
    generator.style_mixing = 0.0
    assert torch.equal(generator.style_latents(row), first)
    generator.eval().style_mixing = 1.0
    state = generator.draws.mixing.get_state()
    assert torch.equal(generator.style_latents(row), first)
    assert torch.equal(generator.draws.mixing.get_state(), state)
    assert torch.equal(generator(row), generator(row)) and generator(row).abs().max() <= 1
    generator.train()
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if name.endswith("noise_strength"):
                parameter.fill_(0.5)  # 0 at initialisation, as in the reference
    assert not torch.equal(generator.synthesise(first), generator.synthesise(first))  # fresh noise each pass
    generator.eval()
    assert torch.equal(generator.synthesise(first), generator.synthesise(first))  # noise_const
    with pytest.raises(RuntimeError, match="training mode draws"):
        small_generator()(row[:, :6])  # no streams given: it never falls back to the global generator


def test_every_parameter_gets_a_gradient_and_the_conditions_enter_through_the_mapping():
    generator, discriminator = build_stylegan2((1, 32, 32), 9, {"z": 6, "c": 2, "label": 1}, channel_base=128,
                                               channel_max=16, w_dim=8)
    assert generator.mapping.embed.weight.shape == (8, 3) and generator.mapping.layers[0].weight.shape[1] == 6 + 8
    generator.draws = seeded_draws(0)
    discriminator(generator(torch.randn(4, 9))).sum().backward()
    for name, parameter in [*generator.named_parameters(), *discriminator.named_parameters()]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    generator.eval()
    row = torch.randn(2, 9)
    changed = torch.cat([row[:, :6], torch.randn(2, 3)], dim=1)
    assert not torch.equal(generator(row), generator(changed))


def small_step(tmp_path, **sections):
    return step_once(tiny_recipe(tmp_path, model=SMALL, data=SHAPES_64, **sections), host=make_host())


INFOGAN_CODES = [{"name": "c", "dist": "categorical", "size": 3}, {"name": "x", "dist": "uniform", "size": 1}]


@pytest.mark.parametrize(("variant", "evidence"), [
    ({"plugins": {"infogan": {"codes": INFOGAN_CODES}}}, "loss/G/info/c"),
    ({"plugins": {"conditional": {"classes": 4}}, "loss": {"name": "hinge"}}, "projection"),
    ({"plugins": {"acgan": {"classes": 4}}}, "loss/G/class"),
    ({"plugins": {"ema": {}, "diffaugment": {}}}, "loss/G/total"),
    ({"plugins": {"r1": {"every": 1}}}, "loss/D/r1"),
    ({"plugins": {"wgan-gp": {}}, "loss": {"name": "wasserstein"}, "train": {"d_steps": 1}}, "loss/D/gradient_penalty"),
], ids=["infogan", "conditional", "acgan", "ema-diffaugment", "r1", "wgan-gp"])
def test_the_variants_train_a_real_step_on_it(tmp_path, variant, evidence):
    """Each head reads D's epilogue features; InfoGAN's codes and the labels are the mapping's c."""
    result = small_step(tmp_path, **variant)
    run = result.run
    assert all(torch.isfinite(value) for value in result.logs.values())
    assert evidence in result.logs or evidence in run.discriminator.heads
    assert run.discriminator.trunk.feature_dim == 32
    conditions = sum(distribution.input_dim for name, distribution in run.inputs.items() if name != "z")
    embed = run.generator.mapping.embed
    assert (embed.weight.shape[1] if embed is not None else 0) == conditions
    if "ema" in variant["plugins"]:
        assert run.inference_generator().mapping.w_avg.equal(run.generator.mapping.w_avg)  # buffers copied
        assert run.inference_generator() is not run.generator


def test_it_trains_at_32_px_on_mnist_with_the_cifar_defaults_narrowed(tmp_path, shared_mnist):
    mnist = {"name": "mnist", "root": str(shared_mnist), "split": "all", "image_size": 32}
    result = step_once(tiny_recipe(tmp_path, model=SMALL, data=mnist), host=make_host())
    assert len(result.run.generator.mapping.layers) == 2 and result.run.discriminator.trunk.mbstd.group_size == 32
    assert math.isfinite(float(result.logs["loss/G/total"]))


def test_a_run_with_style_mixing_resumes_bit_for_bit_from_checkpointed_streams(tmp_path):
    straight, _ = assert_resumes_bitwise(tmp_path, lambda: [], model=SMALL, data=SHAPES_64,
                                         plugins={"ema": {}, "path-length": {"every": 2}})
    state = load_checkpoint(last_checkpoint(tmp_path / "halves"))
    assert {"stylegan2/mixing", "stylegan2/noise", "path-length"} <= set(state["rng"]["streams"])
    assert float(state["plugins"]["path-length"]["pl_mean"]) > 0 and straight.generator.mapping.w_avg.abs().sum() > 0


def test_truncation_moves_w_towards_its_average_for_any_noise(tmp_path):
    """The reference's ``truncation_psi``: ``w_avg.lerp(w, psi)`` at every layer."""
    run = train_steps(tiny_recipe(tmp_path, model=SMALL, data=SHAPES_64, latent={"noise": "uniform", "noise_dim": 8}),
                      tmp_path / "runs", steps=1)
    latents = run.sample_latents(6, torch.Generator().manual_seed(3), truncation=0.5)
    assert torch.equal(latents["z"], run.sample_latents(6, torch.Generator().manual_seed(3))["z"])
    generator = run.generator.eval()
    with torch.no_grad():
        ws = generator.style_latents(run.generator_input(latents))
        expected = to_unit_range(generator.synthesise(generator.mapping.w_avg + 0.5 * (ws - generator.mapping.w_avg)))
    assert_close_to_rounding(run.generate(latents, truncation=0.5), expected, terms=32 * 9 * 6)
    flat = run.generate(latents, truncation=1e-6)
    assert (flat - flat[:1]).abs().max() < 1e-4 < (run.generate(latents) - run.generate(latents)[:1]).abs().max()
    result = invoke("sample", run.directory / "checkpoints" / "last.pt", "--out", tmp_path / "t.png",
                    "--truncation", "0.7")
    assert result.exit_code == 0 and (tmp_path / "t.png").is_file()


def check(tmp_path, **sections):
    return invoke("check", write_recipe(tmp_path / "r.toml", tiny_recipe(tmp_path / "runs", **sections)))


def test_what_cannot_work_is_refused_at_check_with_one_line(tmp_path):
    small = {"model": SMALL, "data": SHAPES_64}
    assert_one_line_cli_error(check(tmp_path, **small, plugins={"spectral-norm": {}}), 2, "model.name",
                              "[plugins.spectral-norm]", "equalised learning rate", "r1")
    assert_one_line_cli_error(check(tmp_path, model={"name": "stylegan2"}), 2, "model.name", "32, 64 or 128 px")
    options = lambda **given: {**small, "model": {"name": "stylegan2", "options": {**SMALL["options"], **given}}}  # noqa: E731
    for key, value, fragment in (("channel_max", 0.5, "must be an integer"), ("w_dim", 0, "from 1 to 4096"),
                                 ("style_mixing", 1.5, "from 0 to 1"), ("d_architecture", "skip", "'resnet', 'orig'"),
                                 ("mbstd_group", 5, "do not split the batch of 16")):
        assert_one_line_cli_error(check(tmp_path, **options(**{key: value})), 2, f"model.options.{key}", fragment)
    assert_one_line_cli_error(check(tmp_path, **options(width=8)), 2, "model.options", "width")
    assert_one_line_cli_error(check(tmp_path, plugins={"path-length": {}}), 2, "plugins.path-length",
                              "'style-latents'", 'model.name = "stylegan2"')
    assert_one_line_cli_error(check(tmp_path, **small, plugins={"path-length": {}}, train={"compile": True}), 2,
                              "train.compile", "double backward")


def test_the_path_length_term_is_the_reference_formula_value_gradient_and_average():
    """training/loss.py, phase Gpl: ``pl_grads`` the gradient of ``sum(img * pl_noise)`` by the
    ws, ``pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()``, ``pl_mean =
    pl_mean.lerp(pl_lengths.mean(), pl_decay)`` (kept detached), penalty ``(pl_lengths -
    pl_mean)^2``. On a synthesis whose Jacobian is written out: ``tanh(ws . A)``."""
    torch.manual_seed(0)
    batch, layers, width, shape = 3, 4, 5, (2, 3, 3)
    weights = torch.randn(layers, width, math.prod(shape), requires_grad=True)
    ws = torch.randn(batch, layers, width, requires_grad=True)
    product = torch.einsum("bld,ldp->bp", ws, weights)
    images = torch.tanh(product).reshape(batch, *shape)
    direction = torch.randn(batch, *shape) / 3
    penalty, pl_mean = path_length_penalty(images, ws, direction, torch.tensor(0.7), 0.01)
    jacobian_t_y = torch.einsum("ldp,bp->bld", weights, (1 - torch.tanh(product) ** 2) * direction.flatten(1))
    lengths = jacobian_t_y.square().sum(dim=2).mean(dim=1).sqrt()
    expected_mean = 0.7 + 0.01 * (lengths.mean() - 0.7)
    expected = (lengths - expected_mean).square()
    assert_close_to_rounding(penalty, expected, terms=2 * 18 * width)
    assert_close_to_rounding(pl_mean, expected_mean, terms=2 * 18 * width) and not pl_mean.requires_grad
    # The penalty's gradient, through the gradient (double backward), against the written-out one.
    got, = torch.autograd.grad(penalty.mean(), weights, retain_graph=True)  # the two share tanh(ws . A)
    want, = torch.autograd.grad(expected.mean(), weights)
    assert_close_to_rounding(got, want, terms=4 * 18 * width * batch)


def test_path_length_is_lazy_weighted_by_its_interval_and_keeps_its_average(tmp_path):
    run = build_run(tiny_recipe(tmp_path, model=SMALL, data=SHAPES_64, plugins={"path-length": {"every": 2}}),
                    host=make_host())
    plugin = run.plugins["path-length"]
    assert float(plugin.pl_mean) == 0
    logs = []
    for _ in range(2):
        logs.append(train_step(run))
        run.step += 1
    assert "loss/G/path_length" not in logs[0] and float(logs[1]["loss/G/path_length"]) > 0
    total = logs[1]["loss/G/adv"] + 2.0 * 2 * logs[1]["loss/G/path_length"]  # pl_weight times the interval
    assert_close_to_rounding(logs[1]["loss/G/total"], total, terms=4)
    assert torch.equal(plugin.pl_mean, logs[1]["path_length/mean"]) and float(plugin.pl_mean) > 0
    assert plugin.state_dict()["pl_mean"] is plugin.pl_mean and run.specs["path-length"].stateful
