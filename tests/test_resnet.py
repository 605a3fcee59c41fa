"""The SNGAN ResNet backbone: the reference's layout and sizes, its blocks' arithmetic, gradients,
and the plugins that touch the networks training on it."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from ganforge.errors import RecipeError
from ganforge.testing import build_run, tiny_recipe
from ganforge.training import train_step
from ganforge_plugins.models.resnet import DiscriminatorBlock, GeneratorBlock, build_resnet

from .conftest import assert_one_line_cli_error, invoke, write_recipe
from .tolerance import assert_close_to_rounding

# Parameter counts of the reference networks (kwotsin/mimicry at 3f60827,
# torch_mimicry/nets/sngan/sngan_32.py and sngan_64.py with the blocks of
# torch_mimicry/modules/resblocks.py, nz = 128, 3 channels), added up from their layers:
# 32 px, G (ngf 256): l1 128 x 4,096 + 4,096; three GBlocks of 2 x (256 x 256 x 9 + 256) convs,
#   two BN of 512 and a 256 x 256 + 256 shortcut (1,246,976 each); b5 512; c5 256 x 3 x 9 + 3.
# 32 px, D (ndf 128): DBlockOptimized 3 -> 128 (151,680), DBlock 128 -> 128 down with its shortcut
#   (311,680), two DBlocks without (295,168 each), l5 129.
# 64 px, G (ngf 1,024): l1 2,113,536; GBlocks 1,024 -> 512 -> 256 -> 128 -> 64 (7,606,784,
#   1,902,848, 476,288, 119,360); b6 128; c6 1,731. D (ndf 1,024): 3 -> 64 -> ... -> 1,024
#   (38,976, 119,104, 475,776, 1,901,824, 7,604,736), l6 1,025.
REFERENCE_PARAMETERS = {32: (4_276_739, 1_053_825), 64: (12_220_675, 10_141_441)}


def count(module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize("size", [32, 64])
def test_the_networks_have_the_reference_layout_and_sizes(size):
    generator, discriminator = build_resnet((3, size, size), 128)
    assert (count(generator), count(discriminator)) == REFERENCE_PARAMETERS[size]
    images = generator(torch.randn(2, 128))
    assert images.shape == (2, 3, size, size) and images.abs().max() <= 1
    assert discriminator.features(images).shape == (2, discriminator.feature_dim) == (2, 128 if size == 32 else 1024)
    assert discriminator(images).shape == (2,)


def test_the_blocks_compute_the_reference_arithmetic():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    up = GeneratorBlock(8, 4).eval()  # eval: batch norm as an affine map of its running statistics
    norm = lambda bn, t: F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    upsampled = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    h = F.conv2d(F.interpolate(F.relu(norm(up.norm1, x)), scale_factor=2, mode="bilinear", align_corners=False),
                 up.conv1.weight, up.conv1.bias, padding=1)
    expected = F.conv2d(F.relu(norm(up.norm2, h)), up.conv2.weight, up.conv2.bias, padding=1) \
        + F.conv2d(upsampled, up.shortcut.weight, up.shortcut.bias)
    assert_close_to_rounding(up(x), expected, terms=2 * 8 * 9)
    for first in (True, False):
        down = DiscriminatorBlock(8, 4, down=True, first=first)
        h = F.conv2d(x if first else F.relu(x), down.conv1.weight, down.conv1.bias, padding=1)
        h = F.avg_pool2d(F.conv2d(F.relu(h), down.conv2.weight, down.conv2.bias, padding=1), 2)
        skip = F.avg_pool2d(F.conv2d(x, down.shortcut.weight, down.shortcut.bias), 2)  # pooling and a 1x1 conv commute
        assert_close_to_rounding(down(x), h + skip, terms=2 * 8 * 9)
    same = DiscriminatorBlock(8, 8, down=False)
    assert same.shortcut is None
    assert_close_to_rounding(same(x), same.conv2(F.relu(same.conv1(F.relu(x)))) + x, terms=2 * 8 * 9)


def test_every_parameter_gets_a_gradient():
    generator, discriminator = build_resnet((1, 32, 32), 10, g_width=8, d_width=8)
    discriminator(generator(torch.randn(4, 10))).sum().backward()
    for name, parameter in [*generator.named_parameters(), *discriminator.named_parameters()]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


SMALL = {"model": {"name": "resnet", "options": {"g_width": 16, "d_width": 16}}, "data": {"image_size": 64}}


def test_infogan_spectral_norm_and_ema_train_on_it_at_32_px(tmp_path, shared_mnist):
    codes = [{"name": "c", "dist": "categorical", "size": 4}, {"name": "x", "dist": "uniform", "size": 1}]
    mnist = {"name": "mnist", "root": str(shared_mnist), "split": "all", "image_size": 32}
    run = build_run(tiny_recipe(tmp_path, **{**SMALL, "data": mnist}, loss={"name": "hinge"},
                                plugins={"infogan": {"codes": codes}, "spectral-norm": {}, "ema": {}}))
    logs = train_step(run)
    assert math.isfinite(float(logs["loss/D/total"])) and float(logs["loss/G/info/c"]) > 0
    assert run.discriminator.heads["q"] is not None and run.inputs["c"].size == 4


def test_wgan_gp_and_conditional_train_on_it(tmp_path):
    run = build_run(tiny_recipe(tmp_path, **SMALL, loss={"name": "wasserstein"}, plugins={"wgan-gp": {}}))
    assert float(train_step(run)["loss/D/gradient_penalty"]) > 0
    run = build_run(tiny_recipe(tmp_path, **SMALL, loss={"name": "hinge"}, plugins={"conditional": {"classes": 4}}))
    assert math.isfinite(float(train_step(run)["loss/D/total"]))


def test_its_options_and_sizes_are_checked_with_one_line(tmp_path):
    def check(**sections):
        return invoke("check", write_recipe(tmp_path / "r.toml", tiny_recipe(tmp_path / "runs", **sections)))

    assert_one_line_cli_error(check(model={"name": "resnet"}), 2, "model.name", "32 or 64 px")
    assert_one_line_cli_error(check(**{**SMALL, "model": {"name": "resnet", "options": {"g_width": 0.5}}}), 2,
                              "model.options", "g_width")
    assert_one_line_cli_error(check(model={"name": "resnet", "options": {"width": 8}}, data={"image_size": 64}), 2,
                              "model.options", "width")
    assert_one_line_cli_error(check(model={"name": "dcgan-28", "options": {"width": 8}}), 2, "model.options")
    with pytest.raises(RecipeError, match="multiple of 16"):
        build_resnet((3, 64, 64), 8, g_width=24)


def test_a_run_saved_before_model_options_existed_resumes(tmp_path):
    import io

    from rich.console import Console

    from ganforge.launch import check_resumable
    from ganforge.testing import make_host, read_recipe

    recipe = read_recipe(tiny_recipe(tmp_path), make_host())
    stored = recipe.to_dict()
    del stored["model"]["options"]  # as a checkpoint written before the key was added holds it
    check_resumable(stored, recipe, False, Console(file=io.StringIO()))
    stored["model"]["options"] = {"g_width": 8}
    with pytest.raises(RecipeError, match="model.options"):
        check_resumable(stored, recipe, False, Console(file=io.StringIO()))


def test_d_mbstd_group_lets_each_image_see_its_group_and_only_it():
    """With ``d_mbstd_group = 4`` an image's logit depends on the three others of its group (the
    gradient reaches them) and on no image of another group; without it, on itself alone."""
    torch.manual_seed(0)
    _, plain = build_resnet((1, 32, 32), 10, g_width=8, d_width=8)
    _, grouped = build_resnet((1, 32, 32), 10, g_width=8, d_width=8, d_mbstd_group=4)
    assert sum(p.numel() for p in grouped.parameters()) > sum(p.numel() for p in plain.parameters())
    images = torch.randn(8, 1, 32, 32, requires_grad=True)
    for network, together in ((grouped, {0, 2, 4, 6}), (plain, {0})):
        # MinibatchStd's groups: image i is in group i mod (N / G), here the even images.
        (gradient,) = torch.autograd.grad(network.adversarial(network.features(images))[0], images)
        reached = {i for i in range(8) if gradient[i].abs().sum() > 0}
        assert reached == together
    with pytest.raises(RecipeError, match="d_mbstd_group"):
        build_resnet((1, 32, 32), 10, d_mbstd_group=-1)


def test_d_norm_batch_normalises_before_each_relu_and_leaves_the_default_as_the_reference():
    """``d_norm = "batch"``: a batch norm before each of D's ReLUs (not on the image), so in
    training an image's logit depends on the whole batch, and in eval on itself; every new scale
    and shift gets a gradient. ``"none"`` is the reference's D, parameter for parameter."""
    torch.manual_seed(0)
    _, plain = build_resnet((1, 32, 32), 10, g_width=8, d_width=8)
    _, normed = build_resnet((1, 32, 32), 10, g_width=8, d_width=8, d_norm="batch")
    norms = [m for m in normed.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # four blocks: one norm in the first (after its image conv), two in each of the three others, one at the end
    assert len(norms) == 1 + 2 * 3 + 1
    assert count(normed) == count(plain) + sum(2 * m.num_features for m in norms)
    assert [name for name, _ in plain.named_parameters()] == \
        [name for name, _ in build_resnet((1, 32, 32), 10, g_width=8, d_width=8, d_norm="none")[1].named_parameters()]
    images = torch.randn(8, 1, 32, 32, requires_grad=True)
    (gradient,) = torch.autograd.grad(normed(images)[0], images)
    assert all(gradient[i].abs().sum() > 0 for i in range(8))  # the batch statistics reach every image
    normed(images).sum().backward()
    for name, parameter in normed.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    normed.eval()
    (gradient,) = torch.autograd.grad(normed(images)[0], images)
    assert {i for i in range(8) if gradient[i].abs().sum() > 0} == {0}
    with pytest.raises(RecipeError, match="model.options.d_norm"):
        build_resnet((1, 32, 32), 10, d_norm="layer")
