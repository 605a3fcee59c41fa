"""TOML recipes: the schema, strict validation, ``--set`` overrides, and writing the resolved recipe.

Validation happens before anything heavy starts. Every error is a :class:`RecipeError` naming the
file and the dotted key, with the allowed values or a "did you mean".
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .checks import (MAX_INT, below_one, between, check_table_keys, coerce, device_name, folder_path,
                     learning_rate, non_negative, one_of, path_text, positive, safe_name, shown_key, type_name)
from .data import PARTS, SPLITS
from .errors import RecipeError
from .plugin_spec import PluginSpec, legacy_spec
from .pluginmanager import DISABLE_ENV, disabled_plugins
from .registry import did_you_mean, unknown_name_message
from .schedule import lr_factors_problem
from .toml_writer import _escape, dump_toml

__all__ = ["MAX_INT", "SCHEMA", "Field", "Recipe", "dump_toml", "load_recipe", "overridden_recipe", "validate"]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_IMAGE_SIZE = 4096
MAX_GENERATED_IMAGES = 10_000_000  # 7.8 GB of 28 px sprites already
MAX_NOISE_DIM = 65_536
MAX_D_STEPS = 1000
MAX_ACCUMULATE = 1000
MAX_THREADS = 1024
PRECISIONS = ("fp32", "bf16")
MEMORY_FORMATS = ("auto", "channels-last", "contiguous")
#: torch.compile's modes; "reduce-overhead" also captures each compiled pass as a CUDA graph (on a GPU)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class Field:
    """One recipe key: its default, its type, and an optional check of the value."""

    default: Any
    kind: type
    check: Callable[[Any], str | None] | None = None  # returns a complaint, or None when fine
    registry: str = ""  # the plugin registry the value must name


#: The core's recipe keys. Scripts depend on these names: rename none of them.
SCHEMA: dict[str, dict[str, Field]] = {
    "run": {
        "name": Field("", str, safe_name),  # "" becomes the recipe file's stem
        "seed": Field(0, int, non_negative),
        "out_dir": Field("runs", str, folder_path),
        "device": Field("cpu", str, device_name),
    },
    "data": {
        "name": Field("shapes", str, registry="datasets"),
        "root": Field("", str, path_text),  # "" means $GANFORGE_DATA_ROOT, else ./data
        "split": Field("train", str, one_of(*SPLITS)),
        "download": Field(False, bool),
        "image_size": Field(0, int, between(0, MAX_IMAGE_SIZE)),  # 0 keeps the dataset's size
        "size": Field(0, int, between(0, MAX_GENERATED_IMAGES)),  # generated datasets: how many images (0: default)
        "holdout": Field(0, int, between(0, MAX_GENERATED_IMAGES)),  # images kept out of training, for evaluation
        "stream": Field(False, bool),  # image-folder: leave images in their files, decode each batch in workers
        "workers": Field(2, int, between(0, 64)),  # DataLoader processes for streamed data (0: the training process)
    },
    "model": {
        "name": Field("dcgan", str, registry="models"),
        "options": Field({}, dict),  # passed to the model family's build as keywords (resnet: g_width, d_width)
    },
    "latent": {
        "noise": Field("normal", str, registry="latents"),
        "noise_dim": Field(100, int, between(1, MAX_NOISE_DIM)),
        "noise_options": Field({}, dict),  # options of the noise's distribution, e.g. { low = -1.0 }
    },
    "train": {
        "steps": Field(1000, int, positive),
        "batch_size": Field(64, int, positive),
        # Micro-batches of batch_size per D and per G update: an update on accumulate x batch_size
        # images in a batch_size's memory (ganforge.accumulation, docs/architecture.md)
        "accumulate": Field(1, int, between(1, MAX_ACCUMULATE)),
        "d_steps": Field(0, int, between(0, MAX_D_STEPS)),  # D updates per G update; 0: the plugins' choice, else 1
        "g_lr": Field(2e-4, float, learning_rate),
        "d_lr": Field(2e-4, float, learning_rate),
        # [[steps done, factor], ...]: G's and D's rates times each factor from that step on (ganforge.schedule)
        "lr_factors": Field([], list, lr_factors_problem),
        "beta1": Field(0.5, float, below_one),
        "beta2": Field(0.999, float, below_one),
        "log_every": Field(50, int, positive),
        "sample_every": Field(500, int, positive),
        "checkpoint_every": Field(1000, int, positive),
        "keep_checkpoints": Field(3, int, non_negative),  # periodic ones kept besides last.pt
        "threads": Field(0, int, between(0, MAX_THREADS)),  # 0 keeps torch's default
        "compile": Field(False, bool),  # torch.compile the networks (docs/performance.md: slower on small CPUs)
        # with train.compile: torch.compile's mode; "reduce-overhead" replays CUDA graphs on a GPU
        "compile_mode": Field("default", str, one_of(*COMPILE_MODES)),
        "precision": Field("fp32", str, one_of(*PRECISIONS)),  # bf16: autocast the passes; losses stay fp32
        "memory_format": Field("auto", str, one_of(*MEMORY_FORMATS)),  # auto: channels-last from 32 px up
        "optimizer": Field("adam", str, registry="optimizers"),
    },
    "loss": {
        "name": Field("non-saturating", str, registry="losses"),
    },
    # Metrics computed while training (ganforge.scoring); none of these keys changes what is trained.
    "eval": {
        "every": Field(0, int, non_negative),  # steps between evaluations; 0: none during training
        "metrics": Field([], list, registry="metrics"),  # metric names; []: every one that can run
        "n": Field(1000, int, between(100, 100_000)),  # real and generated images per evaluation
        "seed": Field(0, int, non_negative),  # the generated latents and the real images chosen
        "on": Field("train", str, one_of(*PARTS)),  # score against the training or the data.holdout images
        "best": Field("", str),  # a figure (e.g. "fid", "digit/accuracy"): keep checkpoints/best.pt by it
        "direction": Field("auto", str, one_of("auto", "min", "max")),  # auto: min for fid/kid, else max
        "evaluator": Field("", str, path_text),  # a feature network file, or "inception"; "": the dataset's default
        "inception_weights": Field("", str, path_text),  # Inception-v3's weights file ("": $GANFORGE_INCEPTION_WEIGHTS)
        "train_evaluator": Field(False, bool),  # train the default feature network if it is missing
    },
}
PLUGINS_SECTION = "plugins"


class Recipe:
    """A validated recipe: every key present, with defaults filled in.

    Sections read as attributes (``recipe.train.steps``); ``recipe.plugins`` maps each switched-on
    plugin table's name to its settings.
    """

    def __init__(self, values: dict[str, Any], source: str = ""):
        self.values = values
        self.source = source

    def __getattr__(self, section: str) -> Any:
        values = self.__dict__.get("values", {})
        if section == PLUGINS_SECTION:
            return values.get(PLUGINS_SECTION, {})
        if section in values:
            return SimpleNamespace(**values[section])
        raise AttributeError(section)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.values)

    def to_toml(self) -> str:
        return dump_toml(self.values)


def parse_toml(text: str, source: str) -> dict:
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"invalid TOML: {error}", source=source) from None
    except RecursionError:
        raise RecipeError("invalid TOML: arrays or tables nested too deeply", source=source) from None
    check_integers(values, "", source)
    return values


def check_integers(value: Any, key: str, source: str = "") -> None:
    """TOML integers are 64-bit; ``tomllib`` reads any size, which would overflow later, far from
    the recipe line that caused it."""
    if isinstance(value, dict):
        for name, item in value.items():
            check_integers(item, f"{key}.{shown_key(name)}" if key else shown_key(name), source)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_integers(item, f"{key}[{index}]", source)
    elif isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise RecipeError(f"invalid TOML: the integer {value} does not fit in 64 bits", source=source, key=key)


def read_recipe_file(path: Path) -> dict:
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError("no such recipe file", source=source) from None
    except IsADirectoryError:
        raise RecipeError("is a folder; expected a .toml recipe file", source=source) from None
    except OSError as error:
        raise RecipeError(f"cannot read the recipe: {error.strerror}", source=source) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError("is not UTF-8 text; a recipe is a TOML file", source=source) from None
    return parse_toml(text, source)


def parse_override(assignment: str) -> tuple[list[str], str]:
    """``"train.steps=100"`` -> (["train", "steps"], "100")."""
    key, sep, value = assignment.partition("=")
    path = key.strip().split(".")
    if not sep or len(path) < 2 or not all(path):
        raise RecipeError("expected SECTION.KEY=VALUE", source=shown_override(assignment))
    return path, value.strip()


def typed_override(text: str, kind: type | None, key: str) -> Any:
    """The ``--set`` text typed as the recipe's value at ``key``."""
    if kind is str:
        return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" else text
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except (tomllib.TOMLDecodeError, RecursionError):
        expected = type_name(kind) if kind else "a TOML value"
        raise RecipeError(f"value {text!r} is not {expected}", key=key) from None
    check_integers(value, key)
    return value


