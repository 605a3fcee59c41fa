"""Building a run from a validated recipe: data, latent inputs, models with their heads, optimizers.

The :class:`Run` is what every per-run hook receives. It is built in the order the hooks are
documented: run plugins switched on, data loaded, generator inputs collected, models built, heads
attached, ``ganforge_models_built``, optimizers made, image transforms collected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .contracts import check_data, check_latent, check_loss, check_models
from .data import Batcher, DataSettings, FileImages, ImageData, resolve_data_root, select_holdout
from .distributed import ALONE, Ranks, training_device
from .errors import GanforgeError, PluginError, RecipeError
from .latents import LatentDistribution
from .models import Discriminator, DiscriminatorWithHeads, takes_conditions
from .pluginmanager import PluginHost
from .recipe import MAX_D_STEPS, Recipe
from .registry import unknown_name_message
from .streams import RandomStreams

NOISE = "z"
FIXED_SAMPLES = 64  # the fixed latent batch behind every sample grid


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError("CUDA is not available on this machine; use run.device = \"cpu\" or \"auto\"",
                          key="run.device")
    return device


def load_data(recipe: Recipe, host: PluginHost, part: str = "train", holdout: int | None = None) -> ImageData:
    """The recipe's dataset, through its dataset plugin: the images trained on (``part="train"``),
    or the ``data.holdout`` images kept out of training (``part="holdout"``); ``holdout``
    overrides the recipe's count (0: every image)."""
    data = recipe.data
    settings = DataSettings(
        name=data.name, root=resolve_data_root(data.root), split=data.split, download=data.download,
        image_size=data.image_size, size=data.size, seed=recipe.run.seed, stream=data.stream,
    )
    entry = host.datasets.entry(data.name)
    images = host.guarded(entry.plugin, entry.value, settings=settings)
    check_data(images, host.origin(host.datasets, data.name))
    if data.stream and not isinstance(images.images, FileImages):
        raise RecipeError(f"dataset {data.name!r} is loaded into memory, it does not stream; data.stream applies"
                          " to image-folder (set it to false)", source=recipe.source, key="data.stream")
    return select_holdout(images, data.holdout if holdout is None else holdout, part, source=recipe.source)


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
        self.recipe = recipe
        self.host = host
        self.directory = Path(directory)
        self.ranks = ranks
        self.device = training_device(resolve_device(recipe.run.device), ranks)
        self.step = 0
        self.images_seen = 0
        self.plugins: dict[str, Any] = {}
        self.inputs: dict[str, LatentDistribution] = {}
        self.streams = RandomStreams(recipe.run.seed, ranks.rank)
        self.transforms: list[tuple[str, Callable]] = []
        self.eval_best: dict | None = None  # the best eval.best figure so far (ganforge.scoring)
        self.notes: list[str] = []  # what plugins changed, for the run header and ganforge check
        self.d_steps = 1
        if recipe.train.threads and not keep_global_state:
            torch.set_num_threads(recipe.train.threads)
        seeding = torch.random.fork_rng(devices=[]) if keep_global_state else contextlib.nullcontext()
        try:
            with seeding:
                # Model initialisation draws from torch's global generator: seed it first.
                torch.manual_seed(recipe.run.seed)
                self._build(data, image_shape)
        except RecipeError as error:
            # Plugins name the key; the recipe knows the file.
            raise (error.located(recipe.source) if not error.source else error) from None
        self.latent_rng = self.rng("latents", "cpu")
        self.fixed_latents = self.sample_latents(FIXED_SAMPLES, self.rng("fixed", "cpu"))
        if self.data is not None:
            batch_size = recipe.train.batch_size
            if batch_size > len(self.data):
                raise RecipeError(f"{batch_size} exceeds the dataset's {len(self.data)} images",
                                  source=recipe.source, key="train.batch_size")
            if batch_size % ranks.world_size:
                raise RecipeError(f"{batch_size} (the global batch) does not split evenly over {ranks.world_size}"
                                  " processes; use a multiple of the process count", source=recipe.source,
                                  key="train.batch_size")
            self.batcher = Batcher(self.data, batch_size, self.rng("data", "cpu"), self.device, ranks.share,
                                   recipe.data.workers)
        # What a training step calls: the modules themselves, or a wrapper (DDP) set by the loop.
        self.training_generator: nn.Module = self.generator
        self.training_discriminator: nn.Module = self.discriminator

    def _build(self, data: ImageData | None, image_shape: tuple[int, int, int] | None) -> None:
        self._switch_on_plugins()
        self._check_combination()
        if image_shape is None:
            self.data = data if data is not None else load_data(self.recipe, self.host)
            image_shape = self.data.image_shape
        else:
            self.data = None
        self.image_shape = tuple(image_shape)
        self._collect_inputs()
        self._build_models()
        self.host.hook.ganforge_models_built(run=self)
        self.d_steps = self._discriminator_steps()
        self._make_optimizers()
        self._collect_transforms()

    def rng(self, name: str, device: torch.device | str | None = None) -> torch.Generator:
        """The run's random stream ``name`` (on the run's device unless ``device`` says), seeded from
        the run's seed and the name, saved in checkpoints and restored on resume. Plugins draw from
        their own named stream, so that they never shift the data order or each other's draws."""
        return self.streams.get(name, self.device if device is None else device)

    # -- setup ---------------------------------------------------------------------------------

    def _switch_on_plugins(self) -> None:
        for name, settings in self.recipe.plugins.items():
            entry = self.host.run_plugins.entry(name)
            try:
                plugin = self.host.guarded(entry.plugin, entry.value, settings=settings)
            except RecipeError as error:
                key = f"plugins.{name}.{error.key}" if error.key else f"plugins.{name}"
                raise RecipeError(error.detail, key=key) from None
            self.host.register(plugin, f"{name}.run")
            self.plugins[name] = plugin

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

    def _collect_inputs(self) -> None:
        latent = self.recipe.latent
        self.inputs = {NOISE: self.make_distribution(latent.noise, latent.noise_dim, latent.noise_options,
                                                     "latent.noise_options", "latent.noise")}
        extra: list[tuple[str, LatentDistribution]] = []
        for contribution in self.host.hook.ganforge_generator_inputs(run=self):
            extra.extend(contribution)
        for name, distribution in sorted(extra, key=lambda pair: pair[0]):
            if name in self.inputs:
                raise PluginError(f"generator input {name!r} is contributed twice (or clashes with the noise {NOISE!r})")
            if not isinstance(distribution, LatentDistribution):
                raise PluginError(f"generator input {name!r} is a {type(distribution).__name__}, not a LatentDistribution")
            self.inputs[name] = distribution
        for name, distribution in self.inputs.items():
            check_latent(distribution, self.describe_input(name), self.device)

    def _build_models(self) -> None:
        recipe = self.recipe
        entry = self.host.models.entry(recipe.model.name)
        try:
            generator, trunk = self.host.guarded(
                entry.plugin, entry.value, image_shape=self.image_shape, input_dim=self.input_dim)
        except RecipeError as error:
            raise RecipeError(error.detail, key=error.key or "model.name") from None
        if not isinstance(trunk, Discriminator):
            raise PluginError(f"model {self.host.origin(self.host.models, recipe.model.name)} built a"
                              f" {type(trunk).__name__}, not a ganforge.models.Discriminator")
        generator, trunk = generator.to(self.device), trunk.to(self.device)
        self._generator_takes_conditions = takes_conditions(generator)
        probe = self.sample_latents(2, torch.Generator().manual_seed(0)) if self._generator_takes_conditions else None
        check_models(generator, trunk, self.image_shape, self.input_dim,
                     self.host.origin(self.host.models, recipe.model.name), self.device, probe)
        heads: dict[str, nn.Module] = {}
        for contribution in self.host.hook.ganforge_discriminator_heads(run=self, feature_dim=trunk.feature_dim):
            for name, module in contribution:
                if name in heads:
                    raise PluginError(f"discriminator head {name!r} is contributed twice")
                heads[name] = module
        self.generator = generator
        self.discriminator = DiscriminatorWithHeads(trunk, dict(sorted(heads.items()))).to(self.device)
        if self.channels_last():
            self.generator.to(memory_format=torch.channels_last)
            self.discriminator.to(memory_format=torch.channels_last)
            self.note("convolution weights in channels-last memory format (train.memory_format)")
        self.loss = self.host.losses.get(recipe.loss.name)
        check_loss(self.loss, self.host.origin(self.host.losses, recipe.loss.name))
        self.parameter_groups = {"G": [{"params": list(generator.parameters()), "lr": recipe.train.g_lr}],
                                 "D": self.discriminator_groups()}

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
        """D's parameters as optimizer groups: the trunk at ``train.d_lr``, and each head at its own
        ``learning_rate`` attribute where it sets one (a Q head may learn faster than D). A plugin
        that replaces layers in ``ganforge_models_built`` assigns this afresh to
        ``parameter_groups["D"]``."""
        d_lr = self.recipe.train.d_lr
        groups = [{"params": list(self.discriminator.trunk.parameters()), "lr": d_lr}]
        for head in self.discriminator.heads.values():
            if any(True for _ in head.parameters()):
                groups.append({"params": list(head.parameters()), "lr": getattr(head, "learning_rate", 0) or d_lr})
        return groups

    def note(self, text: str) -> None:
        """Say what a plugin changed (a normalisation swapped, layers wrapped): printed by
        ``ganforge check`` and in the run's header."""
        self.notes.append(text)

    def _check_combination(self) -> None:
        """Refuse, before anything trains, an objective whose requirement no switched-on plugin
        provides (``requires`` on the loss, ``provides`` on plugins), and plugins declared to
        conflict (a plugin's ``conflicts`` maps another's name to the reason)."""
        provided = {need for plugin in self.host.pm.get_plugins() for need in getattr(plugin, "provides", ())}
        loss = self.host.losses.get(self.recipe.loss.name)
        for need, why in getattr(loss, "requires", {}).items():
            if need not in provided:
                raise RecipeError(f"{self.recipe.loss.name!r} {why}", key="loss.name")
        for name, plugin in self.plugins.items():
            for other, why in getattr(plugin, "conflicts", {}).items():
                if other in self.plugins:
                    raise RecipeError(f"cannot be combined with [plugins.{other}]: {why}", key=f"plugins.{name}")

    def _discriminator_steps(self) -> int:
        """D updates per G update: ``train.d_steps`` when set, else what the plugins ask for
        (``ganforge_discriminator_steps``: WGAN-GP's critic wants 5), else 1."""
        if self.recipe.train.d_steps:
            return self.recipe.train.d_steps
        asked = {}
        for impl in self.host.hook.ganforge_discriminator_steps.get_hookimpls():
            if (steps := impl.function(run=self)) is not None:
                asked[impl.plugin_name.removesuffix(".run")] = steps
        for name, steps in asked.items():
            if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_D_STEPS:
                raise PluginError(f"plugin {name!r} asked for {steps!r} discriminator steps; expected 1 to {MAX_D_STEPS}")
        if len(set(asked.values())) > 1:
            wants = ", ".join(f"{name} {steps}" for name, steps in asked.items())
            raise RecipeError(f"the plugins ask for different discriminator steps per generator step ({wants});"
                              " choose with train.d_steps", key="train.d_steps")
        return next(iter(asked.values()), 1)

    def _make_optimizers(self) -> None:
        """The recipe's optimizer over ``parameter_groups``, as ``ganforge_models_built`` left them
        (a plugin may add groups, change their rates, or freeze parameters, which are left out)."""
        train = self.recipe.train
        entry = self.host.optimizers.entry(train.optimizer)
        optimizers = []
        for network in ("G", "D"):
            groups = [{**group, "params": [p for p in group["params"] if p.requires_grad]}
                      for group in self.parameter_groups[network]]
            groups = [group for group in groups if group["params"]]
            optimizer = self.host.guarded(entry.plugin, entry.value, groups, betas=(train.beta1, train.beta2))
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise PluginError(f"optimizer {self.host.origin(self.host.optimizers, train.optimizer)} returned a"
                                  f" {type(optimizer).__name__}, expected a torch.optim.Optimizer")
            optimizers.append(optimizer)
        self.optimizer_g, self.optimizer_d = optimizers

    def _collect_transforms(self) -> None:
        """The image transforms every discriminator pass goes through, in their declared order."""
        found = [pair for contribution in self.host.hook.ganforge_discriminator_transforms(run=self)
                 for pair in contribution]
        names = [name for name, _ in found]
        if len(set(names)) != len(names):
            raise PluginError(f"two plugins contribute an image transform of one name: {', '.join(sorted(names))}")
        self.transforms = sorted(found, key=lambda pair: (getattr(pair[1], "order", 0), pair[0]))

    # -- what the step calls ---------------------------------------------------------------------

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` through every transform (augmentation) before the discriminator sees them,
        each drawing from its own stream ``transform/<name>``."""
        for name, transform in self.transforms:
            images = transform(images, self.rng(f"transform/{name}"))
        return images

    def real_conditions(self, labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What conditioned discriminator heads see for a real batch (``ganforge_real_conditions``)."""
        merged: dict[str, torch.Tensor] = {}
        for contribution in self.host.hook.ganforge_real_conditions(run=self, labels=labels):
            merged.update(contribution)
        return merged

    def generator_forward(self, latents: dict[str, torch.Tensor], generator: nn.Module | None = None) -> torch.Tensor:
        """G's images in [-1, 1] for ``latents``: the concatenated input row, and the latents
        themselves as ``conditions`` for a generator whose forward takes them (conditional BN)."""
        generator = self.generator if generator is None else generator
        row = self.generator_input(latents)
        return generator(row, conditions=latents) if self._generator_takes_conditions else generator(row)

    def inference_generator(self) -> nn.Module:
        """The generator behind pictures, traversals, ``load_generator`` and metrics: a plugin may
        offer another (an exponential moving average) through ``ganforge_inference_generator``."""
        offered = self.host.hook.ganforge_inference_generator(run=self)
        return self.generator if offered is None else offered

    # -- latents -------------------------------------------------------------------------------

    @property
    def input_dim(self) -> int:
        return sum(distribution.input_dim for distribution in self.inputs.values())

    def autocast(self) -> contextlib.AbstractContextManager:
        """The precision of the training passes: bf16 autocast with ``train.precision = "bf16"``
        (matrix products and convolutions in bf16), else nothing. The step casts every output
        back to float32 before any loss is computed from it."""
        if self.recipe.train.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def training_latents(self) -> dict[str, torch.Tensor]:
        """One step's latents: the global batch drawn from the run's stream, this rank's rows of it."""
        latents = self.sample_latents(self.recipe.train.batch_size)
        return {name: self.ranks.share(values) for name, values in latents.items()}

    def sample_latents(self, n: int, rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One batch of every generator input, drawn in a fixed order from ``rng`` (the run's own by default)."""
        rng = rng if rng is not None else self.latent_rng
        return {name: distribution.sample(n, rng, self.device) for name, distribution in self.inputs.items()}

    def generator_input(self, latents: dict[str, torch.Tensor]) -> torch.Tensor:
        """The generator's input row: the noise, then each extra input in name order."""
        try:
            return torch.cat([latents[name] for name in self.inputs], dim=1)
        except KeyError as missing:
            raise GanforgeError(f"latents lack the generator input {missing}") from None

    @torch.inference_mode()
    def generate(self, latents: dict[str, torch.Tensor]) -> torch.Tensor:
        """Images in [0, 1] for ``latents`` from the inference generator in eval mode (BN running
        statistics)."""
        generator = self.inference_generator()
        was_training = generator.training
        generator.eval()
        try:
            images = self.generator_forward(latents, generator)
        finally:
            generator.train(was_training)
        return images.add(1).div(2).clamp(0, 1)
