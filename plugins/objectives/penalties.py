"""What the gradient penalties share: the per-sample norm of the critic's gradient at images."""

from __future__ import annotations

import torch


def gradient_norms(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``(B,)``: the norm of each sample's logit's gradient with respect to its image, over all
    non-batch dimensions, kept in the graph (``create_graph``) so the penalty trains D through it."""
    (gradients,) = torch.autograd.grad(logits.sum(), images, create_graph=True)
    return gradients.flatten(1).norm(dim=1)