def apply_overrides(raw: dict, overrides: list[str], schema_kind: Callable[[list[str]], type | None]) -> dict:
    """A copy of ``raw`` with each ``--set`` applied (typed by ``schema_kind(path)``)."""
    raw = copy.deepcopy(raw)
    for assignment in overrides:
        try:
            path, text = parse_override(assignment)
            key = ".".join(map(shown_key, path))
            table = raw
            for part in path[:-1]:
                table = table.setdefault(part, {})
                if not isinstance(table, dict):
                    raise RecipeError(f"cannot set a key inside {type_name(type(table))}", key=key)
            table[path[-1]] = typed_override(text, schema_kind(path), key)
        except RecipeError as error:
            raise from_override(error, assignment) from None
    return raw


def shown_override(assignment: str) -> str:
    """``--set KEY=VALUE`` as messages show it: on one line, whatever characters it holds."""
    return "--set " + "".join(ch if ch.isprintable() else _escape(ch) for ch in assignment)


def from_override(error: RecipeError, assignment: str) -> RecipeError:
    """``error`` blamed on the ``--set`` that caused it, not on the recipe file."""
    blamed = type(error)(error.detail, source=shown_override(assignment))
    blamed.key = error.key
    return blamed


def blame(error: RecipeError, raw: dict, overrides: list[str], source: str) -> RecipeError:
    """A validation error located where the bad value came from: the last ``--set`` that set the
    key (or a table or array holding it), or that made the table the key names; else the file."""
    if error.key:
        for assignment in reversed(overrides):
            set_key = ".".join(map(shown_key, parse_override(assignment)[0]))
            holds = error.key == set_key or error.key.startswith((f"{set_key}.", f"{set_key}["))
            made = set_key.startswith(f"{error.key}.") and not _has_key(raw, error.key)
            if holds or made:
                return from_override(error, assignment)
    return error.located(source)


