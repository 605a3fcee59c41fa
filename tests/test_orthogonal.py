"""BigGAN's orthogonal regularisation: the term and its gradient against the reference's formula,
the weights it leaves out, and its share of a real generator step."""

from __future__ import annotations

import itertools

import torch

from ganforge.testing import build_run
from ganforge.training import train_step
from ganforge_plugins.models.biggan import build_biggan
from ganforge_plugins.objectives.orthogonal import off_diagonal_penalty, regularised_weights

from .test_biggan import small
from .tolerance import assert_close_to_rounding


def reference_gradient(param: torch.Tensor, strength: float) -> torch.Tensor:
    """What ajbrock/BigGAN-PyTorch at 9845943 (utils.py, ``ortho``) adds to ``param.grad``."""
    w = param.view(param.shape[0], -1)
    grad = 2 * torch.mm(torch.mm(w, w.t()) * (1.0 - torch.eye(w.shape[0])), w)
    return strength * grad.view(param.shape)


def pairwise_penalty(param: torch.Tensor) -> torch.Tensor:
    """Brock et al. 2019, eq. 3, ``||W W^T * (1 - I)||_F^2`` (one row per filter), pair by pair:
    the squared dot product of every two distinct filters."""
    rows = param.reshape(param.shape[0], -1)
    return sum((rows[i] @ rows[j]) ** 2 for i, j in itertools.permutations(range(len(rows)), 2))


def test_the_term_is_half_the_paper_s_and_its_gradient_is_the_reference_s():
    torch.manual_seed(0)
    weights = [torch.randn(6, 3, 3, 3, requires_grad=True), torch.randn(5, 7, requires_grad=True)]
    term = off_diagonal_penalty(weights)
    assert_close_to_rounding(term, 0.5 * sum(pairwise_penalty(w.detach()) for w in weights), terms=27 + 30)
    strength = 1e-4
    gradients = torch.autograd.grad(strength * term, weights)
    # Each element: a dot product of 27 (or 7) values, then a sum over the 6 (or 5) rows.
    assert_close_to_rounding(gradients, [reference_gradient(w.detach(), strength) for w in weights], terms=27 + 6)


def test_one_axis_parameters_and_embeddings_are_left_out_as_the_reference_leaves_them():
    generator, _ = build_biggan((1, 32, 32), 24, input_layout={"z": 20, "c": 4}, g_width=4, d_width=4)
    covered = {id(p) for p in regularised_weights(generator)}
    names = {name for name, p in generator.named_parameters() if id(p) in covered}
    layers = {name for name, m in generator.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    # Every convolution's and linear layer's weight (the conditional BNs' maps too); not the shared
    # embedding (the reference's blacklist of G.shared), the biases, BN's scales or the attention's gain.
    assert names == {f"{layer}.weight" for layer in layers}
    assert "shared.weight" not in names and "attention.gain" not in names


def test_a_generator_step_adds_beta_times_the_term_and_the_reference_s_gradient(tmp_path):
    def stepped(weight):
        run = build_run(small(tmp_path, plugins={"orthogonal": {"weight": weight}}))
        before = [p.detach().clone(memory_format=torch.contiguous_format) for p in regularised_weights(run.generator)]
        return run, before, train_step(run)

    # beta = 1, not BigGAN's 1e-4: orthogonally initialised filters are nearly orthogonal already,
    # and a small term's gradient would hide in the rounding of the adversarial one.
    beta = 1.0
    plain, _, _ = stepped(0.0)
    run, before, logs = stepped(beta)
    # The largest weight, G's first linear layer, has 512 rows: its Gram matrix's squares summed.
    assert_close_to_rounding(logs["loss/G/orthogonal"], off_diagonal_penalty(before), terms=512 * 512)
    assert_close_to_rounding(logs["loss/G/total"], logs["loss/G/adv"] + beta * logs["loss/G/orthogonal"], terms=4)
    # The same step but for the term: G's gradients differ by the reference's gradient of it.
    pairs = zip(regularised_weights(run.generator), regularised_weights(plain.generator))
    differences = [p.grad - q.grad for p, q in pairs]
    expected = [reference_gradient(w, beta) for w in before]
    adversarial = [q.grad for q in regularised_weights(plain.generator)]
    # The adversarial gradients cancel up to their rounding: G's and D's passes at 64 px and back,
    # the weight gradients summed over 4 x 64 x 64 positions; 500,000 bounds their chains' lengths.
    assert_close_to_rounding(differences, expected, terms=500_000, scale=[*expected, *adversarial])
