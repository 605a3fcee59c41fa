"""Building a run from a validated recipe, in the one order the hooks document.

:func:`set_up` owns the setup: every setup hook is called from here and nowhere else, and each
step reads only what the steps before it made. The road from a recipe to the first step:

1. the run plugins' tables become objects (each through its :class:`~ganforge.plugin_spec.PluginSpec`);
2. the objective, model family and plugins are checked to train together
   (:func:`~ganforge.plugin_spec.combination_error`);
3. the dataset is loaded through its plugin;
4. the generator's inputs are collected (the noise, ``ganforge_generator_inputs``);
5. the model family builds G and D's trunk, the heads join D (``ganforge_discriminator_heads``);
6. ``ganforge_models_built`` changes the networks (spectral norm, swapped norms, an average);
7. D steps per G step (``ganforge_discriminator_steps``);
8. the optimizer groups, matched to the networks as ``ganforge_models_built`` left them, then the optimizers;
9. the image transforms (``ganforge_discriminator_transforms``);
10. the latent streams, the fixed sample batch and the data order.
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from . import schedule
from .contracts import check_data, check_latent, check_loss, check_models
from .data import Batcher, DataSettings, FileImages, ImageData, resolve_data_root, select_holdout
from .distributed import Ranks, training_device
from .errors import PluginError, RecipeError
from .latents import LatentDistribution
from .models import Discriminator, DiscriminatorWithHeads, takes_conditions
from .plugin_spec import combination_error
from .pluginmanager import PluginHost
from .recipe import MAX_D_STEPS, Recipe
from .streams import RandomStreams

if TYPE_CHECKING:
    from .run import Run

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


def set_up(run: Run, recipe: Recipe, host: PluginHost, directory: Path, data: ImageData | None,
           image_shape: tuple[int, int, int] | None, keep_global_state: bool, ranks: Ranks) -> None:
    """Fill ``run`` from ``recipe``, in the order of this module's docstring."""
    run.recipe, run.host, run.directory, run.ranks = recipe, host, Path(directory), ranks
    run.device = training_device(resolve_device(recipe.run.device), ranks)
    run.step, run.images_seen, run.d_steps = 0, 0, 1
    run.plugins, run.specs, run.inputs, run.transforms, run.notes = {}, {}, {}, [], []
    run.eval_best = None  # the best eval.best figure so far (ganforge.scoring)
    run.streams = RandomStreams(recipe.run.seed, ranks.rank)
    if recipe.train.threads and not keep_global_state:
        torch.set_num_threads(recipe.train.threads)
    seeding = torch.random.fork_rng(devices=[]) if keep_global_state else contextlib.nullcontext()
    try:
        with seeding:
            torch.manual_seed(recipe.run.seed)  # model initialisation draws from torch's global generator
            _set_up_models(run, data, image_shape)
    except RecipeError as error:
        raise (error.located(recipe.source) if not error.source else error) from None  # plugins name the key
    run.latent_rng = run.rng("latents", "cpu")
    run.fixed_latents = run.sample_latents(FIXED_SAMPLES, run.rng("fixed", "cpu"))
    if run.data is not None:
        run.batcher = _batcher(run)
    # What a training step calls: the modules themselves, or a wrapper (DDP) set by the loop.
    run.training_generator, run.training_discriminator = run.generator, run.discriminator


def _set_up_models(run: Run, data: ImageData | None, image_shape: tuple[int, int, int] | None) -> None:
    _switch_on_plugins(run)
    loss_name = run.recipe.loss.name
    run.loss = run.host.losses.get(loss_name)
    tables = {name: (run.specs[name], run.recipe.plugins[name], plugin) for name, plugin in run.plugins.items()}
    # A plugin registered through its entry point may say what it provides in an attribute.
    elsewhere = frozenset(need for plugin in run.host.pm.get_plugins() if plugin not in run.plugins.values()
                          for need in getattr(plugin, "provides", ()) if isinstance(need, str))
    model = (run.recipe.model.name, run.host.models.get(run.recipe.model.name))
    refused = combination_error(loss_name, run.loss, tables, elsewhere, model)
    if refused:
        raise RecipeError(refused[1], key=refused[0])
    if image_shape is None:
        run.data = data if data is not None else load_data(run.recipe, run.host)
        image_shape = run.data.image_shape
    else:
        run.data = None
    run.image_shape = tuple(image_shape)
    _collect_inputs(run)
    _build_models(run)
    built = {network: {id(p) for p in module.parameters()}
             for network, module in (("G", run.generator), ("D", run.discriminator))}
    run.host.hook.ganforge_models_built(run=run)
    run.d_steps = _discriminator_steps(run)
    _complete_parameter_groups(run, built)
    _make_optimizers(run)
    _collect_transforms(run)


