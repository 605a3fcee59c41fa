"""ADA: each change against the reference's matrices, exact whole-pixel moves, p = 0 as the
identity, gradients into the images, the reference's rule for p on a real run, an exact resume,
the combinations it promises and the ones ``check`` refuses.

The reference is NVlabs/stylegan2-ada-pytorch at d72cc7d041b42ec8e806021a205ed9349f87c6a4:
``training/augment.py`` (``AugmentPipe``, its matrix helpers ``translate2d``, ``scale2d``,
``rotate2d``, ``translate3d``, ``scale3d``, ``rotate3d`` and the ``*_inv`` ones) and
``training/training_loop.py`` (the ADA heuristic). The matrices below are transcribed from it in
float64, element by element, independently of the plugin's own construction.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ganforge import hookimpl
from ganforge.checkpoint import load_checkpoint
from ganforge.data import ImageData
from ganforge.errors import RecipeError
from ganforge.step_services import transform
from ganforge_plugins.augmentation.ada_pipeline import (BGC, COLOUR, GEOMETRIC, augment, colour_matrix,
                                                        draw_parameters, geometric_matrix, recolour, resample)

from .conftest import assert_one_line_cli_error, invoke, make_host, metric_records, run_tiny, tiny_recipe, write_recipe
from .test_variant_hooks import INFOGAN, assert_resumes_bitwise, built_run, last_checkpoint
from .tolerance import assert_close_to_rounding

# -- the reference's matrices, transcribed (float64, one image) --------------------------------


def ref_matrix(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def ref_translate2d(tx, ty):
    return ref_matrix([1, 0, tx], [0, 1, ty], [0, 0, 1])


def ref_scale2d(sx, sy):
    return ref_matrix([sx, 0, 0], [0, sy, 0], [0, 0, 1])


def ref_rotate2d(theta):
    return ref_matrix([math.cos(theta), math.sin(-theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1])


def ref_translate2d_inv(tx, ty):
    return ref_translate2d(-tx, -ty)


def ref_scale2d_inv(sx, sy):
    return ref_scale2d(1 / sx, 1 / sy)


def ref_rotate2d_inv(theta):
    return ref_rotate2d(-theta)


def ref_translate3d(tx, ty, tz):
    return ref_matrix([1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1])


def ref_scale3d(sx, sy, sz):
    return ref_matrix([sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1])


def ref_rotate3d(v, theta):
    vx, vy, vz = v[:3].tolist()
    s, c = math.sin(theta), math.cos(theta)
    cc = 1 - c
    return ref_matrix([vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                      [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
                      [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
                      [0, 0, 0, 1])


REF_LUMA = torch.tensor([1, 1, 1, 0], dtype=torch.float64) / math.sqrt(3)

# One image's fixed values of every change, the identity's for the second image.
FIXED = {"xflip": 1.0, "rotate90": 3.0, "xint": (2.0, -3.0), "scale": 1.3, "rotate": 0.7, "aniso": 0.8,
         "rotate_after": -1.9, "xfrac": (0.37, 1.21), "brightness": 0.15, "contrast": 1.4, "lumaflip": 1.0,
         "hue": 2.2, "saturation": 0.6}
IDENTITY = {"xflip": 0.0, "rotate90": 0.0, "xint": (0.0, 0.0), "scale": 1.0, "rotate": 0.0, "aniso": 1.0,
            "rotate_after": 0.0, "xfrac": (0.0, 0.0), "brightness": 0.0, "contrast": 1.0, "lumaflip": 0.0,
            "hue": 0.0, "saturation": 1.0}


def parameters(*images: dict, only=None) -> dict[str, torch.Tensor]:
    names = only or list(FIXED)
    return {name: torch.tensor([image[name] for image in images], dtype=torch.float32) for name in names}


def ref_geometric(v: dict) -> torch.Tensor:
    """``G_inv`` as AugmentPipe.forward composes it: each change's inverse on the right."""
    g = torch.eye(3, dtype=torch.float64)
    g = g @ ref_scale2d_inv(1 - 2 * v["xflip"], 1)
    g = g @ ref_rotate2d_inv(-math.pi / 2 * v["rotate90"])
    g = g @ ref_translate2d_inv(*v["xint"])  # already rounded to whole pixels
    g = g @ ref_scale2d_inv(v["scale"], v["scale"])
    g = g @ ref_rotate2d_inv(-v["rotate"])  # before the anisotropic scaling
    g = g @ ref_scale2d_inv(v["aniso"], 1 / v["aniso"])
    g = g @ ref_rotate2d_inv(-v["rotate_after"])  # after it
    return g @ ref_translate2d_inv(*v["xfrac"])  # in pixels: t * width, t * height


