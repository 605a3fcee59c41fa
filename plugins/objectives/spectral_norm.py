"""``[plugins.spectral-norm]``: spectral normalisation of the discriminator (Miyato et al. 2018).

Every convolution and linear layer of the discriminator (its heads too, unless ``heads = false``)
has its weight divided by its largest singular value, estimated by one power iteration per
training pass (torch's ``spectral_norm`` parametrisation): D becomes 1-Lipschitz layer by layer,
which is what an unbounded objective such as ``wasserstein`` or ``hinge`` needs. ``generator =
true`` normalises the generator too (SAGAN, BigGAN). The power iteration's vectors are buffers, so
checkpoints hold them and resume stays exact.

A layer-wise bound makes D Lipschitz only if nothing between the layers rescales by the batch:
batch norm divides by the batch's spread, so D's slope changes with it. The SNGAN references have
no batch norm in a spectrally normalised D (StudioGAN ``src/models/dcgan.py`` and ``resnet.py``: D
blocks use batch norm only without spectral norm; Miyato's chainer-gan-lib likewise), so the plugin
removes D's batch norms (``normalisation = "none"``, or ``"layer"``/``"instance"`` to swap them) and
says so in ``ganforge check``. ``normalisation = "keep"`` keeps them; D is then not Lipschitz, and
the plugin no longer provides ``lipschitz``: ``wasserstein`` with it is refused.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganforge import hookimpl
from ganforge.checks import one_of
from ganforge.plugin_spec import LIPSCHITZ, Option, PluginSpec

from .normalisation import NORMALISATIONS, per_sample_discriminator

KEEP = "keep"
LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def normalise(module: nn.Module) -> int:
    """Spectral-normalise every layer with a weight matrix inside ``module``; returns how many."""
    layers = [layer for layer in module.modules() if isinstance(layer, LAYERS)]
    for layer in layers:
        # ConvTranspose2d keeps output channels in dim 1 of its weight.
        spectral_norm(layer, dim=1 if isinstance(layer, nn.ConvTranspose2d) else 0)
    return len(layers)


class SpectralNorm:
    def __init__(self, settings: dict):
        self.generator, self.heads = settings["generator"], settings["heads"]
        self.normalisation = settings["normalisation"]

    @hookimpl
    def ganforge_models_built(self, run):
        if self.normalisation != KEEP:
            per_sample_discriminator(run, self.normalisation, "spectral-norm",
                                     "batch statistics would undo the layers' Lipschitz bound")
        # The weight's parameter stays the same object under the parametrisation: optimizer groups hold.
        count = normalise(run.discriminator.trunk)
        if self.heads:
            count += sum(normalise(head) for head in run.discriminator.heads.values())
        notes = [f"{count} discriminator layers"]
        if self.generator:
            notes.append(f"{normalise(run.generator)} generator layers")
        run.note(f"spectral-norm: {' and '.join(notes)} spectrally normalised")


def provided(settings: dict) -> frozenset[str]:
    """`lipschitz`, unless `normalisation = "keep"`: a D that keeps its batch norms is not Lipschitz"""
    return frozenset() if settings["normalisation"] == KEEP else frozenset({LIPSCHITZ})


SPEC = PluginSpec(
    "spectral-norm", SpectralNorm, doc="every D layer divided by its largest singular value (Miyato et al. 2018)",
    options={
        "generator": Option(False, "normalise the generator's layers too (SAGAN, BigGAN)"),
        "heads": Option(True, "normalise the discriminator's heads too"),
        "normalisation": Option("none", '"none" removes D\'s batch norms, "layer"/"instance" swap them, "keep" keeps'
                                " them (then D is not Lipschitz)", one_of(*NORMALISATIONS, KEEP)),
    },
    provides=provided)
DEFAULTS = SPEC.defaults()


@hookimpl
def ganforge_register_run_plugins(register):
    register(SPEC)