def _switch_on_plugins(run: Run) -> None:
    host = run.host
    for name, settings in run.recipe.plugins.items():
        entry = host.run_plugins.entry(name)
        try:
            plugin = host.guarded(entry.plugin, entry.value, settings=settings)
        except RecipeError as error:
            key = f"plugins.{name}.{error.key}" if error.key else f"plugins.{name}"
            raise RecipeError(error.detail, key=key) from None
        spec = entry.extra["spec"]
        if spec.declared and not spec.stateful and hasattr(plugin, "state_dict"):
            raise PluginError(f"plugin table {host.origin(host.run_plugins, name)}: its object has state_dict but its"
                              " PluginSpec does not declare stateful=True, so its state would not be checkpointed")
        host.register(plugin, f"{name}.run")
        run.plugins[name], run.specs[name] = plugin, spec


def _collect_inputs(run: Run) -> None:
    latent = run.recipe.latent
    run.inputs = {NOISE: run.make_distribution(latent.noise, latent.noise_dim, latent.noise_options,
                                               "latent.noise_options", "latent.noise")}
    extra: list[tuple[str, LatentDistribution]] = []
    for contribution in run.host.hook.ganforge_generator_inputs(run=run):
        extra.extend(contribution)
    for name, distribution in sorted(extra, key=lambda pair: pair[0]):
        if name in run.inputs:
            raise PluginError(f"generator input {name!r} is contributed twice (or clashes with the noise {NOISE!r})")
        if not isinstance(distribution, LatentDistribution):
            raise PluginError(f"generator input {name!r} is a {type(distribution).__name__}, not a LatentDistribution")
        run.inputs[name] = distribution
    for name, distribution in run.inputs.items():
        check_latent(distribution, run.describe_input(name), run.device)


def _build_models(run: Run) -> None:
    recipe, host = run.recipe, run.host
    entry = host.models.entry(recipe.model.name)
    options = dict(recipe.model.options)  # only when given: a family that takes none keeps working
    if "input_layout" in inspect.signature(entry.value).parameters:
        # What each part of the input row is, for a family that treats them differently (BigGAN's
        # hierarchical noise and conditional batch norm, StyleGAN2's mapping of z and labels).
        options["input_layout"] = {name: distribution.input_dim for name, distribution in run.inputs.items()}
    try:
        generator, trunk = host.guarded(entry.plugin, entry.value, image_shape=run.image_shape, input_dim=run.input_dim,
                                        **options)
    except RecipeError as error:
        raise RecipeError(error.detail, key=error.key or "model.name") from None
    except PluginError as error:
        given = recipe.model.options
        if not (given and isinstance(error.__cause__, TypeError) and "keyword" in str(error.__cause__)):
            raise
        raise RecipeError(f"{recipe.model.name} does not take these options ({', '.join(given)}):"
                          f" {error.__cause__}", key="model.options") from None
    if not isinstance(trunk, Discriminator):
        raise PluginError(f"model {host.origin(host.models, recipe.model.name)} built a"
                          f" {type(trunk).__name__}, not a ganforge.models.Discriminator")
    generator, trunk = generator.to(run.device), trunk.to(run.device)
    run.generator_takes_conditions = takes_conditions(generator)
    probe = run.sample_latents(2, torch.Generator().manual_seed(0)) if run.generator_takes_conditions else None
    check_models(generator, trunk, run.image_shape, run.input_dim, host.origin(host.models, recipe.model.name),
                 run.device, probe)
    heads = _named_modules(host.hook.ganforge_discriminator_heads(run=run, feature_dim=trunk.feature_dim), "head")
    networks = _named_modules(host.hook.ganforge_discriminator_networks(run=run, image_shape=run.image_shape),
                              "network")
    run.generator = generator
    run.discriminator = DiscriminatorWithHeads(trunk, dict(sorted(heads.items())),
                                               dict(sorted(networks.items()))).to(run.device)
    if run.channels_last():
        run.generator.to(memory_format=torch.channels_last)
        run.discriminator.to(memory_format=torch.channels_last)
        run.note("convolution weights in channels-last memory format (train.memory_format)")
    check_loss(run.loss, host.origin(host.losses, recipe.loss.name))
    # Made before ganforge_models_built so that a plugin can edit them there (another rate, a
    # group of its own); completed after it by _complete_parameter_groups.
    run.parameter_groups = {"G": [{"params": list(generator.parameters()), "lr": recipe.train.g_lr}],
                            "D": run.discriminator_groups()}


def _named_modules(contributions: list, what: str) -> dict[str, nn.Module]:
    """The ``(name, module)`` pairs every plugin returned, by name; a name given twice is a plugin error."""
    modules: dict[str, nn.Module] = {}
    for contribution in contributions:
        for name, module in contribution:
            if name in modules:
                raise PluginError(f"discriminator {what} {name!r} is contributed twice")
            modules[name] = module
    return modules


