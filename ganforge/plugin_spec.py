"""What a ``[plugins.<name>]`` plugin declares about itself, in one object.

A :class:`PluginSpec` says everything the core needs before the plugin's object exists: the
table's options (type, default, range or choices, what each does), which objectives it trains
with, what it provides to the run and to other plugins (capabilities), what it requires, what it
cannot be combined with, and whether it keeps state in checkpoints. The core checks a recipe's
table against the options exactly as it checks its own keys (same one-line errors, same "did you
mean"), refuses impossible combinations in one place (:func:`combination_error`), and generates
``ganforge plugins --options`` and docs/plugin-options.md from the specs.

Register one with ``register(PluginSpec(...))`` in ``ganforge_register_run_plugins``. The older
``register(name, factory, defaults)`` still works: its options carry only types, and the
``provides``/``conflicts`` attributes of the object it makes are still read.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .checks import Check, Each, check_table_keys, coerce, type_name

# Capabilities: what a plugin's object offers the run or other plugins, asked for by name through
# ``run.providers(capability)``, never by looking a plugin up by its table name.

#: The critic is Lipschitz-bounded (a gradient penalty, spectral norm): what ``wasserstein`` needs.
LIPSCHITZ = "lipschitz"
#: The object reads codes back from images: ``codes`` maps each code's name to an object with
#: ``kind`` ("categorical", "continuous", ...) and ``size``, and ``predict_codes(run, images)``
#: returns each code's prediction (logits for a categorical code, means for a continuous one).
CODE_READER = "code-reader"
#: The object feeds a class label to the generator as the input ``label``: ``classes`` is how
#: many. One plugin at a time may do it.
CLASS_LABEL = "class-label"
#: Offered by a model family (its build function's ``provides``): the generator maps its input
#: row to per-layer latents and draws the images from them, ``style_latents(inputs)`` -> ``ws``
#: of shape ``(B, layers, w_dim)`` and ``synthesise(ws)`` -> images (StyleGAN's mapping and
#: synthesis networks).
STYLE_LATENTS = "style-latents"

CAPABILITIES = {
    LIPSCHITZ: "the critic is Lipschitz-bounded",
    CODE_READER: "reads codes back from images: .codes, .predict_codes(run, images)",
    CLASS_LABEL: "feeds the class label to the generator: .classes",
    STYLE_LATENTS: "the model family's generator: .style_latents(inputs) -> ws, .synthesise(ws) -> images",
}


@dataclass(frozen=True)
class Option:
    """One key of a plugin's table: its default (whose type the value must have), what it does,
    and a check of its value (:mod:`ganforge.checks`: ``between(1, 100)``, ``one_of("a", "b")``).
    ``changes_training = False`` marks a key a resumed run may change (a log folder)."""

    default: Any
    doc: str = ""
    check: Check | tuple[Check, ...] | None = None
    changes_training: bool = True

    def checks(self) -> tuple[Check, ...]:
        return self.check if isinstance(self.check, tuple) else (self.check,) if self.check else ()

    @property
    def kind(self) -> type:
        return type(self.default)


@dataclass(frozen=True)
class PluginSpec:
    """A ``[plugins.<name>]`` plugin: ``factory(settings)`` makes its per-run object from the
    table's validated settings (every option present).

    ``provides`` is a set of capabilities, or a function of the settings returning one (spectral
    norm that keeps D's batch norms provides no Lipschitz critic). ``requires`` and ``conflicts``
    map a capability (or, for ``conflicts``, another table's name) to the reason, said in the
    error. ``losses`` names the objectives it works with (empty: any). ``stateful``: the object's
    ``state_dict()`` is saved in checkpoints and ``load_state_dict`` restores it on resume.
    ``changes_training = False``: the plugin only observes (a logger), so a resumed run may add
    or drop its table."""

    name: str
    factory: Callable[[dict], Any]
    options: Mapping[str, Option] = field(default_factory=dict)
    doc: str = ""
    provides: frozenset[str] | Callable[[dict], frozenset[str]] = frozenset()
    requires: Mapping[str, str] = field(default_factory=dict)
    conflicts: Mapping[str, str] = field(default_factory=dict)
    losses: tuple[str, ...] = ()
    stateful: bool = False
    changes_training: bool = True
    declared: bool = True  # False: made from the older register(name, factory, defaults)

    def defaults(self) -> dict[str, Any]:
        return {name: copy.deepcopy(option.default) for name, option in self.options.items()}

    def settings(self, table: dict, key: str) -> dict[str, Any]:
        """``table`` (the recipe's ``[plugins.<name>]``, at ``key``) checked against the options
        and completed with their defaults; a mistake is a :class:`~ganforge.errors.RecipeError`
        naming the key."""
        from .errors import RecipeError

        if not isinstance(table, dict):
            raise RecipeError(f"must be a table, got {type_name(type(table))}", key=key)
        check_table_keys(table, list(self.options), f"{key}.")
        settings = self.defaults()
        for name, value in table.items():
            option, where = self.options[name], f"{key}.{name}"
            value = settings[name] = coerce(value, option.kind, where)
            for check in option.checks():
                if isinstance(check, Each) and (found := check.first_complaint(value)):
                    raise RecipeError(f"{found[1]}, got {value[found[0]]!r}", key=f"{where}[{found[0]}]")
                if (complaint := check(value)) is not None:
                    raise RecipeError(f"{complaint}, got {value!r}", key=where)
        return settings

    def provided(self, settings: dict, made: Any = None) -> frozenset[str]:
        """The capabilities this plugin provides with ``settings``; for an older registration,
        what its object ``made`` says in a ``provides`` attribute."""
        if callable(self.provides):
            found = frozenset(self.provides(settings))
        else:
            found = frozenset(self.provides)
        if not self.declared and made is not None:
            found |= frozenset(getattr(made, "provides", ()))
        return found

    def conflicts_of(self, made: Any = None) -> Mapping[str, str]:
        if not self.declared and made is not None:
            return {**self.conflicts, **getattr(made, "conflicts", {})}
        return self.conflicts


def resumable_keys(specs: Mapping[str, PluginSpec]) -> set[str]:
    """The ``plugins.*`` keys a resumed run may change: an observing plugin's table and its keys,
    and every option declared ``changes_training = False``."""
    keys = set()
    for name, spec in specs.items():
        if not spec.changes_training:
            keys.add(f"plugins.{name}")
        keys |= {f"plugins.{name}.{key}" for key, option in spec.options.items()
                 if not (spec.changes_training and option.changes_training)}
    return keys


def legacy_spec(name: str, factory: Callable[[dict], Any], defaults: dict | None) -> PluginSpec:
    """The spec of a plugin registered as ``register(name, factory, defaults)``: options typed by
    their defaults, checked by the factory itself."""
    options = {key: Option(value) for key, value in (defaults or {}).items()}
    return PluginSpec(name, factory, options, doc=(getattr(factory, "__doc__", "") or "").strip().split("\n")[0],
                      declared=False)


def combination_error(loss_name: str, loss: Any, switched_on: Mapping[str, tuple[PluginSpec, dict, Any]],
                      elsewhere: frozenset[str] = frozenset(),
                      model: tuple[str, Any] | None = None) -> tuple[str, str] | None:
    """Why the recipe's objective, model family and plugins cannot train together, as ``(key,
    message)``, or ``None``. ``switched_on`` maps each table to its spec, settings and object;
    ``elsewhere`` is what plugins outside any table provide (a ``provides`` attribute on a plugin
    registered through its entry point, as before specs); ``model`` is ``(model.name, build)``,
    whose ``provides`` and ``conflicts`` attributes, where it has them, count like a plugin's. One
    place for every rule: an objective's ``requires`` (a loss attribute), a plugin's ``losses``,
    ``requires`` and ``conflicts``, and a model family's ``conflicts``."""
    provided = {name: spec.provided(settings, made) for name, (spec, settings, made) in switched_on.items()}
    model_name, build = model or ("", None)
    elsewhere = frozenset(elsewhere) | frozenset(getattr(build, "provides", ()))
    everything = elsewhere.union(*provided.values())
    for need, why in getattr(loss, "requires", {}).items():
        if need not in everything:
            return "loss.name", f"{loss_name!r} {why}"
    for other, why in getattr(build, "conflicts", {}).items():
        clashing = [table for table, theirs in provided.items() if table == other or other in theirs]
        if clashing:
            return "model.name", f"{model_name!r} cannot be combined with [plugins.{clashing[0]}]: {why}"
    for name, (spec, _, made) in switched_on.items():
        if spec.losses and loss_name not in spec.losses:
            wanted = " or ".join(f'"{loss}"' for loss in spec.losses)
            return "loss.name", (f"{name} trains only with the objective {wanted}: set loss.name = {wanted.split(' or ')[0]}"
                                 f" (got {loss_name!r})")
        for need, why in spec.requires.items():
            if need not in elsewhere and not any(need in theirs for other, theirs in provided.items() if other != name):
                return f"plugins.{name}", f"needs {need!r} from the model family or another plugin: {why}"
        for other, why in spec.conflicts_of(made).items():
            clashing = [table for table, theirs in provided.items()
                        if table != name and (table == other or other in theirs)]
            if clashing:
                return f"plugins.{name}", f"cannot be combined with [plugins.{clashing[0]}]: {why}"
    return None
