"""Helpers for a plugin's own tests (docs/testing-plugins.md).

Build a run from a recipe (a dict or a TOML file) with ganforge's built-in plugins and yours,
and nothing else installed on the machine; run one real step of it on a tiny batch and look at
what your hooks received and added (:func:`step_once`); or train a few steps into a folder, as
``ganforge run`` writes them (:func:`train_steps`). The step is the one ``ganforge check`` runs.
Nothing here imports the command line (typer, rich).
"""

from __future__ import annotations

import copy
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .checkpoint import seed_global_rngs
from .onestep import STEP_IMAGES, StepResult, try_one_step
from .outputs import RunOutputs
from .pluginmanager import (BUILTIN_DISTRIBUTION, PluginHost, make_plugin_host, plugin_specs,
                            registered_names)
from .recipe import Recipe, load_recipe, overridden_recipe
from .run import Run
from .training import train

__all__ = ["StepResult", "build_run", "make_host", "read_recipe", "step_once", "tiny_recipe", "train_steps"]

#: A recipe that trains in about a second on a CPU: 256 generated 28 px sprites, batch 16.
TINY_RECIPE = {
    "run": {"name": "tiny", "seed": 0, "out_dir": "runs"},
    "data": {"name": "shapes", "image_size": 28, "size": 256},
    "model": {"name": "dcgan-28"},
    "latent": {"noise": "normal", "noise_dim": 8},
    "train": {"steps": 4, "batch_size": 16, "log_every": 2, "sample_every": 2, "checkpoint_every": 1000,
              "keep_checkpoints": 0},
}


def tiny_recipe(out_dir: str | Path = "runs", **sections: dict) -> dict:
    """:data:`TINY_RECIPE` writing under ``out_dir``, each of ``sections`` merged into its table:
    ``tiny_recipe(tmp_path, plugins={"bcr": {}}, train={"steps": 2})``."""
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["run"]["out_dir"] = str(out_dir)
    for section, values in sections.items():
        recipe.setdefault(section, {}).update(values)
    return recipe


def make_host(*plugins: Any, installed: bool = False) -> PluginHost:
    """A fresh plugin host: ganforge's built-ins and ``plugins`` (modules or objects with
    ``@hookimpl`` functions, or ``(name, plugin)`` pairs); with ``installed``, every installed
    package's entry points instead of the built-ins alone (to test that yours is found)."""
    return make_plugin_host(plugins=[_named(plugin) for plugin in plugins],
                            distributions=None if installed else {BUILTIN_DISTRIBUTION})


def _named(plugin: Any) -> tuple[str, Any]:
    if isinstance(plugin, tuple):
        return plugin
    if isinstance(plugin, types.ModuleType):
        return plugin.__name__, plugin
    return type(plugin).__name__, plugin


def read_recipe(recipe: dict | str | Path, host: PluginHost, overrides: Iterable[str] = ()) -> Recipe:
    """A validated recipe from a dict or a TOML file, with ``--set``-style ``overrides``
    (``"plugins.jitter.amount=0.05"``); a mistake is the :class:`~ganforge.errors.RecipeError`
    ``ganforge run`` would report."""
    names, defaults = registered_names(host), plugin_specs(host)
    if isinstance(recipe, dict):
        return overridden_recipe(recipe, list(overrides), names, defaults, "recipe (dict)", "tiny")
    return load_recipe(Path(recipe), list(overrides), names, defaults)


def build_run(recipe: dict | str | Path, *plugins: Any, overrides: Iterable[str] = (),
              host: PluginHost | None = None) -> Run:
    """The run ``ganforge run`` would build (data, models, heads, optimizers, every setup hook),
    before its first step; built with ``host`` if given, else :func:`make_host` of ``plugins``."""
    host = host or make_host(*plugins)
    validated = read_recipe(recipe, host, overrides)
    return Run(validated, host, Path(validated.run.out_dir) / validated.run.name)


def step_once(recipe: dict | str | Path, *plugins: Any, overrides: Iterable[str] = (), images: int = STEP_IMAGES,
              host: PluginHost | None = None) -> StepResult:
    """One real training step of the recipe on ``images`` images (``run.d_steps`` D updates, one
    G update, then ``ganforge_step_end``), writing nothing. Returns the run, the contexts your
    loss-term hooks received (``d_ctx``, ``g_ctx``) and the logged terms (``logs``)."""
    return try_one_step(build_run(recipe, *plugins, overrides=overrides, host=host), images)


class _Silent:
    """Progress that shows nothing: tests read ``metrics.jsonl`` instead."""

    def start(self, total: int, completed: int, images: int) -> None: ...
    def log(self, record: dict) -> None: ...
    def advance(self, step: int, images: int) -> None: ...
    def note(self, line: str) -> None: ...
    def stop(self) -> None: ...


def train_steps(recipe: dict | str | Path, out_dir: str | Path, *plugins: Any, steps: int = 2,
                overrides: Iterable[str] = (), host: PluginHost | None = None) -> Run:
    """Train ``steps`` steps into ``out_dir/<run.name>/`` (``recipe.toml``, ``metrics.jsonl``,
    samples, ``checkpoints/last.pt``), as ``ganforge run`` does, silently; returns the finished
    run. The folder must not hold a run already."""
    host = host or make_host(*plugins)
    validated = read_recipe(recipe, host, [f"run.out_dir={out_dir}", f"train.steps={steps}", *overrides])
    outputs = RunOutputs(Path(validated.run.out_dir) / validated.run.name, validated.train.keep_checkpoints)
    outputs.check_start(False)
    seed_global_rngs(validated.run.seed)
    run = Run(validated, host, outputs.directory)
    outputs.prepare(validated.to_toml(), resume=False)
    train(run, outputs, _Silent())
    return run