def ref_colour(v: dict) -> torch.Tensor:
    """``C`` as AugmentPipe.forward composes it: each change on the left."""
    c, eye, outer = torch.eye(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64), torch.outer(REF_LUMA, REF_LUMA)
    c = ref_translate3d(v["brightness"], v["brightness"], v["brightness"]) @ c
    c = ref_scale3d(v["contrast"], v["contrast"], v["contrast"]) @ c
    c = (eye - 2 * outer * v["lumaflip"]) @ c
    c = ref_rotate3d(REF_LUMA, v["hue"]) @ c
    return (outer + (eye - outer) * v["saturation"]) @ c


def test_each_geometric_change_and_their_composition_is_the_reference_s_matrix():
    for name in GEOMETRIC + ("rotate_after",):
        one_change = {**IDENTITY, name: FIXED[name]}
        only = [key for key in FIXED if key in GEOMETRIC or key == "rotate_after"]
        ours = geometric_matrix(parameters(one_change, IDENTITY, only=only), 2, torch.device("cpu"))
        assert_close_to_rounding(ours[0], ref_geometric(one_change), terms=3, what=name)
        assert torch.equal(ours[1], torch.eye(3))
    everything = geometric_matrix(parameters(FIXED, only=[k for k in FIXED if k not in COLOUR]), 1, torch.device("cpu"))
    # Eight products of 3x3 matrices, each rounding three sums per element.
    assert_close_to_rounding(everything[0], ref_geometric(FIXED), terms=24)


def test_each_colour_change_and_their_composition_is_the_reference_s_matrix():
    for name in COLOUR:
        one_change = {**IDENTITY, name: FIXED[name]}
        ours = colour_matrix(parameters(one_change, IDENTITY, only=list(COLOUR)), 2, torch.device("cpu"))
        # Rows 0 to 2 act on colours; the reference's saturation also scales the homogeneous
        # corner (its I - vv^T has a 1 there), which no colour reads.
        assert_close_to_rounding(ours[0, :3], ref_colour(one_change)[:3], terms=4, what=name)
        assert torch.equal(ours[1], torch.eye(4))
    everything = colour_matrix(parameters(FIXED, only=list(COLOUR)), 1, torch.device("cpu"))
    assert_close_to_rounding(everything[0, :3], ref_colour(FIXED)[:3], terms=20)


def test_flips_quarter_turns_and_whole_pixel_shifts_move_pixels_exactly_with_reflection():
    images = torch.rand(2, 3, 28, 28) * 2 - 1  # 28 px: coordinates in [-1, 1] would round here
    def moved(**values):
        only = list(values)
        return resample(images, geometric_matrix(parameters(*[{**IDENTITY, **values}] * 2, only=only), 2, images.device))
    assert torch.equal(moved(xflip=1.0), images.flip(3))
    for quarter in range(4):
        assert torch.equal(moved(rotate90=float(quarter)), torch.rot90(images, quarter, dims=(2, 3)))
    # The reference pads with torch's "reflect" (the edge pixel not repeated) before it samples.
    padded = F.pad(images, (8, 8, 8, 8), mode="reflect")
    for dx, dy in ((5, -3), (-8, 8), (0, 7)):
        expected = padded[:, :, 8 - dy:8 - dy + 28, 8 - dx:8 - dx + 28]  # content moved right by dx, down by dy
        assert torch.equal(moved(xint=(float(dx), float(dy))), expected), (dx, dy)
    tall = torch.rand(1, 1, 20, 13)
    assert torch.equal(resample(tall, geometric_matrix(parameters({**IDENTITY, "xflip": 1.0}, only=["xflip"]), 1,
                                                       tall.device)), tall.flip(3))


