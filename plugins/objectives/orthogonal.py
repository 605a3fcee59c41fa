"""``[plugins.orthogonal]``: BigGAN's orthogonal regularisation of the generator (Brock et al.
2019, section 3.1), its modified form that leaves the filters' norms free.

For every weight of G with at least two axes, viewed as a matrix ``W`` with one row per output
(a convolution's kernel flattened), the term is ``1/2 * ||W W^T * (1 - I)||_F^2``: the squared
dot products of distinct filters, the diagonal (each filter's own norm) left out. With weight
``beta`` (1e-4, "the default for BigGAN") its gradient is ``2 * beta * (W W^T * (1 - I)) W``,
exactly what ajbrock/BigGAN-PyTorch adds to G's gradients after the backward pass (``utils.py``,
``ortho``; ``train_fns.py`` with ``--G_ortho``). The paper writes the penalty ``beta * ||W^T W *
(1 - I)||_F^2``, whose gradient is twice the code's; the half here keeps the code's, which
BigGAN trained with. A loss term instead of an edit of the gradients: the same update, logged as
``loss/G/orthogonal``.

As in the reference, one-axis parameters (biases, batch norm's scales, the attention's gain) are
left out, and so are embeddings (the reference leaves out ``G.shared``: "it makes no sense"; here
every ``nn.Embedding`` in G, which is how BigGAN's shared embedding is made). Under
``[plugins.spectral-norm]`` with ``generator = true`` the raw weight is regularised (torch's
``parametrizations.weight.original``), as the reference's ``SNConv2d.weight`` is. Any model
family's generator can take it.
"""

from __future__ import annotations

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.checks import non_negative
from ganforge.losses import LossTerm
from ganforge.models import unwrap
from ganforge.plugin_spec import Option, PluginSpec


def regularised_weights(module: nn.Module) -> list[torch.Tensor]:
    """The parameters the regularisation covers: two or more axes, outside any embedding."""
    embedded = {id(parameter) for layer in module.modules() if isinstance(layer, nn.Embedding)
                for parameter in layer.parameters()}
    return [parameter for parameter in module.parameters() if parameter.dim() >= 2 and id(parameter) not in embedded]


def off_diagonal_penalty(weights: list[torch.Tensor]) -> torch.Tensor:
    """``sum over W of 1/2 * ||W W^T * (1 - I)||_F^2``, each ``W`` one row per output."""
    halves = []
    for weight in weights:
        matrix = weight.flatten(1)
        gram = matrix @ matrix.t()
        # The diagonal removed before squaring: subtracting its squares after would cancel them
        # against a sum they dominate (an orthogonal W's is all diagonal).
        off_diagonal = gram - torch.diag(gram.diagonal())
        halves.append(0.5 * off_diagonal.square().sum())
    return torch.stack(halves).sum() if halves else torch.zeros(())


class Orthogonal:
    def __init__(self, settings: dict):
        self.weight = settings["weight"]

    @hookimpl
    def ganforge_models_built(self, run):
        count = len(regularised_weights(unwrap(run.generator)))
        run.note(f"orthogonal: {count} generator weights regularised (off-diagonal, beta {self.weight:g})")

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        return [LossTerm("orthogonal", off_diagonal_penalty(regularised_weights(unwrap(ctx.run.generator))),
                         self.weight)]


SPEC = PluginSpec(
    "orthogonal", Orthogonal, doc="BigGAN's orthogonal regularisation of G, off the diagonal (Brock et al. 2019)",
    options={"weight": Option(1e-4, "beta: the term's weight in G's objective", non_negative)})
DEFAULTS = SPEC.defaults()


@hookimpl
def ganforge_register_run_plugins(register):
    register(SPEC)