def _discriminator_steps(run: Run) -> int:
    """D updates per G update: ``train.d_steps`` when set, else what the plugins ask for
    (``ganforge_discriminator_steps``: WGAN-GP's critic wants 5), else 1."""
    if run.recipe.train.d_steps:
        return run.recipe.train.d_steps
    asked = {name.removesuffix(".run"): steps for name, steps in run.host.results_by_plugin(
        "ganforge_discriminator_steps", run=run) if steps is not None}
    for name, steps in asked.items():
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_D_STEPS:
            raise PluginError(f"plugin {name!r} asked for {steps!r} discriminator steps; expected 1 to {MAX_D_STEPS}")
    if len(set(asked.values())) > 1:
        wants = ", ".join(f"{name} {steps}" for name, steps in asked.items())
        raise RecipeError(f"the plugins ask for different discriminator steps per generator step ({wants});"
                          " choose with train.d_steps", key="train.d_steps")
    return next(iter(asked.values()), 1)


def _complete_parameter_groups(run: Run, built: dict[str, set[int]]) -> None:
    """The optimizer groups matched to the networks as ``ganforge_models_built`` left them: the
    parameters of layers a plugin replaced leave their groups, and the parameters of the layers
    it put in (``built`` holds those there before) join the network's first group, at the
    recipe's rate unless that group was given another. Every other edit stays. A plugin that
    swaps layers need not rebuild the groups itself."""
    rates = {"G": run.recipe.train.g_lr, "D": run.recipe.train.d_lr}
    for network, module in (("G", run.generator), ("D", run.discriminator)):
        groups = run.parameter_groups[network]
        present = {id(parameter) for parameter in module.parameters()}
        for group in groups:
            group["params"] = [parameter for parameter in group["params"] if id(parameter) in present]
        grouped = {id(parameter) for group in groups for parameter in group["params"]}
        new = [p for p in module.parameters() if id(p) not in grouped and id(p) not in built[network]]
        if new and groups:
            groups[0]["params"].extend(new)
        elif new:
            groups.append({"params": new, "lr": rates[network]})


def _make_optimizers(run: Run) -> None:
    """The recipe's optimizer over ``parameter_groups`` (frozen parameters left out)."""
    train, host = run.recipe.train, run.host
    entry = host.optimizers.entry(train.optimizer)
    optimizers = []
    for network in ("G", "D"):
        groups = [{**group, "params": [p for p in group["params"] if p.requires_grad]}
                  for group in run.parameter_groups[network]]
        groups = [group for group in groups if group["params"]]
        optimizer = host.guarded(entry.plugin, entry.value, groups, betas=(train.beta1, train.beta2))
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise PluginError(f"optimizer {host.origin(host.optimizers, train.optimizer)} returned a"
                              f" {type(optimizer).__name__}, expected a torch.optim.Optimizer")
        optimizers.append(optimizer)
    run.optimizer_g, run.optimizer_d = optimizers
    run.base_rates = schedule.base_rates(optimizers)  # what train.lr_factors multiplies


def _collect_transforms(run: Run) -> None:
    """The image transforms every discriminator pass goes through, in their declared ``order``."""
    found = [pair for contribution in run.host.hook.ganforge_discriminator_transforms(run=run) for pair in contribution]
    names = [name for name, _ in found]
    if len(set(names)) != len(names):
        raise PluginError(f"two plugins contribute an image transform of one name: {', '.join(sorted(names))}")
    run.transforms = sorted(found, key=lambda pair: (getattr(pair[1], "order", 0), pair[0]))


def _batcher(run: Run) -> Batcher:
    """Batches of a whole update: ``train.accumulate`` micro-batches of ``train.batch_size``, each
    shared over the ranks (ganforge.accumulation)."""
    batch_size, parts, source = run.recipe.train.batch_size, run.recipe.train.accumulate, run.recipe.source
    if batch_size * parts > len(run.data):
        if parts > 1:
            raise RecipeError(f"{parts} micro-batches of train.batch_size {batch_size} are {batch_size * parts} images"
                              f" per update, more than the dataset's {len(run.data)}", source=source,
                              key="train.accumulate")
        raise RecipeError(f"{batch_size} exceeds the dataset's {len(run.data)} images", source=source,
                          key="train.batch_size")
    if batch_size % run.ranks.world_size:
        raise RecipeError(f"{batch_size} (the global batch) does not split evenly over {run.ranks.world_size}"
                          " processes; use a multiple of the process count", source=source, key="train.batch_size")
    ranks = run.ranks
    return Batcher(run.data, batch_size * parts, run.rng("data", "cpu"), run.device,
                   lambda rows: ranks.share(rows, parts), run.recipe.data.workers)