def test_a_general_move_samples_bilinearly_as_the_reference_without_its_filter():
    """The reference's execution with its 2x upsampling and wavelet filter left out: reflect
    padding, the matrix moved to the padded image's normalised coordinates, ``grid_sample``."""
    images = torch.rand(2, 3, 24, 20) * 2 - 1
    n, _, height, width = images.shape
    values = {**IDENTITY, "scale": 1.1, "rotate": 0.4, "aniso": 0.9, "rotate_after": -0.3, "xfrac": (1.3, -0.6)}
    moves = geometric_matrix(parameters(values, values, only=[k for k in FIXED if k not in COLOUR]), n, images.device)
    ours = resample(images, moves)
    margin_x, margin_y = width - 1, height - 1  # the reference's largest padding
    padded = F.pad(images, (margin_x, margin_x, margin_y, margin_y), mode="reflect")
    g = moves.double()  # centred pixels; the padding is symmetric, so the origin stays put
    to_padded = torch.diag(torch.tensor([2 / padded.shape[3], 2 / padded.shape[2], 1], dtype=torch.float64))
    from_output = torch.diag(torch.tensor([width / 2, height / 2, 1], dtype=torch.float64))
    theta = (to_padded @ g @ from_output)[:, :2, :]
    grid = F.affine_grid(theta, [n, 3, height, width], align_corners=False)
    expected = F.grid_sample(padded.double(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Each sample's position rounds a few times at the size of the image (width * eps pixels),
    # and moves its value by that much times the image's steepness between neighbours.
    steepness = math.hypot(float(images.diff(dim=3).norm()), float(images.diff(dim=2).norm()))
    assert_close_to_rounding(ours, expected, terms=8, scale=width * steepness)


def test_colour_changes_on_rgb_and_grey_images_give_the_reference_s_values():
    rgb, grey = torch.rand(2, 3, 6, 6) * 2 - 1, torch.rand(2, 1, 6, 6) * 2 - 1
    def coloured(images, **values):
        only = [name for name in COLOUR if name in values]
        return recolour(images, colour_matrix(parameters(*[{**IDENTITY, **values}] * 2, only=only), 2, images.device))
    for images in (rgb, grey):
        # translate3d(b) first, then scale3d(c): c * (x + b).
        assert_close_to_rounding(coloured(images, brightness=0.15, contrast=1.4), 1.4 * (images + 0.15), terms=4)
    assert_close_to_rounding(coloured(grey, lumaflip=1.0), -grey, terms=9)  # on (g, g, g): through 0
    grey_axis = rgb.mean(1, keepdim=True)
    assert_close_to_rounding(coloured(rgb, lumaflip=1.0), rgb - 2 * grey_axis, terms=9)  # x - 2 (v.x) v
    assert_close_to_rounding(coloured(rgb, hue=2 * math.pi / 3), rgb.roll(1, dims=1), terms=9)  # a third of a turn
    assert_close_to_rounding(coloured(rgb, saturation=0.0), grey_axis.expand_as(rgb), terms=9)
    # The reference's reduction of C for one channel: rows averaged, colour columns summed.
    c = colour_matrix(parameters(FIXED, IDENTITY, only=["brightness", "contrast", "lumaflip"]), 2, grey.device)
    rows = c[:, :3, :].mean(dim=1, keepdim=True)
    expected = (grey.reshape(2, 1, 36) * rows[:, :, :3].sum(dim=2, keepdim=True) + rows[:, :, 3:]).reshape(grey.shape)
    assert_close_to_rounding(recolour(grey, c), expected, terms=9)


def test_at_p_0_every_change_is_exactly_the_identity_and_so_is_the_gradient():
    for channels in (1, 3):
        images = (torch.rand(4, channels, 28, 28) * 2 - 1).requires_grad_(True)
        out = augment(images, torch.Generator().manual_seed(0), torch.tensor(0.0), BGC)
        assert torch.equal(out, images)
        weights = torch.randn_like(out)
        (gradient,) = torch.autograd.grad((out * weights).sum(), images)
        assert torch.equal(gradient, weights)


def test_the_gradient_reaches_the_images_and_is_the_change_s_transpose():
    """For fixed draws the augmentation is affine in the images, A x + b: the gradient of
    <w, A x + b> must be A^T w, so <A x, w> = <x, gradient> for any x."""
    images = (torch.rand(4, 3, 20, 20) * 2 - 1).requires_grad_(True)
    weights = torch.randn(4, 3, 20, 20)
    seeded = lambda x: augment(x, torch.Generator().manual_seed(3), torch.tensor(1.0), BGC)
    (gradient,) = torch.autograd.grad((seeded(images) * weights).sum(), images)
    assert gradient.abs().sum() > 0
    linear_part = seeded(images.detach()) - seeded(torch.zeros_like(images))
    # Each side sums 4,800 products, of values that went through a few roundings each.
    assert_close_to_rounding((linear_part * weights).sum(), (images.detach() * gradient).sum(), terms=2 * 4800,
                             scale=float(linear_part.norm() * weights.norm()))


def test_each_change_is_drawn_for_a_fraction_p_of_the_images_with_the_reference_s_strengths():
    n, p = 40_000, 0.3
    drawn = draw_parameters(torch.zeros(n, 3, 8, 8), torch.Generator().manual_seed(0), torch.tensor(p), BGC)
    applied = {name: (value != IDENTITY_VALUE[name]).reshape(n, -1).any(1).float().mean().item()
               for name, value in drawn.items()}
    expected = {name: p for name in drawn}
    expected["xflip"] = p / 2  # half of the chosen images are flipped back onto themselves (floor(2u) = 0)
    expected["rotate90"] = 3 * p / 4  # a quarter of them turn by 0
    expected["lumaflip"] = p / 2
    # At 8 px a shift of up to 0.125 * 8 = 1 px rounds to 0 for half the draws, in x and y alike.
    expected["xint"] = p * (1 - 0.5**2)
    # The two rotations are each drawn with 1 - sqrt(1 - p), so that either of them is p.
    expected["rotate"] = expected["rotate_after"] = 1 - math.sqrt(1 - p)
    for name, fraction in applied.items():
        assert abs(fraction - expected[name]) < 4 * math.sqrt(expected[name] * (1 - expected[name]) / n), name
    either = ((drawn["rotate"] != 0) | (drawn["rotate_after"] != 0)).float().mean().item()
    assert abs(either - p) < 4 * math.sqrt(p * (1 - p) / n)
    for name, std in (("scale", 0.2), ("aniso", 0.2), ("contrast", 0.5), ("saturation", 1.0)):
        chosen = drawn[name][drawn[name] != 1].log2()
        assert abs(chosen.std().item() - std) < 0.05 * std, name
    assert abs(drawn["brightness"][drawn["brightness"] != 0].std().item() - 0.2) < 0.01
    assert abs(drawn["xfrac"][drawn["xfrac"][:, 0] != 0].std().item() - 0.125 * 8) < 0.05


IDENTITY_VALUE = {name: torch.tensor(value) for name, value in IDENTITY.items()}


# -- the plugin in a run ----------------------------------------------------------------------


class RealLogits:
    """Records D's logits on each D step's real batch, as the reference reports ``Loss/signs/real``."""

    def __init__(self):
        self.steps: list[torch.Tensor] = []

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        self.steps.append(ctx.d_real.logits.detach().clone())
        return []


def test_p_moves_by_the_reference_s_rule_over_a_real_run(tmp_path):
    """training_loop.py: every ``ada_interval`` batches, ``adjust = np.sign(mean(signs) - ada_target)
    * (batch_size * ada_interval) / (ada_kimg * 1000)`` and ``p = max(p + adjust, 0)``, ``p`` a
    float32 buffer."""
    recorder = RealLogits()
    settings = {"p": 0.3, "target": 0.0, "interval": 2, "speed_kimg": 0.2}
    run = run_tiny(tmp_path, make_host(("recorder", recorder)), plugins={"ada": settings},
                   train={"steps": 10, "log_every": 1, "sample_every": 1000, "checkpoint_every": 1000})
    records = metric_records(run.directory)
    p, since, seen = torch.tensor(settings["p"]), [], []
    for batch_idx, logits in enumerate(recorder.steps, start=1):
        seen.append(float(p))
        assert records[batch_idx - 1]["ada/real_sign"] == logits.sign().mean().item()
        since.append(logits.sign().double().numpy())
        if batch_idx % settings["interval"] == 0:
            adjust = np.sign(np.concatenate(since).mean() - settings["target"]) * (16 * settings["interval"]) / (
                settings["speed_kimg"] * 1000)
            p, since = (p + adjust).max(torch.tensor(0.0)), []  # p.copy_(...) into the float32 buffer
    assert [record["ada/p"] for record in records] == seen
    assert torch.equal(run.plugins["ada"].p, p)
    assert len(set(seen)) >= 3 and min(seen) == 0.0  # it moved, and 0 held it


def test_a_fixed_p_never_moves_and_augments_what_d_sees(tmp_path):
    run = built_run(tmp_path, plugins={"ada": {"p": 0.5, "adjust": False}})
    assert [name for name, _ in run.transforms] == ["ada"]
    images = torch.rand(8, 1, 28, 28) * 2 - 1
    assert not torch.equal(transform(run, images), images)
    trained = run_tiny(tmp_path / "fixed", plugins={"ada": {"p": 0.5, "adjust": False, "interval": 1}})
    assert {record["ada/p"] for record in metric_records(trained.directory)} == {0.5}
    untouched = built_run(tmp_path / "default", plugins={"ada": {}})  # p starts at 0
    assert torch.equal(transform(untouched, images), images)


def test_a_run_with_ada_resumes_bit_for_bit_with_p_and_the_unspent_signs(tmp_path):
    # Interval 3: the checkpoint at step 2 holds two steps' signs, which the move at step 3 needs.
    straight, _ = assert_resumes_bitwise(tmp_path, lambda: [], plugins={"ada": {"p": 0.4, "target": 0.0,
                                                                                 "interval": 3, "speed_kimg": 0.1}})
    assert float(straight.plugins["ada"].p) != pytest.approx(0.4)
    halves = load_checkpoint(last_checkpoint(tmp_path / "halves"))
    assert halves["plugins"]["ada"]["counted"] == 16  # step 4's signs, after the move at step 3


COMBINATIONS = {
    "r1": ({"ada": {"p": 0.5}, "r1": {"every": 2}}, "loss/D/r1"),
    "lecam": ({"ada": {"p": 0.5}, "lecam": {"start": 1}}, "loss/D/lecam"),
    "infogan": ({"ada": {"p": 0.5}, "infogan": INFOGAN}, "loss/G/info/digit"),
}


@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_ada_trains_with_r1_lecam_and_infogan_and_resumes_bitwise(tmp_path, combination):
    plugins, term = COMBINATIONS[combination]
    straight, _ = assert_resumes_bitwise(tmp_path, lambda: [], plugins=plugins)
    names = {name for record in metric_records(straight.directory) for name in record}
    assert {term, "ada/p", "ada/real_sign"} <= names
    assert all(torch.isfinite(parameter).all() for parameter in straight.generator.parameters())


def check(tmp_path, **sections):
    return invoke("check", write_recipe(tmp_path / "recipe.toml", tiny_recipe(tmp_path / "runs", **sections)))


def test_check_refuses_with_one_line_what_cannot_work(tmp_path):
    assert_one_line_cli_error(check(tmp_path, plugins={"ada": {}, "diffaugment": {}}), 2,
                              "plugins.ada", "[plugins.diffaugment]")
    assert_one_line_cli_error(check(tmp_path, plugins={"ada": {}}, loss={"name": "least-squares"}), 2,
                              "plugins.ada.adjust", "least-squares")
    assert_one_line_cli_error(check(tmp_path, plugins={"ada": {"adjust": False}}), 2, "plugins.ada.p")
    assert_one_line_cli_error(check(tmp_path, plugins={"ada": {"ops": ["xflip", "zoom"]}}), 2,
                              "plugins.ada.ops[1]", "'zoom'")
    assert_one_line_cli_error(check(tmp_path, plugins={"ada": {"ops": ["xflip", "hue", "xflip"]}}), 2,
                              "plugins.ada.ops", "'xflip'")
    fixed = check(tmp_path, plugins={"ada": {"adjust": False, "p": 0.2}}, loss={"name": "least-squares"})
    assert fixed.exit_code == 0, fixed.output


class TwoChannels:
    @hookimpl
    def ganforge_register_datasets(self, register):
        register("two-channels", lambda settings: ImageData(torch.randint(0, 256, (64, 2, 28, 28), dtype=torch.uint8)))


def test_colour_changes_are_refused_on_images_that_are_neither_rgb_nor_grey(tmp_path):
    host = make_host(("two", TwoChannels()))
    with pytest.raises(RecipeError) as caught:
        built_run(tmp_path, host=host, data={"name": "two-channels"}, plugins={"ada": {}})
    assert caught.value.key == "plugins.ada.ops" and "2 channels" in str(caught.value)
    run = built_run(tmp_path, host=make_host(("two", TwoChannels())), data={"name": "two-channels"},
                    plugins={"ada": {"ops": list(GEOMETRIC), "p": 1.0}})
    images = torch.rand(4, 2, 28, 28) * 2 - 1
    assert transform(run, images).shape == images.shape
