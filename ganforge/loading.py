"""Reading recipes and checkpoints into runs, for the CLI and the Python API alike.

Nothing here imports the command line (typer, rich) or the training loop: ``ganforge.load_generator``
goes through this module only.
"""

from __future__ import annotations

from pathlib import Path

from .checkpoint import does_not_fit, load_checkpoint, load_weights, restore_plugin_states
from .errors import RecipeError
from .pluginmanager import PluginHost, make_plugin_host, plugin_specs, registered_names
from .recipe import Recipe, apply_overrides, load_recipe, schema_kind, validate
from .run import Run, resolve_device


def read_recipe(path: Path, overrides: list[str], host: PluginHost) -> Recipe:
    return load_recipe(Path(path), list(overrides), registered_names(host), plugin_specs(host))


def recipe_from_dict(values: dict, host: PluginHost, source: str) -> Recipe:
    """A recipe stored in a checkpoint, validated again against the plugins installed now."""
    recipe = validate(values, registered_names(host), plugin_specs(host), source)
    recipe.source = source
    return recipe


def run_directory(recipe: Recipe) -> Path:
    return Path(recipe.run.out_dir) / recipe.run.name


def run_from_checkpoint(path: Path, host: PluginHost | None = None, with_data: bool = False,
                        overrides: list[str] = (), device: str | None = None) -> tuple[Run, dict]:
    """The models of a checkpoint's run, weights and plugin states loaded; its dataset too when
    ``with_data``. Leaves torch's global generator and thread count as they were.

    ``overrides`` (``--set``) apply to the stored recipe, e.g. a ``data.root`` valid on this
    machine. ``device`` is where to load it (``"cpu"``, ``"cuda"``, ...); by default the device it
    was trained on when this machine has it, else the CPU.
    """
    host = host or make_plugin_host()
    state = load_checkpoint(path)
    source = f"{path} (stored recipe)"
    values = apply_overrides(state["recipe"], list(overrides), lambda p: schema_kind(p, plugin_specs(host)))
    values["run"]["device"] = device or loadable_device(values["run"].get("device", "cpu"))
    recipe = recipe_from_dict(values, host, source)
    shape = None if with_data else tuple(state["image_shape"])
    run = Run(recipe, host, Path(path).parent.parent, image_shape=shape, keep_global_state=True)
    with does_not_fit(path):
        load_weights(run, state)
    restore_plugin_states(run, state, path)
    run.step = int(state["step"])
    return run, state


def loadable_device(trained_on: str) -> str:
    """Where a checkpoint trained on ``trained_on`` can be loaded here: there if this machine has
    it, else the CPU (a CUDA checkpoint opens on a machine without a GPU)."""
    try:
        resolve_device(trained_on)
    except RecipeError:
        return "cpu"
    return trained_on
