"""The run: what one training run holds, and the services its plugins call.

Every per-run hook receives the :class:`Run`. It is built by :func:`ganforge.build.set_up`, in
the order the hooks document; the training step's own services (transforms, conditions,
precision) are in :mod:`ganforge.step_services`, beside the loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .build import FIXED_SAMPLES, NOISE, load_data, resolve_device
from .data import ImageData, to_unit_range
from .distributed import ALONE, Ranks
from .errors import GanforgeError, PluginError, RecipeError, UsageError
from .latents import LatentDistribution
from .models import takes_truncation
from .pluginmanager import PluginHost
from .recipe import Recipe
from .registry import unknown_name_message

__all__ = ["FIXED_SAMPLES", "NOISE", "Run", "load_data", "resolve_device"]


class Run:
    """Everything one training run holds; plugins read what they need from it.

    Attributes available to setup hooks: ``recipe``, ``host``, ``directory``, ``device``, ``data``,
    ``plugins`` (the switched-on plugin objects by table name). After setup: ``inputs``,
    ``generator``, ``discriminator``, ``loss``, ``optimizer_g``, ``optimizer_d``, ``batcher``,
    ``step`` and ``images_seen``; ``rng(name)`` gives a plugin its own checkpointed random stream.
    ``generator`` and ``discriminator`` are the modules themselves; a wrapper (DDP, compile) may
    stand in for them during training, so read attributes from :func:`ganforge.models.unwrap` of them.
    """

    def __init__(self, recipe: Recipe, host: PluginHost, directory: Path, data: ImageData | None = None,
                 image_shape: tuple[int, int, int] | None = None, keep_global_state: bool = False,
                 ranks: Ranks = ALONE):
        """Build the run. With ``image_shape`` instead of ``data``, build only the models (to sample
        from a checkpoint without its dataset); such a run has no ``data`` and cannot train.
        ``keep_global_state`` leaves torch's global generator and thread count as they were (for
        loading a checkpoint inside someone else's program). ``ranks``: this process's place in a
        distributed run (ganforge.distributed)."""
        from .build import set_up

        set_up(self, recipe, host, directory, data, image_shape, keep_global_state, ranks)

    def rng(self, name: str, device: torch.device | str | None = None) -> torch.Generator:
        """The run's random stream ``name`` (on the run's device unless ``device`` says), seeded from
        the run's seed and the name, saved in checkpoints and restored on resume. Plugins draw from
        their own named stream, so that they never shift the data order or each other's draws."""
        return self.streams.get(name, self.device if device is None else device)

    def make_distribution(self, name: str, size: int, options: dict, key: str, name_key: str = "") -> LatentDistribution:
        """The registered latent distribution ``name`` built as ``factory(size, **options)``.

        The recipe's mistakes are :class:`RecipeError`: an unknown name naming ``name_key`` (the
        recipe key that holds the name), an option the distribution refuses with ``ValueError`` or
        ``TypeError`` naming ``key``. Anything else the factory does wrong is the plugin's fault.
        Plugins that add generator inputs build them here.
        """
        latents = self.host.latents
        if name not in latents:
            raise RecipeError(unknown_name_message("distribution", name, latents.names(), plugin_hint=True),
                              key=name_key or key)
        entry = latents.entry(name)
        try:
            distribution = self.host.guarded(entry.plugin, entry.value, size, **options)
        except PluginError as error:
            if not isinstance(error.__cause__, (TypeError, ValueError)):
                raise
            raise RecipeError(f"{name}: {error.__cause__}", key=key) from None
        if not isinstance(distribution, LatentDistribution):
            raise PluginError(f"latent distribution {self.host.origin(latents, name)}: its factory returned a"
                              f" {type(distribution).__name__}, expected a ganforge.latents.LatentDistribution")
        return distribution

    def describe_input(self, name: str) -> str:
        """``code 'alpha': beta (ganforge-beta 0.1.0)``, for messages about one generator input."""
        distribution = self.inputs[name]
        registered = [entry.name for entry in self.host.latents if entry.value is type(distribution)]
        what = self.host.origin(self.host.latents, registered[0]) if registered else type(distribution).__name__
        return f"{'latent.noise' if name == NOISE else f'code {name!r}'}: {what}"

    def channels_last(self) -> bool:
        """Whether the networks' 4-d weights are stored channels-last (``train.memory_format``).

        ``auto`` chooses it for images of 32 px and more, where convolutions dominate: DCGAN at
        64 px trained 17% faster with it on a 2-core CPU, the 28 px InfoGAN networks (mostly
        linear layers) 4% slower (docs/performance.md). Convolutions then compute in that format
        whatever the input's; the values are the same."""
        chosen = self.recipe.train.memory_format
        if chosen == "auto":
            return self.image_shape[1] >= 32
        return chosen == "channels-last"

    def discriminator_groups(self) -> list[dict]:
        """D's parameters as optimizer groups: the trunk at ``train.d_lr``, and each head and each
        network beside D at its own ``learning_rate`` attribute where it sets one (a Q head may
        learn faster than D). A plugin that replaces layers in ``ganforge_models_built`` assigns
        this afresh to ``parameter_groups["D"]``."""
        d_lr = self.recipe.train.d_lr
        groups = [{"params": list(self.discriminator.trunk.parameters()), "lr": d_lr}]
        for head in (*self.discriminator.heads.values(), *self.discriminator.networks.values()):
            if any(True for _ in head.parameters()):
                groups.append({"params": list(head.parameters()), "lr": getattr(head, "learning_rate", 0) or d_lr})
        return groups

    def generator_forward(self, latents: dict[str, torch.Tensor], generator: nn.Module | None = None,
                          truncation: float | None = None) -> torch.Tensor:
        """G's images in [-1, 1] for ``latents``: the concatenated input row, and the latents
        themselves as ``conditions`` for a generator whose forward takes them (conditional BN);
        ``truncation`` for one that truncates its own latents (:func:`generator_options`)."""
        generator = self.generator if generator is None else generator
        return generator(self.generator_input(latents), **generator_options(self, generator, latents, truncation))

    def inference_generator(self) -> nn.Module:
        """The generator behind pictures, traversals, ``load_generator`` and metrics: a plugin may
        offer another (an exponential moving average) through ``ganforge_inference_generator``."""
        offered = self.host.hook.ganforge_inference_generator(run=self)
        return self.generator if offered is None else offered

    # -- latents -------------------------------------------------------------------------------

    def sample_latents(self, n: int, rng: torch.Generator | None = None,
                       truncation: float | None = None) -> dict[str, torch.Tensor]:
        """One batch of every generator input, drawn in a fixed order from ``rng`` (the run's own
        by default); with ``truncation``, the noise ``z`` within that many units of its centre
        (the truncation trick; a noise without one is a UsageError), unless G truncates its own latents."""
        rng = rng if rng is not None else self.latent_rng
        return {name: truncated_noise(self, n, truncation, rng) if name == NOISE and truncation is not None
                else distribution.sample(n, rng, self.device) for name, distribution in self.inputs.items()}

    def generator_input(self, latents: dict[str, torch.Tensor]) -> torch.Tensor:
        """The generator's input row: the noise, then each extra input in name order."""
        try:
            return torch.cat([latents[name] for name in self.inputs], dim=1)
        except KeyError as missing:
            raise GanforgeError(f"latents lack the generator input {missing}") from None

    @torch.inference_mode()
    def generate(self, latents: dict[str, torch.Tensor], truncation: float | None = None) -> torch.Tensor:
        """Images in [0, 1] for ``latents`` from the inference generator in eval mode (BN running
        statistics); ``truncation`` as :meth:`sample_latents` drew them with it."""
        generator = self.inference_generator()
        was_training = generator.training
        generator.eval()
        try:
            images = self.generator_forward(latents, generator, truncation)
        finally:
            generator.train(was_training)
        return to_unit_range(images)

    # -- what plugins call -----------------------------------------------------------------------

    @property
    def input_dim(self) -> int:
        return sum(distribution.input_dim for distribution in self.inputs.values())

    def note(self, text: str) -> None:
        """Say what a plugin changed (a normalisation swapped, layers wrapped): printed by
        ``ganforge check`` and in the run's header."""
        self.notes.append(text)

    def providers(self, capability: str) -> list[Any]:
        """The switched-on plugins' objects that provide ``capability``
        (:mod:`ganforge.plugin_spec`: ``CODE_READER``, ``CLASS_LABEL``, ...), in recipe order:
        how a metric or a plugin finds another's services without knowing its name."""
        return [plugin for name, plugin in self.plugins.items()
                if capability in self.specs[name].provided(self.recipe.plugins[name], plugin)]

    def provider(self, capability: str) -> Any | None:
        """The first switched-on plugin object that provides ``capability``, or ``None``."""
        return next(iter(self.providers(capability)), None)


def generator_options(run: Run, generator: nn.Module, latents: dict[str, torch.Tensor],
                      truncation: float | None) -> dict[str, Any]:
    """The keyword arguments of a call of ``generator``: the latents as ``conditions`` for one
    whose forward takes them, and ``truncation`` (at sampling) for one whose forward takes that:
    it truncates its own latents (StyleGAN's w), and :func:`truncated_noise` leaves ``z`` alone."""
    options: dict[str, Any] = {"conditions": latents} if run.generator_takes_conditions else {}
    if truncation is not None and takes_truncation(generator):
        options["truncation"] = truncation
    return options


def truncated_noise(run: Run, n: int, threshold: float, rng: torch.Generator) -> torch.Tensor:
    """The noise ``z`` for the truncation trick; a noise without a truncation is a UsageError. A
    generator that truncates its own latents gets the threshold instead (:func:`generator_options`),
    and ``z`` is drawn as in training."""
    if takes_truncation(run.inference_generator()):
        return run.inputs[NOISE].sample(n, rng, run.device)
    try:
        return run.inputs[NOISE].sample_truncated(n, threshold, rng, run.device)
    except NotImplementedError as error:
        raise UsageError(f"--truncation: {error} (latent.noise = {run.recipe.latent.noise!r})") from None
