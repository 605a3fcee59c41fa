"""InfoGAN-CR's contrastive regulariser (plugins/infogan/contrastive.py) against its reference,
github.com/fjxmlzn/InfoGAN-CR (``InfoGAN-CR_dSprites/gan``: ``network.py`` CrDiscriminator,
``op.py`` conv2d and linear, ``latent.py`` sample_cr, ``infogan_cr.py`` the losses and the switch):
the network's layers, the pairs, where each term's gradient goes, and exact resume."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ganforge.errors import RecipeError
from ganforge.training import discriminator_objective, generator_objective, train_step
from ganforge_plugins.infogan.contrastive import NETWORK, PairNetwork, pair_latents

from .test_variant_hooks import assert_resumes_bitwise, built_run
from .tolerance import G28_GRADIENT_TERMS, assert_close_to_rounding

CODES = {"codes": [{"name": "shape", "dist": "categorical", "size": 3, "weight": 1.0},
                   {"name": "x", "dist": "uniform", "size": 1, "weight": 0.1},
                   {"name": "y", "dist": "uniform", "size": 1, "weight": 0.1}],
         "traverse_every_sample": False}


def cr_run(tmp_path, **settings):
    return built_run(tmp_path, plugins={"infogan": CODES, "infogan-cr": settings})


def conv_outputs(network: PairNetwork, images: torch.Tensor) -> list[tuple[int, ...]]:
    shapes = []
    for layer in network.convs:
        images = layer(images)
        if isinstance(layer, nn.Conv2d):
            shapes.append(tuple(images.shape[1:]))
    return shapes


def test_the_pair_network_has_the_reference_layers():
    # CrDiscriminator on dSprites (64 x 64 x 1, five codes): conv 4x4/2 of 32, 32, 64, 64 with
    # SAME padding (op.py: 'SAME'), so 32, 16, 8, 4 pixels; linear 128; linear 5; a bias on each.
    network = PairNetwork((1, 64, 64), 5)
    assert conv_outputs(network, torch.zeros(1, 2, 64, 64)) == [(32, 32, 32), (32, 16, 16), (64, 8, 8), (64, 4, 4)]
    weights = (4 * 4 * 2 * 32 + 32) + (4 * 4 * 32 * 32 + 32) + (4 * 4 * 32 * 64 + 64) + (4 * 4 * 64 * 64 + 64)
    weights += (4 * 4 * 64 * 128 + 128) + (128 * 5 + 5)
    assert sum(p.numel() for p in network.parameters()) == weights == 247_749
    # Every layer with a weight is spectrally normalised (sn_op on all six in network.py).
    assert sum(1 for m in network.modules() if hasattr(m, "parametrizations")) == 6
    # SAME at odd sizes pads the extra pixel after: 28 -> 14 -> 7 -> 4 -> 2, as TensorFlow gives.
    small = PairNetwork((1, 28, 28), 3)
    assert conv_outputs(small, torch.zeros(1, 2, 28, 28))[-2:] == [(64, 4, 4), (64, 2, 2)]
    assert small.convs[6].padding == (1, 2, 1, 2)
    # Weights N(0, 0.02^2) (the convolutions' truncated at two deviations), biases 0.
    conv = network.convs[1].parametrizations.weight.original
    assert conv.abs().max() <= 0.04 and 0.015 < conv.std() < 0.025
    assert all(float(m.bias.detach().abs().max()) == 0 for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_a_pair_shares_its_noise_and_one_code_and_draws_the_others_afresh(tmp_path):
    run = cr_run(tmp_path)
    first, second, shared = pair_latents(run, ["shape", "x", "y"], 512, torch.Generator().manual_seed(0))
    assert torch.equal(first["z"], second["z"])
    for index, name in enumerate(["shape", "x", "y"]):
        rows = shared == index
        assert torch.equal(first[name][rows], second[name][rows])
        if name != "shape":  # a continuous code drawn twice never repeats its value
            assert not (first[name][~rows] == second[name][~rows]).any()
    # Each code is the shared one for about a third of the pairs.
    assert all(120 < int((shared == index).sum()) < 220 for index in range(3))
    # Categories drawn afresh match by chance only: about a third of the time.
    different = shared != 0
    same_category = (first["shape"][different].argmax(1) == second["shape"][different].argmax(1)).float().mean()
    assert 0.2 < float(same_category) < 0.47


def test_the_term_is_off_until_start_and_the_network_untrained_until_then(tmp_path):
    run = cr_run(tmp_path, start=1)
    network = run.discriminator.networks[NETWORK]
    before = copy.deepcopy(network.state_dict())
    logs = train_step(run)
    run.step += 1
    assert not any("contrastive" in name for name in logs)
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())
    logs = train_step(run)
    assert {"loss/D/contrastive", "loss/G/contrastive", "contrastive/accuracy"} <= set(logs)
    assert not torch.equal(before["head.0.parametrizations.weight.original"],
                           network.state_dict()["head.0.parametrizations.weight.original"])
    # Its own learning rate: a group of D's optimizer holds exactly its parameters.
    run = cr_run(tmp_path / "rate", lr=2e-3)
    ids = {id(p) for p in run.discriminator.networks[NETWORK].parameters()}
    (group,) = [g for g in run.optimizer_d.param_groups if {id(p) for p in g["params"]} & ids]
    assert {id(p) for p in group["params"]} == ids and group["lr"] == 2e-3


def gradients(loss: torch.Tensor, module: nn.Module) -> list[torch.Tensor]:
    parameters = [p for p in module.parameters() if p.requires_grad]
    return [g if g is not None else torch.zeros_like(p)
            for g, p in zip(torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True), parameters)]


def test_d_phase_trains_only_the_network_and_g_phase_adds_weight_times_its_cross_entropy(tmp_path):
    run = cr_run(tmp_path, weight=3.0)
    plugin = run.plugins["infogan-cr"]
    real, labels, _ = run.batcher.next()
    latents = run.sample_latents(len(real))
    ctx, fake, d_total = discriminator_objective(run, real, labels, latents, keep_graph=True)
    # The D term: cross-entropy of H on detached pairs. It reaches H, and nothing of D or G.
    state = run.rng("infogan-cr").get_state()
    logits, shared = plugin.pair_logits(ctx, with_graph=False)
    term = F.cross_entropy(logits, shared)
    for network in (run.discriminator.trunk, run.discriminator.heads["q"], run.generator):
        assert all(float(g.abs().sum()) == 0 for g in gradients(term, network))
    assert sum(float(g.abs().sum()) for g in gradients(term, run.discriminator.networks[NETWORK])) > 0

    # The G term: with the same draws, G's objective gains weight x the cross-entropy, gradient and all.
    run.rng("infogan-cr").set_state(state)
    with_term = generator_objective(run, ctx, fake, {})
    run.rng("infogan-cr").set_state(state)
    plugin.weight = 0.0
    without = generator_objective(run, ctx, fake, {})
    run.rng("infogan-cr").set_state(state)
    attached, shared_again = plugin.pair_logits(ctx, with_graph=True)
    assert torch.equal(shared_again, shared)
    cross_entropy = F.cross_entropy(attached, shared)
    # G's objective sums float32 terms of size about 1, each rounded once more in the sum.
    assert_close_to_rounding(with_term - without, 3.0 * cross_entropy.detach(), terms=8,
                             scale=float(with_term.detach().abs() + without.detach().abs()))
    joint, alone, term_only = (gradients(loss, run.generator) for loss in (with_term, without, cross_entropy))
    # Two gradients that hold the same float32 contributions, grouped differently: the rounding
    # of G's backward pass through D and H (G28_GRADIENT_TERMS bounds both), at the size of the
    # gradients that were subtracted, judged over all of G's parameters together (a bias that
    # batch norm follows has a gradient of 0 in exact arithmetic: rounding only).
    assert_close_to_rounding([j - a for j, a in zip(joint, alone)], [3.0 * t for t in term_only],
                             terms=G28_GRADIENT_TERMS, scale=[*joint, *alone])
    assert sum(float(g.abs().sum()) for g in gradients(cross_entropy, run.generator)) > 0


def test_infogan_cr_resumes_bit_for_bit_across_its_switch(tmp_path):
    assert_resumes_bitwise(tmp_path, lambda: [], plugins={"infogan": CODES, "infogan-cr": {"start": 3}})


def test_infogan_cr_needs_infogan_and_two_codes(tmp_path):
    with pytest.raises(RecipeError, match="infogan"):
        built_run(tmp_path / "alone", plugins={"infogan-cr": {}})
    one = {**CODES, "codes": CODES["codes"][:1]}
    with pytest.raises(RecipeError, match="two codes or more"):
        built_run(tmp_path / "one", plugins={"infogan": one, "infogan-cr": {}})
