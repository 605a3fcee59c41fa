"""What the gradient penalties share: the per-sample norm of the critic's gradient at images."""

from __future__ import annotations

import torch

from ganforge.errors import RecipeError


def gradient_norms(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``(B,)``: the norm of each sample's logit's gradient with respect to its image, over all
    non-batch dimensions, kept in the graph (``create_graph``) so the penalty trains D through it."""
    (gradients,) = torch.autograd.grad(logits.sum(), images, create_graph=True)
    return gradients.flatten(1).norm(dim=1)


def refuse_compiled_networks(run, plugin: str) -> None:
    """Refuse ``train.compile`` before anything trains: a gradient penalty backpropagates through
    a gradient (double backward), which torch.compile's aot_autograd does not support; a compiled
    run would stop at its first penalty step with a RuntimeError."""
    if run.recipe.train.compile:
        raise RecipeError(f"[plugins.{plugin}]'s gradient penalty needs a double backward, which torch.compile"
                          " (aot_autograd) does not support: set train.compile = false", key="train.compile")
