"""The BigGAN backbone: the reference configurations' parameter counts, its conditional batch norm,
self-attention and up block against the reference's definitions, the hierarchical latent and the
shared embedding, gradients, the plugins that train on it, an exact resume and the refusals."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from ganforge import load_generator
from ganforge.models import count_parameters
from ganforge.testing import build_run, tiny_recipe, train_steps
from ganforge.training import train_step
from ganforge_plugins.conditioning.conditional import Projection
from ganforge_plugins.models.biggan import build_biggan
from ganforge_plugins.models.biggan_layers import ConditionalBatchNorm, GeneratorBlock, SelfAttention

from .conftest import assert_one_line_cli_error, invoke, write_recipe
from .test_variant_hooks import assert_resumes_bitwise
from .tolerance import assert_close_to_rounding

# Parameter counts of the reference networks: POSTECH-CVLab/PyTorch-StudioGAN at 947b35e,
# src/models/big_resnet.py (Generator, GenBlock, Discriminator, DiscOptBlock, DiscBlock) with the
# layers of src/utils/ops.py (ConditionalBatchNorm2d: BN without affine, gain and bias linear maps
# without bias; SelfAttention: four bias-free 1x1 convs and a gain), 3 channels, in the sizes of its
# configurations. The shared embedding and D's projection embedding grow with the classes.
# 32 px, src/configs/CIFAR10/BigGAN.yaml (g_conv_dim = d_conv_dim = 96, z_dim 80 in 4 chunks of 20,
#   g_shared_dim 128, so each conditional BN reads 148; attention after G's 2nd block and D's 1st;
#   10 classes). G: linear0 20 x 6,144 + 6,144 = 129,024; shared 10 x 128 = 1,280; three GenBlocks
#   384 -> 384 of two conditional BNs 2 x 148 x 384 (2 x 113,664), conv2d0 384 x 384 + 384 (147,840),
#   conv2d1 and conv2d2 384 x 384 x 9 + 384 (2 x 1,327,488): 3,030,144 each; attention on 384:
#   2 x 384 x 48 + 2 x 384 x 192 + 1 = 184,321; bn4 2 x 384; conv2d5 384 x 3 x 9 + 3 = 10,371:
#   9,416,196. D: DiscOptBlock 3 -> 192 (768 + 5,376 + 331,968 = 338,112); attention on 192
#   (46,081); DiscBlock 192 -> 192 down, with conv2d0 (37,056 + 2 x 331,968 = 700,992); two without
#   (663,936 each); linear1 193; embedding 10 x 192 = 1,920: 2,415,170.
# 64 px, src/configs/Baby_ImageNet/BigGAN.yaml (80, 80, z_dim 100 in 5 chunks, attention after G's
#   3rd block and D's 1st), with 200 classes. G: linear0 20 x 20,480 + 20,480 = 430,080; shared
#   25,600; GenBlocks 1,280 -> 640 -> 320 -> 160 -> 80 (12,448,640, 3,254,720, 884,960, 256,880);
#   attention on 160 (32,001); bn4 160; conv2d5 2,163: 17,335,204. D: 3 -> 80 -> 160 -> 320 -> 640
#   -> 1,280 (60,240, 358,880, 1,434,560, 5,736,320, 22,941,440); attention on 80 (8,001); linear1
#   1,281; embedding 200 x 1,280 = 256,000: 30,796,722.
# 128 px, src/configs/ImageNet/BigGAN-256.yaml (96, 96, z_dim 120 in 6 chunks, attention after G's
#   4th block and D's 1st), 1,000 classes, the same way: 70,433,988 and 87,982,370.
# The reference's training logs print the same counts (logs/CIFAR10/BigGAN-train-2021_01_15_14_48_48.log,
# logs/TINY_IMAGENET/BigGAN-train-2021_01_18_11_42_25.log, logs/IMAGENET/BigGAN256-train-2021_01_24_03_52_15.log).
REFERENCE = {32: ({"z": 80, "label": 10}, 9_416_196, 2_415_170),
             64: ({"z": 100, "label": 200}, 17_335_204, 30_796_722),
             128: ({"z": 120, "label": 1000}, 70_433_988, 87_982_370)}


def build(size, layout, **options):
    return build_biggan((3, size, size), sum(layout.values()), input_layout=layout, **options)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_the_reference_configurations_have_the_reference_parameter_counts(size):
    layout, generator_count, discriminator_count = REFERENCE[size]
    if size == 32:
        generator, discriminator = build(size, layout)
        images = generator(torch.randn(2, sum(layout.values())))
        assert images.shape == (2, 3, 32, 32) and images.abs().max() <= 1
        assert discriminator(images).shape == (2,) and discriminator.features(images).shape == (2, 192)
    else:  # counted on the meta device: the shapes alone, without initialising 50 to 160 million weights
        with torch.device("meta"):
            generator, discriminator = build(size, layout)
    # D's class embedding is [plugins.conditional]'s projection head, on D's features.
    projection = Projection(layout["label"], discriminator.feature_dim)
    assert count_parameters(generator) == generator_count
    assert count_parameters(discriminator) + count_parameters(projection) == discriminator_count


def reference_ccbn(x, y, gain_weight, bias_weight, mean, var, training, eps=1e-4):
    """BigGAN-PyTorch layers.py ``ccbn.forward`` (norm_style 'bn', which_linear without bias)."""
    gain = (1 + y @ gain_weight.t()).view(y.size(0), -1, 1, 1)
    bias = (y @ bias_weight.t()).view(y.size(0), -1, 1, 1)
    return F.batch_norm(x, mean, var, None, None, training, 0.1, eps) * gain + bias


def test_conditional_batch_norm_is_the_reference_ccbn():
    torch.manual_seed(0)
    norm = ConditionalBatchNorm(6, 5)
    x, y = torch.randn(4, 6, 3, 3, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    mean, var = torch.zeros(6), torch.ones(6)
    parameters = [x, y, norm.to_gain.weight, norm.to_bias.weight]
    ours, theirs = norm(x, y), reference_ccbn(x, y, norm.to_gain.weight, norm.to_bias.weight, mean, var, True)
    assert_close_to_rounding(ours, theirs, terms=4 * 9 + 5)
    cotangent = torch.randn_like(ours)
    assert_close_to_rounding(torch.autograd.grad(ours, parameters, cotangent),
                             torch.autograd.grad(theirs, parameters, cotangent), terms=4 * 9 * 4)
    assert_close_to_rounding([norm.norm.running_mean, norm.norm.running_var], [mean, var], terms=4 * 9)
    norm.eval()
    assert_close_to_rounding(norm(x, y), reference_ccbn(x, y, norm.to_gain.weight, norm.to_bias.weight, mean, var,
                                                        False), terms=5)


def reference_attention(x, theta, phi, g, o, gamma):
    """BigGAN-PyTorch layers.py ``Attention.forward``, its 1x1 convs given as weights."""
    ch, (height, width) = x.shape[1], x.shape[2:]
    theta = F.conv2d(x, theta).view(-1, ch // 8, height * width)
    phi = F.max_pool2d(F.conv2d(x, phi), [2, 2]).view(-1, ch // 8, height * width // 4)
    g = F.max_pool2d(F.conv2d(x, g), [2, 2]).view(-1, ch // 2, height * width // 4)
    beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)
    return gamma * F.conv2d(torch.bmm(g, beta.transpose(1, 2)).view(-1, ch // 2, height, width), o) + x


def test_self_attention_is_the_reference_block():
    torch.manual_seed(1)
    attention = SelfAttention(16)
    with torch.no_grad():
        attention.gain.fill_(0.7)  # it starts at 0, where the attended path would not show
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    weights = [attention.query.weight, attention.key.weight, attention.value.weight, attention.out.weight,
               attention.gain]
    ours, theirs = attention(x), reference_attention(x, *weights)
    # Per value: a 16-channel 1x1 conv, a 2-channel dot product over 9 keys, an 8-channel conv.
    assert_close_to_rounding(ours, theirs, terms=16 + 2 + 9 + 8 + 16)
    cotangent = torch.randn_like(ours)
    assert_close_to_rounding(torch.autograd.grad(ours, [x, *weights], cotangent),
                             torch.autograd.grad(theirs, [x, *weights], cotangent), terms=4 * 36 * 16)
    channels_last = x.detach().to(memory_format=torch.channels_last)  # as training lays out maps from 32 px
    assert_close_to_rounding(attention(channels_last), reference_attention(channels_last, *weights), terms=48)


def test_the_up_block_and_the_generator_s_wiring_are_the_reference_s():
    torch.manual_seed(2)
    block = GeneratorBlock(8, 4, 5)
    x, y = torch.randn(3, 8, 4, 4), torch.randn(3, 5)
    up = F.interpolate  # BigGAN-PyTorch layers.py GBlock.forward with upsample = F.interpolate(scale_factor=2)
    h = F.relu(block.norm1(x, y))
    h = F.conv2d(up(h, scale_factor=2), block.conv1.weight, block.conv1.bias, padding=1)
    h = F.conv2d(F.relu(block.norm2(h, y)), block.conv2.weight, block.conv2.bias, padding=1)
    expected = h + F.conv2d(up(x, scale_factor=2), block.shortcut.weight, block.shortcut.bias)
    assert_close_to_rounding(block(x, y), expected, terms=8 * 9 + 4 * 9)

    # StudioGAN big_resnet.py Generator.forward: z in chunks, the first to linear0, each block
    # reading [shared(y), its chunk]; attention after the block that reaches 16 px here.
    for layout in ({"z": 20, "label": 6}, {"z": 20}):
        generator, _ = build_biggan((1, 32, 32), sum(layout.values()), input_layout=layout, g_width=4, d_width=4)
        generator.eval()
        row = torch.randn(3, sum(layout.values()))
        chunks = row[:, :20].split(5, dim=1)
        conditions = [torch.cat([row[:, 20:] @ generator.shared.weight, chunk], 1) if len(layout) > 1 else chunk
                      for chunk in chunks[1:]]
        assert (generator.shared is None) == (len(layout) == 1)
        h = generator.project(chunks[0]).view(3, 16, 4, 4)
        for index, block in enumerate(generator.blocks):
            h = block(h, conditions[index])
            h = generator.attention(h) if h.shape[-1] == 16 else h
        expected = torch.tanh(generator.to_image(F.relu(generator.norm(h))))
        assert_close_to_rounding(generator(row), expected, terms=16 * 9 * 3)
        # Without conditions each batch norm reads its z chunk alone (StudioGAN's unconditional BigGAN).
        assert generator.blocks[0].norm1.to_gain.in_features == 5 + (128 if len(layout) > 1 else 0)


def test_every_parameter_gets_a_gradient():
    generator, discriminator = build_biggan((1, 32, 32), 24, input_layout={"z": 20, "c": 4}, g_width=4, d_width=4)
    with torch.no_grad():  # the attention gains start at 0, which would stop their convolutions' gradients
        generator.attention.gain.fill_(0.5)
        discriminator.attention.gain.fill_(0.5)
    discriminator(generator(torch.randn(4, 24))).sum().backward()
    for name, parameter in [*generator.named_parameters(), *discriminator.named_parameters()]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


# CPU-sized: G's blocks 32 down to 2 channels, D's 4 up to 64; attention at 8 px, where it is cheap.
SMALL = {"model": {"name": "biggan", "options": {"g_width": 2, "d_width": 4, "attention": 8}},
         "data": {"image_size": 64, "size": 64}, "latent": {"noise_dim": 10}}
SMALL_BATCH = {"batch_size": 4}


def small(tmp_path, train=None, **sections):
    return tiny_recipe(tmp_path, **SMALL, train={**SMALL_BATCH, **(train or {})}, **sections)


def test_infogan_codes_reach_g_through_conditional_batch_norm_and_q_reads_d_s_features(tmp_path):
    codes = [{"name": "c", "dist": "categorical", "size": 3}, {"name": "x", "dist": "uniform", "size": 1}]
    run = build_run(small(tmp_path, loss={"name": "hinge"}, plugins={"infogan": {"codes": codes}}))
    logs = train_step(run)
    assert float(logs["loss/G/info/c"]) > 0 and math.isfinite(float(logs["loss/D/total"]))
    assert run.discriminator.heads["q"] is not None and run.discriminator.trunk.feature_dim == 64
    generator = run.generator.eval()
    assert generator.shared.weight.shape == (4, 128)  # the codes' 3 + 1 widths, after z's 10
    row = run.generator_input(run.sample_latents(4, torch.Generator().manual_seed(0)))
    moved = row.clone()
    moved[:, 10:] = moved[:, 10:].flip(0)  # other codes, the same noise
    assert not torch.allclose(generator(row), generator(moved))
    with torch.no_grad():
        generator.shared.weight.zero_()  # the shared embedding is the codes' only way in
    assert torch.equal(generator(row), generator(moved))


def test_the_projection_head_and_acgan_train_on_it(tmp_path):
    run = build_run(small(tmp_path, loss={"name": "hinge"}, plugins={"conditional": {"classes": 4}}))
    assert math.isfinite(float(train_step(run)["loss/D/total"]))
    images, label = torch.randn(3, 1, 64, 64), F.one_hot(torch.tensor([0, 3, 1]), 4).float()
    output = run.discriminator(images, {"label": label})
    projection = run.discriminator.heads["projection"]
    expected = run.discriminator.trunk.adversarial(output.features) + (projection.embed(label) * output.features).sum(1)
    assert_close_to_rounding(output.logits, expected, terms=2 * 64)
    run = build_run(small(tmp_path, plugins={"acgan": {"classes": 4}}))
    assert float(train_step(run)["loss/G/class"]) > 0


def test_spectral_norm_covers_both_networks_but_the_shared_embedding_and_trains_with_ema_diffaugment_r1(tmp_path):
    plugins = {"conditional": {"classes": 4}, "spectral-norm": {"generator": True}, "ema": {},
               "diffaugment": {}, "r1": {"every": 1}}
    run = build_run(small(tmp_path, loss={"name": "hinge"}, plugins=plugins))
    normalised = {name.removesuffix(".parametrizations.weight.original") for name, _ in run.generator.named_parameters()
                  if name.endswith("original")}
    layers = {name for name, module in run.generator.named_modules()
              if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))}
    assert normalised == layers and "blocks.0.norm1.to_gain" in normalised and "shared" not in normalised
    logs = train_step(run)
    assert float(logs["loss/D/r1"]) > 0 and math.isfinite(float(logs["loss/G/total"]))


def test_wgan_gp_finds_no_batch_norm_in_the_critic_and_leaves_g_s(tmp_path):
    run = build_run(small(tmp_path, loss={"name": "wasserstein"}, plugins={"wgan-gp": {}}, train={"d_steps": 1}))
    assert not any("batch norms" in note for note in run.notes)  # D has none to swap for layer norms
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in run.generator.modules()) == 2 * 4 + 1
    assert float(train_step(run)["loss/D/gradient_penalty"]) > 0


def test_a_run_resumes_bit_for_bit(tmp_path):
    plugins = {"conditional": {"classes": 4}, "spectral-norm": {"generator": True}, "ema": {}, "orthogonal": {}}
    assert_resumes_bitwise(tmp_path, lambda: [], SMALL_BATCH, **SMALL, loss={"name": "hinge"}, plugins=plugins)


def test_sampling_with_truncation(tmp_path):
    run = train_steps(small(tmp_path, plugins={"conditional": {"classes": 4}}), tmp_path / "runs", steps=1)
    checkpoint = run.directory / "checkpoints" / "last.pt"
    generator = load_generator(checkpoint)
    truncated = generator.sample(4, seed=1, truncation=0.5)
    assert truncated.shape == (4, 1, 64, 64) and not torch.equal(truncated, generator.sample(4, seed=1))
    assert invoke("sample", checkpoint, "--out", tmp_path / "t.png", "--truncation", "0.5").exit_code == 0


def test_what_cannot_work_is_refused_at_check_with_one_line(tmp_path):
    def check(**sections):
        return invoke("check", write_recipe(tmp_path / "r.toml", tiny_recipe(tmp_path / "runs", **sections)))

    def options(**values):
        return {**SMALL, "model": {"name": "biggan", "options": {"g_width": 4, "d_width": 8, **values}}}

    assert_one_line_cli_error(check(model={"name": "biggan"}), 2, "model.name", "32, 64 or 128 px")
    assert_one_line_cli_error(check(**{**SMALL, "latent": {"noise_dim": 8}}), 2, "latent.noise_dim", "5 equal chunks",
                              "multiple of 5")
    assert_one_line_cli_error(check(**options(g_width=2.5)), 2, "model.options.g_width", "integer")
    assert_one_line_cli_error(check(**options(shared_dim=0)), 2, "model.options.shared_dim", "1 to 4096")
    assert_one_line_cli_error(check(**options(attention=4)), 2, "model.options.attention", "8, 16, 32, 64")
    assert_one_line_cli_error(check(**options(d_width=4)), 2, "model.options.d_width", "attention = 0")
    assert_one_line_cli_error(check(**options(heads=2)), 2, "model.options", "heads")
    assert check(**options(d_width=4, attention=0)).exit_code == 0