def _has_key(values: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(values, dict) or part not in values:
            return False
        values = values[part]
    return True


def schema_kind(path: list[str], plugin_specs: Mapping[str, PluginSpec | dict]) -> type | None:
    if len(path) == 2 and path[0] in SCHEMA and path[1] in SCHEMA[path[0]]:
        return SCHEMA[path[0]][path[1]].kind
    if len(path) == 3 and path[0] == PLUGINS_SECTION and path[1] in plugin_specs:
        option = as_spec(path[1], plugin_specs[path[1]]).options.get(path[2])
        return option.kind if option else None
    return None


def as_spec(name: str, spec: PluginSpec | dict) -> PluginSpec:
    """A table's spec; a plain dict of defaults (the older form) becomes one."""
    return spec if isinstance(spec, PluginSpec) else legacy_spec(name, dict, spec)


def validate(raw: dict, names: dict[str, list[str]], plugin_defaults: dict[str, dict], source: str,
             default_name: str = "") -> Recipe:
    """Check ``raw`` against the schema and the registries; return it with defaults filled in.

    ``names`` maps a registry (``"models"``, ``"datasets"``, ...) to its registered names;
    ``plugin_defaults`` maps each ``[plugins.<name>]`` table that can be switched on to its
    :class:`~ganforge.plugin_spec.PluginSpec` (or, in the older form, a dict of its defaults).
    """
    try:
        return _validate(raw, names, plugin_defaults, default_name)
    except RecipeError as error:
        raise error.located(source) from None


def _validate(raw: dict, names: dict[str, list[str]], plugin_defaults: dict[str, dict], default_name: str) -> Recipe:
    check_table_keys(raw, [*SCHEMA, PLUGINS_SECTION], "")
    values: dict[str, Any] = {}
    for section, fields in SCHEMA.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise RecipeError(f"must be a table ([{section}]), got {type_name(type(table))}", key=section)
        check_table_keys(table, list(fields), f"{section}.")
        values[section] = {}
        for key, field in fields.items():
            dotted = f"{section}.{key}"
            value = coerce(table[key], field.kind, dotted) if key in table else copy.deepcopy(field.default)
            complaint = field.check(value) if field.check else None
            if complaint:
                raise RecipeError(f"{complaint}, got {value!r}", key=dotted)
            for index, name in enumerate(value if field.kind is list else [value]):
                item_key = f"{dotted}[{index}]" if field.kind is list else dotted
                if field.registry and not isinstance(name, str):
                    raise RecipeError(f"must be a string, got {name!r}", key=item_key)
                if field.registry and name not in names.get(field.registry, []):
                    message = unknown_name_message("name", name, names.get(field.registry, []), plugin_hint=True)
                    raise RecipeError(message, key=item_key)
            values[section][key] = value
    if not values["run"]["name"]:
        values["run"]["name"] = default_name or "run"
    if values["eval"]["best"] and not values["eval"]["every"]:
        raise RecipeError("keeps best.pt only when the run is scored while training: set eval.every too"
                          " (e.g. eval.every = 500)", key="eval.best")
    values[PLUGINS_SECTION] = validate_plugin_tables(raw.get(PLUGINS_SECTION, {}), plugin_defaults)
    return Recipe(values)


def validate_plugin_tables(tables: Any, plugin_specs: Mapping[str, PluginSpec | dict]) -> dict[str, dict]:
    if not isinstance(tables, dict):
        raise RecipeError(f"must be a table of plugin tables, got {type_name(type(tables))}", key=PLUGINS_SECTION)
    resolved: dict[str, dict] = {}
    for name, table in tables.items():
        key = f"{PLUGINS_SECTION}.{shown_key(name)}"
        if name not in plugin_specs:
            known = sorted(plugin_specs)
            hint = did_you_mean(name, known)
            raise RecipeError(f"no plugin takes this table;{hint} known: {', '.join(known) or '(none)'}"
                              f"{disabled_hint(name)}", key=key)
        resolved[name] = as_spec(name, plugin_specs[name]).settings(table, key)
    return resolved


def disabled_hint(table: str) -> str:
    """Why a table's plugin may be missing: ``GANFORGE_DISABLE_PLUGINS`` switched it off."""
    disabled = disabled_plugins()
    if table in disabled:
        return (f"; plugin {table!r} is disabled by {DISABLE_ENV}: remove [plugins.{table}] from the recipe,"
                f" or unset {DISABLE_ENV}")
    if disabled:
        return (f"; {DISABLE_ENV} disables {', '.join(sorted(disabled))}: if one of them takes this table, remove"
                f" [plugins.{table}] from the recipe, or unset {DISABLE_ENV}")
    return ""


def load_recipe(path: Path, overrides: list[str], names: dict[str, list[str]],
                plugin_defaults: dict[str, dict]) -> Recipe:
    """Read, override and validate the recipe at ``path``."""
    return overridden_recipe(read_recipe_file(path), overrides, names, plugin_defaults, str(path), path.stem)


def overridden_recipe(raw: dict, overrides: list[str], names: dict[str, list[str]], plugin_defaults: dict[str, dict],
                      source: str, default_name: str = "") -> Recipe:
    """``raw`` (a recipe read from ``source``) with ``overrides`` applied, validated; a mistake
    names the ``--set`` it came from, or else ``source``."""
    values = apply_overrides(raw, overrides, lambda p: schema_kind(p, plugin_defaults))
    try:
        recipe = _validate(values, names, plugin_defaults, default_name)
    except RecipeError as error:
        raise blame(error, raw, overrides, source) from None
    recipe.source = source
    return recipe
