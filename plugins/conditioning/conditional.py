"""``[plugins.conditional]``: a class-conditional GAN (cGAN) with a projection discriminator.

The class label is a generator input (one-hot, concatenated to the noise); the discriminator
adds ``<embed(y), features>`` to its logits (Miyato and Koyama 2018), with ``y`` the real image's
label or the label a fake was drawn for. Sample grids then show one class per row
(``label`` is an input like any code, so ``ganforge sample --traverse label`` and
``load_generator(fixed={"label": k})`` pick classes), and ``ganforge eval`` reports
``class_accuracy``: how often the feature network sees the class the generator was asked for.
"""

from __future__ import annotations

import torch
from torch import nn

from ganforge import hookimpl

from .labels import LABEL, LabelledVariant, generated_class_accuracy

DEFAULTS = {"classes": 10}


class Projection(nn.Module):
    """The projection term: one learned vector per class, dotted with D's features."""

    adds_to_logits = True

    def __init__(self, classes: int, feature_dim: int):
        super().__init__()
        self.embed = nn.Linear(classes, feature_dim, bias=False)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, features: torch.Tensor, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        return (self.embed(conditions[LABEL]) * features).sum(dim=1)


class Conditional(LabelledVariant):
    name = "conditional"

    @hookimpl
    def ganforge_discriminator_heads(self, run, feature_dim):
        return [("projection", Projection(self.classes, feature_dim))]


def class_accuracy(run, settings) -> dict[str, float]:
    plugin = run.plugins.get("conditional") or run.plugins.get("acgan")
    if plugin is None:
        return {}
    return generated_class_accuracy(run, settings, plugin.classes)


@hookimpl
def ganforge_register_run_plugins(register):
    register("conditional", Conditional, defaults=DEFAULTS)


@hookimpl
def ganforge_register_metrics(register):
    register("class-accuracy", class_accuracy)
