"""``[plugins.spectral-norm]``: spectral normalisation of the discriminator (Miyato et al. 2018).

Every convolution and linear layer of the discriminator (its heads too, unless ``heads = false``)
has its weight divided by its largest singular value, estimated by one power iteration per
training pass (torch's ``spectral_norm`` parametrisation): D becomes 1-Lipschitz layer by layer,
which is what an unbounded objective such as ``wasserstein`` or ``hinge`` needs. ``generator =
true`` normalises the generator too (SAGAN, BigGAN). The power iteration's vectors are buffers, so
checkpoints hold them and resume stays exact.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganforge import hookimpl

DEFAULTS = {"generator": False, "heads": True}
LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def normalise(module: nn.Module) -> int:
    """Spectral-normalise every layer with a weight matrix inside ``module``; returns how many."""
    layers = [layer for layer in module.modules() if isinstance(layer, LAYERS)]
    for layer in layers:
        # ConvTranspose2d keeps output channels in dim 1 of its weight.
        spectral_norm(layer, dim=1 if isinstance(layer, nn.ConvTranspose2d) else 0)
    return len(layers)


class SpectralNorm:
    provides = ("lipschitz",)

    def __init__(self, settings: dict):
        self.generator, self.heads = settings["generator"], settings["heads"]

    @hookimpl
    def ganforge_models_built(self, run):
        # The weight's parameter stays the same object under the parametrisation: optimizer groups hold.
        count = normalise(run.discriminator.trunk)
        if self.heads:
            count += sum(normalise(head) for head in run.discriminator.heads.values())
        notes = [f"{count} discriminator layers"]
        if self.generator:
            notes.append(f"{normalise(run.generator)} generator layers")
        run.note(f"spectral-norm: {' and '.join(notes)} spectrally normalised")


@hookimpl
def ganforge_register_run_plugins(register):
    register("spectral-norm", SpectralNorm, defaults=DEFAULTS)
