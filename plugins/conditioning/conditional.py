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
from ganforge.plugin_spec import CLASS_LABEL, PluginSpec

from .labels import CLASSES_OPTION, LABEL, LABEL_CAPABILITY, LabelledVariant, generated_class_accuracy


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
    """For a run whose generator takes a class label, from whichever plugin feeds it."""
    feeding = run.provider(CLASS_LABEL)
    return generated_class_accuracy(run, settings, feeding.classes) if feeding else {}


SPEC = PluginSpec("conditional", Conditional, {"classes": CLASSES_OPTION},
                  doc="the class label as a generator input, a projection discriminator (Miyato and Koyama 2018)",
                  **LABEL_CAPABILITY)
DEFAULTS = SPEC.defaults()


@hookimpl
def ganforge_register_run_plugins(register):
    register(SPEC)


@hookimpl
def ganforge_register_metrics(register):
    register("class-accuracy", class_accuracy)
