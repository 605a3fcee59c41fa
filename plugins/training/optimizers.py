"""Built-in optimizers, selected by ``train.optimizer``; ``train.beta1`` and ``train.beta2`` are
Adam's betas, and SGD's momentum is ``beta1``."""

from __future__ import annotations

import torch

from ganforge import hookimpl


def adam(param_groups, betas):
    return torch.optim.Adam(param_groups, betas=betas)


def adamw(param_groups, betas):
    return torch.optim.AdamW(param_groups, betas=betas)


def sgd(param_groups, betas):
    return torch.optim.SGD(param_groups, momentum=betas[0])


@hookimpl
def ganforge_register_optimizers(register):
    register("adam", adam)
    register("adamw", adamw)
    register("sgd", sgd)
