"""StyleGAN2 (Karras et al. 2020) as a model family: ``model.name = "stylegan2"``, at 32, 64 and
128 px, after NVlabs/stylegan2-ada-pytorch (``training/networks.py``, ``training/loss.py``).

G is the mapping network and the skip synthesis network (:mod:`.synthesis`, :mod:`.generator`),
D the residual discriminator with minibatch standard deviation (:mod:`.discriminator`); both use
equalised learning rates and plain bilinear / average-pool resampling instead of the reference's
FIR filters (:mod:`.layers` says where that differs). ``z`` is the input row's ``z`` part; every
other generator input (a cGAN's ``label``, InfoGAN's codes) is the reference's label ``c``:
embedded, normalised and concatenated to ``z`` in the mapping network, so the conditions enter G
there.

The defaults are the reference's ``train.py`` configurations for one GPU: at 32 px ``cifar``
(``channel_base = 32768``, ``channel_max = 512``, 2 mapping layers, minibatch-std groups of 32),
at 64 and 128 px ``auto`` (``channel_base = 16384``, 2 mapping layers, groups of 4); ``w_dim = 512``
(``z``'s width is ``latent.noise_dim``, 512 in the reference). Style mixing is on at the
reference loss's 0.9; the ``cifar`` configuration turns it off (``style_mixing = 0``) and uses the
non-residual D (``d_architecture = "orig"``). Path-length regularisation is the ``path-length``
run plugin, which this family's ``style-latents`` capability lets it use. The reference's
learning rates and Adam betas (0.0025, (0, 0.99)) are the recipe's ``train`` keys.

Spectral normalisation is refused: the layers keep their weights at N(0, 1) and scale them at run
time (equalised learning rate), which dividing each weight by its largest singular value would
undo; the reference constrains its D with R1 (``[plugins.r1]``) instead.
"""

from __future__ import annotations

from ganforge import hookimpl
from ganforge.build import NOISE
from ganforge.checks import between, coerce, one_of
from ganforge.errors import RecipeError
from ganforge.models import unwrap
from ganforge.plugin_spec import STYLE_LATENTS

from .discriminator import StyleGAN2Discriminator
from .generator import StyleGAN2Generator, TrainingDraws
from .layers import group_size_for

#: train.py's cfg_specs for one GPU at each size: channel_base (fmaps * 32768), map, mbstd.
REFERENCE_CONFIGS = {32: (32768, 2, 32), 64: (16384, 2, 4), 128: (16384, 2, 4)}
ARCHITECTURES = ("resnet", "orig")


def option(key: str, value, kind: type, check):
    """``value`` of ``model.options.<key>`` as ``kind`` and passing ``check``, else a RecipeError."""
    value = coerce(value, kind, f"model.options.{key}")
    if (complaint := check(value)) is not None:
        raise RecipeError(f"{complaint}, got {value!r}", key=f"model.options.{key}")
    return value


def build_stylegan2(image_shape, input_dim, input_layout=None, channel_base: int = 0, channel_max: int = 512,
                    mapping_layers: int = 0, w_dim: int = 512, mbstd_group: int = 0, style_mixing: float = 0.9,
                    d_architecture: str = "resnet"):
    channels, height, width = image_shape
    if height != width or height not in REFERENCE_CONFIGS:
        raise RecipeError(f"takes square 32, 64 or 128 px images, the data has {height}x{width}; set"
                          " data.image_size to 32, 64 or 128", key="model.name")
    reference_base, reference_map, reference_group = REFERENCE_CONFIGS[height]
    channel_base = option("channel_base", channel_base or reference_base, int, between(height, 2**20))
    channel_max = option("channel_max", channel_max, int, between(1, 4096))
    mapping_layers = option("mapping_layers", mapping_layers or reference_map, int, between(1, 16))
    w_dim = option("w_dim", w_dim, int, between(1, 4096))
    mbstd_group = option("mbstd_group", mbstd_group or reference_group, int, between(1, 1024))
    style_mixing = option("style_mixing", style_mixing, float, between(0, 1))
    d_architecture = option("d_architecture", d_architecture, str, one_of(*ARCHITECTURES))
    layout = dict(input_layout or {NOISE: input_dim})
    z_dim = layout.pop(NOISE)
    generator = StyleGAN2Generator(z_dim, sum(layout.values()), image_shape, w_dim, channel_base, channel_max,
                                   mapping_layers, style_mixing)
    return generator, StyleGAN2Discriminator(image_shape, channel_base, channel_max, mbstd_group, d_architecture)


# What the family offers and refuses, read by ganforge check like a plugin's (ganforge.plugin_spec).
build_stylegan2.provides = frozenset({STYLE_LATENTS})
build_stylegan2.conflicts = {
    "spectral-norm": "its layers keep their weights at N(0, 1) and scale them at run time (equalised learning rate),"
                     " which spectral normalisation would undo; constrain D with [plugins.r1] as the reference does",
}


@hookimpl
def ganforge_register_models(register):
    register("stylegan2", build_stylegan2)


@hookimpl
def ganforge_models_built(run):
    """Give a StyleGAN2 generator the run's streams for style mixing and noise, and refuse a
    minibatch-std group that does not split the training batch."""
    generator = unwrap(run.generator)
    if not isinstance(generator, StyleGAN2Generator):
        return
    noise = run.inputs[NOISE]
    generator.draws = TrainingDraws(mixing=run.rng("stylegan2/mixing", "cpu"),
                                    second_z=lambda n, rng: noise.sample(n, rng, run.device),
                                    noise=run.rng("stylegan2/noise"))
    group = unwrap(run.discriminator).trunk.mbstd.group_size
    batch = run.recipe.train.batch_size // run.ranks.world_size
    if group_size_for(batch, group) != min(group, batch):
        raise RecipeError(f"groups of {group} images do not split the batch of {batch} images"
                          f"{' a process' if run.ranks.world_size > 1 else ''} (train.batch_size); choose a divisor"
                          " of it", key="model.options.mbstd_group")
