"""InfoGAN as a plugin: codes in, a Q head on D, information terms in both objectives."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

import ganforge
from ganforge.errors import GanforgeError, RecipeError
from ganforge.launch import evaluate_run, read_recipe
from ganforge.models import frozen_batch_statistics
from ganforge.run import Run
from ganforge.training import StepContext, train_step
from ganforge_plugins.metrics.clustering import contingency, matched_accuracy, normalized_mutual_information, purity
from ganforge_plugins.augmentation.images import MOVE_DRAWS, MOVE_PRESETS, STILL, Moves, jitter, jitter_with_draws
from ganforge_plugins.infogan.extra_terms import (FAKE_MOVES_STREAM, MOVED_VIEW, disagreement, information_of_predictions,
                                                  move_error)

from .conftest import make_host, run_tiny, tiny_recipe, write_recipe
from .test_fake_views import LossContexts
from .tolerance import D28_FORWARD_TERMS, assert_close_to_rounding

CODES = [
    {"name": "digit", "dist": "categorical", "size": 4, "weight": 1.0},
    {"name": "slant", "dist": "uniform", "size": 1, "weight": 0.1},
]
INFOGAN = {"infogan": {"codes": CODES}}


def build_run(tmp_path, codes=CODES, settings=None, host=None, **sections):
    host = host or make_host()
    values = tiny_recipe(tmp_path / "runs", plugins={"infogan": {"codes": codes, **(settings or {})}}, **sections)
    recipe = read_recipe(write_recipe(tmp_path / "r.toml", values), [], host)
    return Run(recipe, host, tmp_path / "runs" / "tiny")


def test_the_table_adds_codes_a_q_head_and_information_terms(tmp_path):
    run = run_tiny(tmp_path, plugins=INFOGAN, train={"steps": 2, "log_every": 1})
    assert list(run.inputs) == ["z", "digit", "slant"] and run.input_dim == 8 + 4 + 1
    assert list(run.discriminator.heads) == ["q"]
    assert run.discriminator.heads["q"](torch.zeros(2, 1024)).shape == (2, 4 + 1)
    record = json.loads((run.directory / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("loss/D/info/digit", "loss/G/info/digit", "loss/D/info/slant", "loss/G/info/slant", "mi/digit"):
        assert key in record
    assert record["mi/digit"] == pytest.approx(torch.log(torch.tensor(4.0)).item() - record["loss/D/info/digit"], abs=1e-5)
    assert record["loss/G/total"] == pytest.approx(
        record["loss/G/adv"] + record["loss/G/info/digit"] + 0.1 * record["loss/G/info/slant"], rel=1e-5)


def test_without_the_table_the_same_recipe_is_plain_dcgan(tmp_path):
    run = run_tiny(tmp_path, train={"steps": 1})
    assert list(run.inputs) == ["z"] and len(run.discriminator.heads) == 0


def test_the_information_gradient_reaches_g_q_and_the_shared_trunk(tmp_path):
    with_info = build_run(tmp_path / "a")
    without = build_run(tmp_path / "b", codes=[{**code, "weight": 0.0} for code in CODES])
    initial_q = copy.deepcopy(with_info.discriminator.heads["q"])
    train_step(with_info)
    train_step(without)
    # Q learns only from the information term: with λ = 0 it gets zero gradient, with λ = 1 not.
    for p_with, p_without in zip(with_info.discriminator.heads["q"].parameters(),
                                 without.discriminator.heads["q"].parameters()):
        assert p_with.grad.abs().sum() > 0 and p_without.grad.abs().sum() == 0
    assert any(not torch.equal(a, b) for a, b in zip(initial_q.parameters(), with_info.discriminator.heads["q"].parameters()))
    # The shared trunk and the generator get the information gradient on top of the adversarial one.
    trunk = lambda run: torch.cat([p.grad.flatten() for p in run.discriminator.trunk.trunk.parameters()])
    generator = lambda run: torch.cat([p.grad.flatten() for p in run.generator.parameters()])
    assert not torch.allclose(trunk(with_info), trunk(without))
    assert not torch.allclose(generator(with_info), generator(without))


def test_the_categorical_term_is_cross_entropy_on_q_logits(tmp_path):
    run = build_run(tmp_path)
    plugin = run.plugins["infogan"]
    latents = run.sample_latents(16)
    q = torch.randn(16, 5)
    expected = torch.nn.functional.cross_entropy(q[:, :4], latents["digit"].argmax(1))
    params = plugin.code_params(q)
    assert torch.allclose(run.inputs["digit"].nll(latents["digit"], params["digit"]).mean(), expected)


def test_information_of_predictions_is_ln_k_for_sure_and_balanced_predictions():
    sure = torch.full((6, 3), -30.0)
    sure[torch.arange(6), torch.tensor([0, 1, 2, 0, 1, 2])] = 0.0
    assert information_of_predictions(sure.log_softmax(1)).item() == pytest.approx(math.log(3), abs=1e-6)
    # Sure but all the same category, or balanced but unsure: no information either way.
    assert information_of_predictions(torch.zeros(6, 3).log_softmax(1)).item() == pytest.approx(0, abs=1e-6)
    same = torch.full((6, 3), -30.0)
    same[:, 1] = 0.0
    assert information_of_predictions(same.log_softmax(1)).item() == pytest.approx(0, abs=1e-6)


def test_disagreement_is_cross_entropy_to_a_detached_target():
    plain = torch.randn(5, 4, requires_grad=True)
    moved = torch.randn(5, 4, requires_grad=True)
    loss = disagreement(plain.log_softmax(1), moved)
    expected = -(plain.softmax(1) * moved.log_softmax(1)).sum(1).mean()
    assert_close_to_rounding(loss, expected, terms=20)  # 5 rows of 4
    loss.backward()
    assert plain.grad is None  # the plain prediction is only the target
    assert torch.allclose(moved.grad, (moved.softmax(1) - plain.softmax(1)).detach() / 5, atol=1e-6)


ONLY_SHIFT = {"degrees": 0, "scale": 0, "shear": 0, "stretch": 0, "thickness": 0}


def test_jitter_moves_images_reproducibly_and_is_the_identity_at_zero():
    images = torch.full((3, 1, 28, 28), -1.0)
    images[:, :, 10:18, 12:16] = 1.0
    assert torch.allclose(jitter(images, torch.Generator(), STILL), images, atol=1e-5)
    moved = jitter(images, torch.Generator().manual_seed(1))
    assert torch.equal(moved, jitter(images, torch.Generator().manual_seed(1)))
    assert not torch.allclose(moved, images, atol=0.1) and moved.shape == images.shape
    assert moved.min() >= -1 - 1e-5 and moved.max() <= 1 + 1e-5  # the background stays background
    # A pure shift of 0.1 of the width moves the bar by 2.8 pixels.
    shifted = jitter(images[:1], torch.Generator().manual_seed(0), Moves(shift=0.1, **ONLY_SHIFT))
    column_mass = lambda image: (image[0, 0] + 1).sum(0)
    centre = lambda image: (column_mass(image) * torch.arange(28.0)).sum() / column_mass(image).sum()
    assert 0 < abs(centre(shifted) - centre(images[:1])) <= 2.8 + 1e-3


def test_consistency_and_real_information_train_q_on_real_images(tmp_path):
    silent = [{**code, "weight": 0.0} for code in CODES]
    on = build_run(tmp_path / "a", codes=silent, settings={"consistency_weight": 1.0, "real_info_weight": 1.0})
    off = build_run(tmp_path / "b", codes=silent)
    logs = train_step(on)
    train_step(off)
    assert {"loss/D/consistency/digit", "loss/D/real_info/digit", "real_mi/digit"} <= set(logs)
    assert "loss/G/consistency/digit" not in logs  # real images do not involve the generator
    assert logs["loss/D/real_info/digit"].item() == pytest.approx(-logs["real_mi/digit"].item())
    # With every code's λ at 0, only the real-image terms can move Q.
    q_gradient = lambda run: torch.cat([p.grad.flatten() for p in run.discriminator.heads["q"].parameters()])
    assert q_gradient(on).abs().sum() > 0 and q_gradient(off).abs().sum() == 0


def test_a_certain_flip_mirrors_every_image_and_passes_the_gradient_back_mirrored():
    images = torch.randn(4, 1, 8, 8, requires_grad=True)
    mirrored = jitter(images, torch.Generator().manual_seed(0), dataclasses.replace(STILL, flip=1.0))
    assert torch.allclose(mirrored, images.flip(3), atol=1e-5)
    upstream = torch.randn(4, 1, 8, 8)
    (mirrored * upstream).sum().backward()
    assert torch.allclose(images.grad, upstream.flip(3), atol=1e-5)


def test_a_half_chance_flip_mirrors_some_images_reproducibly():
    images = torch.randn(64, 1, 8, 8)
    moves = dataclasses.replace(STILL, flip=0.5)
    moved = jitter(images, torch.Generator().manual_seed(3), moves)
    assert torch.equal(moved, jitter(images, torch.Generator().manual_seed(3), moves))
    flipped = torch.tensor([torch.allclose(m, i.flip(2), atol=1e-5) for m, i in zip(moved, images)])
    kept = torch.tensor([torch.allclose(m, i, atol=1e-5) for m, i in zip(moved, images)])
    assert torch.all(flipped ^ kept) and 16 <= flipped.sum() <= 48


def garment(n):
    """n copies of a grey garment (lightness 0.5 above black) with a one-pixel stripe print."""
    images = torch.full((n, 1, 28, 28), -1.0)
    images[:, :, 6:22, 8:20] = 0.0
    images[:, :, 6:22:2, 8:20] = 0.4
    return images


def test_a_brightness_move_scales_the_lightness_and_keeps_the_background_black():
    images = garment(32).requires_grad_()
    moves = dataclasses.replace(STILL, brightness=0.75)
    moved, draws = jitter_with_draws(images, torch.Generator().manual_seed(2), moves)
    lightness = draws[:, MOVE_DRAWS.index("brightness")]
    assert lightness.abs().max() <= 1 and (lightness > 0.5).any() and (lightness < -0.5).any()
    factor = 1.75 ** lightness
    assert torch.all(moved[:, :, 0, 0] == -1)  # the background
    inside = (moved[:, 0, 7, 10] + 1) / (images[:, 0, 7, 10] + 1)  # the plain cloth, never clamped
    assert torch.allclose(inside, factor, atol=1e-4)
    bright = lightness > 0.7  # 1.4 times 1.75 ** 0.7 is past white
    assert bright.any() and torch.all(moved[bright, 0, 6, 10] == 1)  # the print, clamped at white
    moved.sum().backward()  # the gradient is the factor, and nothing where the lightness was clamped
    assert torch.allclose(images.grad[:, 0, 7, 10], factor, atol=1e-4)
    assert torch.all(images.grad[bright, 0, 6, 10] == 0)


def test_a_blur_move_smooths_or_sharpens_a_print_by_its_draw():
    images = garment(32)
    moved, draws = jitter_with_draws(images, torch.Generator().manual_seed(3), dataclasses.replace(STILL, blur=1.0))
    blur = draws[:, MOVE_DRAWS.index("blur")]
    stripes = lambda batch: (batch[:, 0, 7:20, 9:19].diff(dim=1)).abs().mean((1, 2))  # inside, away from the edge
    change = stripes(moved) - stripes(images)
    assert torch.equal(torch.sign(change[blur.abs() > 0.05]), -torch.sign(blur[blur.abs() > 0.05]))
    assert moved.min() >= -1 and moved.max() <= 1
    # A 3x3 box blur at a draw of 1: each stripe row of 0.4 between rows of 0 becomes 0.4 / 3.
    full = jitter(images[:1], torch.Generator(), dataclasses.replace(STILL, blur=1.0))
    rng = torch.Generator()
    full_draw = torch.rand(1, 7, generator=rng), torch.rand(1, generator=rng) * 2 - 1
    expected = 0.4 / 3 * full_draw[1].item() + 0.4 * (1 - full_draw[1].item())
    assert full[0, 0, 10, 12].item() == pytest.approx(expected, abs=1e-5)


def test_brightness_and_blur_draw_after_the_other_moves_so_other_sets_keep_their_stream():
    images = garment(6)
    before = jitter_with_draws(images, torch.Generator().manual_seed(7), dataclasses.replace(MOVE_PRESETS["clothing"], brightness=0.0, blur=0.0))
    after = jitter_with_draws(images, torch.Generator().manual_seed(7), MOVE_PRESETS["clothing"])
    unchanged = [i for i, name in enumerate(MOVE_DRAWS) if name not in ("brightness", "blur")]
    assert torch.equal(before[1][:, unchanged], after[1][:, unchanged])
    assert torch.all(before[1][:, -2:] == 0) and torch.all(after[1][:, -2:] != 0)


def test_a_code_tied_to_brightness_trains_only_its_own_output(tmp_path):
    silent = [{**code, "weight": 0.0} for code in CODES]
    run = build_run(tmp_path, codes=silent, settings={"moves": "clothing", "code_moves": {"slant": "brightness"}})
    logs = train_step(run)
    assert 0 < logs["loss/D/code_move/slant"].item() < 10
    rows = run.discriminator.heads["q"].net[3].weight.grad.abs().sum(1)
    assert rows[4] > 0 and torch.all(rows[:4] == 0) and torch.all(rows[5:] == 0)


def test_the_handwriting_preset_is_the_default_and_draws_as_before():
    # Sets of moves without a mirror draw 7 numbers per image, as before the flip existed, so a
    # recipe's runs and checkpoints are unchanged.
    assert MOVE_PRESETS["handwriting"] == Moves()
    images = torch.rand(5, 1, 28, 28) * 2 - 1
    rng = torch.Generator().manual_seed(4)
    jitter(images, rng)
    after = torch.Generator().manual_seed(4)
    torch.rand(5, 7, generator=after)
    assert torch.equal(rng.get_state(), after.get_state())


@pytest.mark.parametrize(("settings", "expected"), [
    ({"moves": "clothing"}, MOVE_PRESETS["clothing"]),
    ({"move_values": {"shear": 0.8}}, Moves(shear=0.8)),  # on top of the default, handwriting
    ({"moves": "none", "move_values": {"shift": 0.05, "flip": 0.5}}, dataclasses.replace(STILL, shift=0.05, flip=0.5)),
])
def test_moves_are_a_preset_with_explicit_values_in_place_of_its_own(tmp_path, settings, expected):
    run = build_run(tmp_path, settings={**settings, "consistency_weight": 1.0})
    assert run.plugins["infogan"].extra_terms.moves == expected


@pytest.mark.parametrize(("settings", "message"), [
    ({"moves": "digits"}, "plugins.infogan.moves: unknown preset 'digits'; the presets are 'handwriting', 'clothing'"),
    ({"move_values": {"shaer": 0.2}}, "plugins.infogan.move_values.shaer: unknown move; the moves are shift, degrees"),
    ({"move_values": {"flip": 2}}, "plugins.infogan.move_values.flip: must be a number from 0 to 1, got 2"),
    ({"move_values": {"degrees": -5}}, "plugins.infogan.move_values.degrees: must be a number from 0 to 180, got -5"),
    ({"move_values": {"shift": "far"}}, "plugins.infogan.move_values.shift: must be a number from 0 to 0.5, got 'far'"),
    ({"moves": 3}, "plugins.infogan.moves: must be a string, got 3"),
])
def test_bad_moves_are_recipe_errors_naming_the_key(tmp_path, settings, message):
    with pytest.raises(RecipeError, match=message):
        build_run(tmp_path, settings=settings)


def test_sprite_moves_train_q_through_the_consistency_term(tmp_path):
    silent = [{**code, "weight": 0.0} for code in CODES]
    run = build_run(tmp_path, codes=silent, settings={"consistency_weight": 1.0, "moves": "sprites"})
    logs = train_step(run)
    assert logs["loss/D/consistency/digit"].item() > 0
    gradient = torch.cat([p.grad.flatten() for p in run.discriminator.heads["q"].parameters()])
    assert gradient.abs().sum() > 0


def test_the_draws_say_which_way_each_image_moved_even_when_mirrored():
    # A vertical bar: a positive shear leans its top to the right, a positive shift_x moves it
    # right, whether or not the image was then mirrored.
    images = torch.full((32, 1, 28, 28), -1.0)
    images[:, :, 6:22, 13:15] = 1.0
    moves = dataclasses.replace(STILL, shear=0.5, shift=0.1, flip=0.5)
    moved, draws = jitter_with_draws(images, torch.Generator().manual_seed(5), moves)
    assert torch.equal(moved, jitter(images, torch.Generator().manual_seed(5), moves))
    assert draws.shape == (32, len(MOVE_DRAWS)) and draws.abs().max() <= 1
    ink = moved[:, 0] + 1
    centre = lambda rows: (rows * torch.arange(28.0)).sum(-1) / rows.sum(-1)
    lean = centre(ink[:, 8]) - centre(ink[:, 19])
    column_mass = ink.sum(1)
    shift = (column_mass * torch.arange(28.0)).sum(-1) / column_mass.sum(-1) - 13.5
    big = draws[:, 2].abs() > 0.2  # a slight lean is lost in a pixel's rounding
    assert torch.equal(torch.sign(lean[big]), torch.sign(draws[big, 2]))
    strong = draws[:, 4].abs() > 0.2
    assert torch.equal(torch.sign(shift[strong]), torch.sign(draws[strong, 4]))
    rng = torch.Generator().manual_seed(5)
    torch.rand(32, 7, generator=rng)  # the moves, then the mirror's draw
    mirrored = torch.rand(32, generator=rng) < 0.5
    assert (big & mirrored).any() and (big & ~mirrored).any()  # mirrored and plain images were both checked


def test_move_error_wants_the_code_to_move_by_the_draw_and_leaves_the_plain_prediction_alone():
    plain = torch.tensor([[0.2], [-0.5]], requires_grad=True)
    moved = torch.tensor([[0.7], [-0.5]], requires_grad=True)
    draw = torch.tensor([[0.5], [0.4]])
    error = move_error(plain, moved, draw)
    assert error.item() == pytest.approx((0.0 ** 2 + 0.4 ** 2) / 2)
    error.backward()
    assert plain.grad is None or torch.count_nonzero(plain.grad) == 0
    assert torch.allclose(moved.grad, torch.tensor([[0.0], [-0.4]]))  # d/d moved of the mean of (moved - plain - draw)²


def test_code_moves_train_q_on_real_images_without_consistency(tmp_path):
    silent = [{**code, "weight": 0.0} for code in CODES]
    contexts = LossContexts()
    run = build_run(tmp_path, codes=silent, settings={"code_moves": {"slant": "shear"}},
                    host=make_host(("contexts", contexts)))
    logs = train_step(run)
    assert "loss/D/code_move/slant" in logs and "loss/G/code_move/slant" not in logs
    assert "loss/D/consistency/digit" not in logs
    assert 0 < logs["loss/D/code_move/slant"].item() < 10
    # The draws behind the moved batch reach the terms on the step's context, and only the D phase's.
    assert contexts.seen["D"].view_info[MOVED_VIEW].shape == (run.recipe.train.batch_size, len(MOVE_DRAWS))
    assert contexts.seen["G"].view_info == {}
    # With every code's λ at 0, only the code-move term reaches Q, and only through the slant output.
    head = run.discriminator.heads["q"].net
    assert head[0].weight.grad.abs().sum() > 0
    rows = head[3].weight.grad.abs().sum(1)
    assert rows[4] > 0 and torch.all(rows[:4] == 0)  # the digit's 4 logits, then slant


def moved_real_batch(plugin):
    """A random real batch, its moved copy and the draws that moved it."""
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    moved, draws = jitter_with_draws(real, torch.Generator().manual_seed(0), plugin.extra_terms.moves)
    return real, moved, draws


def moved_batch_context(run, real, moved, draws):
    """What the code-move term reads from a D-phase step: D's passes on the real and moved batches,
    and the draws that came with the moved view."""
    return SimpleNamespace(run=run, step=1, d_real=run.discriminator(real), views={MOVED_VIEW: run.discriminator(moved)},
                           view_info={MOVED_VIEW: draws})


def test_the_code_move_term_trains_q_alone_and_leaves_its_batch_statistics(tmp_path):
    # Trained through D's trunk, the term taught the trunk to read slant and split digit classes
    # (docs/results.md): its gradient must stop at Q.
    run = build_run(tmp_path, settings={"code_moves": {"slant": "shear"}})
    plugin, discriminator = run.plugins["infogan"], run.discriminator
    real, moved, draws = moved_real_batch(plugin)
    ctx = moved_batch_context(run, real, moved, draws)
    running_mean = discriminator.heads["q"].net[1].running_mean.clone()
    [term] = plugin.extra_terms.code_move_terms(ctx)
    assert term.name == "code_move/slant" and term.weight == pytest.approx(0.3)  # the default weight
    assert torch.equal(discriminator.heads["q"].net[1].running_mean, running_mean)
    discriminator.zero_grad(set_to_none=True)
    term.value.backward()
    assert all(p.grad is None for p in discriminator.trunk.parameters())
    assert discriminator.heads["q"].net[0].weight.grad.abs().sum() > 0


def test_code_move_trunk_sends_the_term_on_into_d_s_trunk(tmp_path):
    run = build_run(tmp_path, settings={"code_moves": {"slant": "shear"}, "code_move_trunk": True})
    plugin, discriminator = run.plugins["infogan"], run.discriminator
    real, moved, draws = moved_real_batch(plugin)
    ctx = moved_batch_context(run, real, moved, draws)
    [term] = plugin.extra_terms.code_move_terms(ctx)
    discriminator.zero_grad(set_to_none=True)
    term.value.backward()
    trunk_grads = [p.grad for p in discriminator.trunk.trunk.parameters()]  # the shared layers
    assert all(g is not None for g in trunk_grads) and sum(g.abs().sum() for g in trunk_grads) > 0
    assert discriminator.heads["q"].net[0].weight.grad.abs().sum() > 0
    # Only through the moved images: the plain reading stays a target without gradient.
    real.requires_grad_(True)
    moved.requires_grad_(True)
    ctx = moved_batch_context(run, real, moved, draws)
    [term] = plugin.extra_terms.code_move_terms(ctx)
    term.value.backward()
    assert real.grad is None and moved.grad.abs().sum() > 0


def test_q_split_gives_each_kind_of_code_its_own_layer_in_the_recipe_s_column_order(tmp_path):
    codes = [CODES[1], CODES[0], {"name": "width", "dist": "uniform", "size": 1, "weight": 0.1}]
    run = build_run(tmp_path, codes=codes, settings={"q_split": True})
    head = run.discriminator.heads["q"].eval()
    features = torch.randn(8, head.categorical.net[0].in_features)
    columns, categorical, continuous = head(features), head.categorical(features), head.continuous(features)
    assert categorical.shape == (8, 4) and continuous.shape == (8, 2)
    assert torch.equal(columns, torch.cat([continuous[:, :1], categorical, continuous[:, 1:]], dim=1))
    assert set(run.plugins["infogan"].code_params(columns)) == {"slant", "digit", "width"}


def test_with_q_split_the_code_move_term_leaves_the_categories_layer_alone(tmp_path):
    # The point of the split: tying a continuous code to a move must not reshape what the
    # categories are read from, and the categories' consistency must not reshape the codes'.
    run = build_run(tmp_path, settings={"q_split": True, "code_moves": {"slant": "shear"}, "consistency_weight": 1.0})
    plugin, discriminator = run.plugins["infogan"], run.discriminator
    head = discriminator.heads["q"]
    real, moved, draws = moved_real_batch(plugin)
    [move_term] = plugin.extra_terms.code_move_terms(moved_batch_context(run, real, moved, draws))
    discriminator.zero_grad(set_to_none=True)
    move_term.value.backward()
    assert all(p.grad is None for p in discriminator.trunk.parameters())
    assert all(p.grad is None or not p.grad.any() for p in head.categorical.parameters())
    assert head.continuous.net[0].weight.grad.abs().sum() > 0
    [consistency] = plugin.extra_terms.real_terms(moved_batch_context(run, real, moved, draws))
    discriminator.zero_grad(set_to_none=True)
    consistency.value.backward()
    assert all(p.grad is None or not p.grad.any() for p in head.continuous.parameters())
    assert head.categorical.net[0].weight.grad.abs().sum() > 0
    assert discriminator.trunk.trunk[0].weight.grad.abs().sum() > 0


def test_q_split_needs_codes_of_both_kinds(tmp_path):
    with pytest.raises(RecipeError, match="plugins.infogan.q_split: splits Q between the categorical codes and the"
                                          " others, but the codes are all of one kind"):
        build_run(tmp_path, codes=CODES[1:], settings={"q_split": True})


def test_code_move_after_trains_exactly_as_untied_until_then(tmp_path):
    # The categories form in the first steps; a delayed tie must leave those steps as they were.
    def records(name, settings):
        plugins = {"infogan": {"codes": CODES, "traverse_every_sample": False, **settings}}
        run = run_tiny(tmp_path / name, plugins=plugins, train={"steps": 4, "log_every": 1})
        return [json.loads(line) for line in (run.directory / "metrics.jsonl").read_text().splitlines()]
    untied = records("untied", {"consistency_weight": 1.0})
    delayed = records("delayed", {"consistency_weight": 1.0, "code_moves": {"slant": "shear"}, "code_move_after": 2})
    losses = lambda record: {key: value for key, value in record.items() if key.startswith("loss/")}
    assert [losses(r) for r in delayed[:2]] == [losses(r) for r in untied[:2]]
    assert "loss/D/code_move/slant" in delayed[2] and "loss/D/code_move/slant" not in untied[2]
    # Step 3's update had the term, so step 4 starts from other weights.
    assert losses(delayed[3])["loss/D/info/slant"] != losses(untied[3])["loss/D/info/slant"]


def test_code_move_weight_zero_turns_the_term_off(tmp_path):
    run = build_run(tmp_path, settings={"code_moves": {"slant": "shear"}, "code_move_weight": 0.0})
    assert not any(key.startswith("loss/D/code_move") for key in train_step(run))


@pytest.mark.parametrize(("settings", "message"), [
    ({"code_moves": {"tilt": "shear"}}, "plugins.infogan.code_moves.tilt: no code of that name; the codes are digit, slant"),
    ({"code_moves": {"slant": "shaer"}}, "plugins.infogan.code_moves.slant: must name a move .degrees, scale, shear"),
    ({"code_moves": {"slant": 3}}, "plugins.infogan.code_moves.slant: must name a move .* got 3"),
    ({"code_moves": {"slant": "shear"}, "moves": "clothing"},
     "plugins.infogan.code_moves.slant: the set of moves never makes a shear move; give it a range with move_values.shear"),
    ({"code_moves": {"slant": "shift_x"}, "moves": "none"}, "never makes a shift_x move; .* move_values.shift$"),
    ({"code_moves": {"slant": "brightness"}}, "never makes a brightness move; .* move_values.brightness$"),
    ({"code_moves": {"digit": "shear"}}, "plugins.infogan.code_moves.digit: code 'digit' has 4 columns"),
    ({"code_move_weight": -1.0}, "plugins.infogan.code_move_weight: must be a number >= 0"),
    ({"code_move_after": -5}, "plugins.infogan.code_move_after: must be a number of steps >= 0"),
])
def test_bad_code_moves_are_recipe_errors_naming_the_key(tmp_path, settings, message):
    with pytest.raises(RecipeError, match=message):
        build_run(tmp_path, settings=settings)


def test_a_code_without_a_gaussian_mean_cannot_follow_a_move(tmp_path):
    codes = [*CODES, {"name": "on", "dist": "bernoulli", "size": 1, "weight": 0.1}]
    with pytest.raises(RecipeError, match="plugins.infogan.code_moves.on: Bernoulli.* has no Gaussian mean"):
        build_run(tmp_path, codes=codes, settings={"code_moves": {"on": "shear"}})


def generator_phase(run, fake):
    """A G-phase context on ``fake`` (attached) and fresh codes, as a step hands it to the G terms."""
    latents = run.sample_latents(fake.shape[0])
    return StepContext("G", 1, run, fake.detach(), {}, latents, fake, None)


def test_the_moved_fake_term_is_the_category_s_cross_entropy_on_moved_fakes(tmp_path):
    run = build_run(tmp_path, settings={"moved_fake_weight": 2.0, "moves": "clothing"})
    plugin, discriminator = run.plugins["infogan"], run.discriminator
    fake = (torch.rand(8, 1, 28, 28) * 2 - 1).requires_grad_(True)
    ctx = generator_phase(run, fake)
    draws = torch.Generator().set_state(run.rng(FAKE_MOVES_STREAM).get_state())
    running_mean = discriminator.heads["q"].net[1].running_mean.clone()
    [term] = plugin.extra_terms.moved_fake_terms(ctx)
    assert term.name == "moved_info/digit" and term.weight == 2.0  # the categorical code only
    assert torch.equal(discriminator.heads["q"].net[1].running_mean, running_mean)  # batch statistics left alone
    moved = jitter_with_draws(fake.detach(), draws, MOVE_PRESETS["clothing"])[0]
    with torch.no_grad(), frozen_batch_statistics(discriminator):
        logits = discriminator(moved).heads["q"][:, :4]
    expected = torch.nn.functional.cross_entropy(logits, ctx.latents["digit"].argmax(1))
    assert_close_to_rounding(term.value, expected, terms=D28_FORWARD_TERMS)
    # The gradient goes back through the move into the fakes, and so into G in the G phase.
    term.value.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_without_moves_the_moved_fake_term_is_the_information_term_again(tmp_path):
    run = build_run(tmp_path, settings={"moved_fake_weight": 1.0, "moves": "none"})
    plugin = run.plugins["infogan"]
    fake = torch.rand(8, 1, 28, 28) * 2 - 1
    ctx = generator_phase(run, fake)
    ctx.d_fake = ctx.discriminate(fake, ctx.latents)
    [moved] = plugin.extra_terms.moved_fake_terms(ctx)
    plain = {term.name: term for term in plugin.information_terms(ctx)}["info/digit"]
    assert_close_to_rounding(moved.value, plain.value, terms=D28_FORWARD_TERMS)


def test_the_moved_fake_term_trains_q_in_the_d_phase_and_g_in_the_g_phase(tmp_path):
    silent = [{**code, "weight": 0.0} for code in CODES]
    on = build_run(tmp_path / "a", codes=silent, settings={"moved_fake_weight": 1.0, "moves": "clothing"})
    off = build_run(tmp_path / "b", codes=silent, settings={"moves": "clothing"})
    generator_before = copy.deepcopy(on.generator.state_dict())
    logs = train_step(on)
    train_step(off)
    assert {"loss/D/moved_info/digit", "loss/G/moved_info/digit"} <= set(logs)
    assert "loss/D/moved_info/slant" not in logs  # continuous codes have their move terms
    # With every code's λ at 0, only the moved-fake term can move Q.
    q_gradient = lambda run: torch.cat([p.grad.flatten() for p in run.discriminator.heads["q"].parameters()])
    assert q_gradient(on).abs().sum() > 0 and q_gradient(off).abs().sum() == 0
    generator = lambda run: torch.cat([p.grad.flatten() for p in run.generator.parameters()])
    assert not torch.allclose(generator(on), generator(off))
    assert any(not torch.equal(value, on.generator.state_dict()[key]) for key, value in generator_before.items())


@pytest.mark.parametrize("key", ["consistency_weight", "real_info_weight", "moved_fake_weight"])
def test_negative_real_image_weights_are_recipe_errors(tmp_path, key):
    with pytest.raises(RecipeError, match=f"plugins.infogan.{key}: must be a number >= 0"):
        build_run(tmp_path, settings={key: -1.0})


@pytest.mark.parametrize(("code", "message"), [
    ({"name": "digit", "dist": "categorcal", "size": 10}, "codes[0].dist: unknown distribution 'categorcal'; did you mean 'categorical'?"),
    ({"name": "digit", "size": 10}, "codes[0]: lacks dist"),
    ({"name": "digit", "dist": "categorical", "size": 0}, "codes[0].size: must be an integer from 1 to 4096, got 0"),
    ({"name": "z", "dist": "uniform"}, "codes[0].name: must be a word"),
    ({"name": "digit", "dist": "categorical", "weight": -1}, "codes[0].weight: must be a number >= 0"),
])
def test_bad_codes_are_recipe_errors_naming_the_code(tmp_path, code, message):
    with pytest.raises(RecipeError) as caught:
        build_run(tmp_path, codes=[code])
    assert f"plugins.infogan.{message}" in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "r.toml"))


def test_no_codes_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match="plugins.infogan.codes: needs at least one code"):
        build_run(tmp_path, codes=[])


def test_traversal_grids_are_written_for_every_code(tmp_path):
    run = run_tiny(tmp_path, plugins=INFOGAN, train={"steps": 2, "sample_every": 2})
    samples = run.directory / "samples"
    digit = Image.open(samples / "traverse_digit_0000002.png")
    slant = Image.open(samples / "traverse_slant_0000002.png")
    assert digit.size == (4 * 30 + 2, 10 * 30 + 2)  # every category across, 10 rows of noise
    assert slant.size == (10 * 30 + 2, 10 * 30 + 2)  # 10 values from -2 to 2 across


def test_load_generator_samples_with_fixed_codes(tmp_path):
    run = run_tiny(tmp_path, plugins=INFOGAN, train={"steps": 1})
    generator = ganforge.load_generator(run.directory / "checkpoints" / "last.pt")
    assert {name: (info.kind, info.size) for name, info in generator.codes.items()} == {
        "digit": ("categorical", 4), "slant": ("continuous", 1)}
    images = generator.sample(6, fixed={"digit": 3, "slant": 0.5}, seed=0)
    assert images.shape == (6, 1, 28, 28) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    assert torch.equal(images, generator.sample(6, fixed={"digit": 3, "slant": 0.5}, seed=0))
    assert not torch.equal(images, generator.sample(6, fixed={"digit": 1, "slant": 0.5}, seed=0))
    with pytest.raises(GanforgeError, match="unknown code 'digt'; did you mean 'digit'?"):
        generator.sample(1, fixed={"digt": 3})
    with pytest.raises(GanforgeError, match="code 'digit'"):
        generator.sample(1, fixed={"digit": 7})


def test_eval_reports_matched_accuracy_and_nmi_per_categorical_code(tmp_path):
    run = run_tiny(tmp_path, plugins=INFOGAN, train={"steps": 2})
    results, evaluated, _ = evaluate_run(run.directory, host=make_host(), metrics=["categorical-clustering"])
    assert set(results) == {"digit/accuracy", "digit/nmi", "digit/purity"}
    assert 0.25 <= results["digit/accuracy"] <= 1  # 4 categories against 4 shapes: at least chance
    assert 0 <= results["digit/nmi"] <= 1
    assert evaluated.step == 2


def test_matching_accuracy_is_one_for_a_relabelled_perfect_clustering():
    labels = torch.arange(10).repeat(30)
    predicted = (labels * 7 + 3) % 10  # a permutation of the labels
    table = contingency(predicted, labels, 10, 10)
    assert matched_accuracy(table) == 1.0 and purity(table) == 1.0
    assert normalized_mutual_information(table) == pytest.approx(1.0)


def test_matching_is_one_to_one_where_purity_is_many_to_one():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 0, 1, 1, 1, 1])  # categories 0 and 1; category 1 holds labels 1 and 2
    table = contingency(predicted, labels, 3, 3)
    assert matched_accuracy(table) == pytest.approx(4 / 6)
    assert purity(table) == pytest.approx(4 / 6)
    merged = contingency(torch.zeros(6, dtype=torch.long), labels, 3, 3)
    assert matched_accuracy(merged) == pytest.approx(2 / 6)
    assert normalized_mutual_information(merged) == 0.0


def test_nmi_matches_the_definition_on_a_small_table():
    # Two categories, two labels, counts [[2, 1], [0, 1]] over 4 samples.
    table = torch.tensor([[2, 1], [0, 1]])
    p = table.double() / 4
    pr, pl = p.sum(1), p.sum(0)
    mi = sum(p[i, j] * torch.log(p[i, j] / (pr[i] * pl[j])) for i in range(2) for j in range(2) if p[i, j] > 0)
    h = lambda q: -(q * q.log()).sum()
    assert normalized_mutual_information(table) == pytest.approx(float(mi / ((h(pr) + h(pl)) / 2)))
