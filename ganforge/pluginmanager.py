"""Building the plugin manager: hookspecs, entry points, registries.

Built-in plugins and third-party ones arrive the same way, through the ``ganforge`` entry-point
group. Each run (and each test) builds a fresh :class:`PluginHost`; nothing is module-global.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import os
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import GanforgeError, PluginError
from .plugin_spec import PluginSpec, legacy_spec
from .registry import Registry, did_you_mean

ENTRY_POINT_GROUP = "ganforge"
DISABLE_ENV = "GANFORGE_DISABLE_PLUGINS"
BUILTIN_DISTRIBUTION = "ganforge"

#: Registration hooks, by registry: ``ganforge_register_<kind>`` fills ``host.<kind>``.
REGISTRY_KINDS = {
    "models": "model",
    "losses": "loss",
    "datasets": "dataset",
    "latents": "latent distribution",
    "metrics": "metric",
    "optimizers": "optimizer",
    "run_plugins": "plugin table",
}
RUN_PLUGINS_KIND = REGISTRY_KINDS["run_plugins"]


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from, for messages and for ``ganforge plugins``."""

    name: str
    distribution: str = ""
    version: str = ""

    def describe(self) -> str:
        origin = f" from {self.distribution} {self.version}".rstrip() if self.distribution else ""
        return f"plugin {self.name!r}{origin}"


#: Every hook's name, for "did you mean" and for functions that look like a hook but are not marked.
HOOK_NAMES = sorted(name for name in vars(hookspecs) if name.startswith(f"{hookspecs.PROJECT}_"))


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point whose module failed to import: listed by ``ganforge plugins``, fatal elsewhere."""

    info: PluginInfo
    target: str  # the entry point's value, ``package.module``
    error: str  # the one-line PluginError message


def one_line(error: BaseException) -> str:
    """An exception's message on one line, whatever the plugin put in it."""
    return " ".join(str(error).split())


def disabled_plugins() -> set[str]:
    """Entry-point names listed in ``$GANFORGE_DISABLE_PLUGINS`` (comma separated)."""
    return {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}


def unknown_hooks(pm: pluggy.PluginManager, plugin: Any) -> str:
    """"marks ganforge_register_model with @hookimpl, but no hook has that name; did you mean ..."."""
    for attribute in dir(plugin):
        if pm.parse_hookimpl_opts(plugin, attribute) is not None and attribute not in HOOK_NAMES:
            return (f"it marks {attribute} with @hookimpl, but no hook has that name;"
                    f"{did_you_mean(attribute, HOOK_NAMES)} hooks: docs/hooks.md")
    return ""


def lint(pm: pluggy.PluginManager, plugin: Any, described: str) -> list[str]:
    """Warnings for a plugin that will silently do nothing: no hook implemented, or a function
    named like a hook but not marked ``@hookimpl`` (pluggy only calls marked functions)."""
    found = []
    for attribute in dir(plugin):
        if attribute.startswith("__") or pm.parse_hookimpl_opts(plugin, attribute) is not None:
            continue
        close = difflib.get_close_matches(attribute, HOOK_NAMES, n=1, cutoff=0.85)
        if close and callable(getattr(plugin, attribute, None)):
            hook = "that hook" if close[0] == attribute else f"the hook {close[0]}"
            found.append(f"{described}: {attribute} looks like {hook} but is not marked @hookimpl, so it is never called")
    if not pm.get_hookcallers(plugin):
        found.append(f"{described} implements no hook (mark each hook function with @hookimpl from ganforge); it does"
                     " nothing")
    return found


@dataclass
class PluginHost:
    """A plugin manager with its registries filled."""

    pm: pluggy.PluginManager
    info: dict[str, PluginInfo] = field(default_factory=dict)
    models: Registry = field(default_factory=lambda: Registry(REGISTRY_KINDS["models"]))
    losses: Registry = field(default_factory=lambda: Registry(REGISTRY_KINDS["losses"]))
    datasets: Registry = field(default_factory=lambda: Registry(REGISTRY_KINDS["datasets"]))
    latents: Registry = field(default_factory=lambda: Registry(REGISTRY_KINDS["latents"]))
    metrics: Registry = field(default_factory=lambda: Registry(REGISTRY_KINDS["metrics"]))
    optimizers: Registry = field(default_factory=lambda: Registry(REGISTRY_KINDS["optimizers"]))
    run_plugins: Registry = field(default_factory=lambda: Registry(RUN_PLUGINS_KIND))
    broken: dict[str, BrokenPlugin] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def hook(self):
        return self.pm.hook

    def describe(self, plugin_name: str) -> str:
        return self.info.get(plugin_name, PluginInfo(plugin_name)).describe()

    def package(self, plugin_name: str) -> str:
        """The distribution a plugin came from, as ``name version``, or the plugin's own name."""
        info = self.info.get(plugin_name)
        if info and info.distribution:
            return f"{info.distribution} {info.version}".strip()
        return f"plugin {plugin_name!r}"

    def origin(self, registry: Registry, name: str) -> str:
        """A registered name with the package that registered it: ``beta (ganforge-beta 0.1.0)``."""
        return f"{name} ({self.package(registry.entry(name).plugin)})"

    def register(self, plugin: Any, name: str, info: PluginInfo | None = None) -> None:
        """Register one plugin object, naming it in the error if its hooks do not match the specs."""
        self.info[name] = info or self._origin(name)
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as error:
            raise PluginError(f"{self.describe(name)} does not match the hook specs: {unknown_hooks(self.pm, plugin) or error}") from None
        except ValueError as error:  # pluggy: name already registered
            raise PluginError(f"{self.describe(name)} cannot be registered: {error}") from None
        self._guard_hooks(plugin, name)
        self.warnings.extend(lint(self.pm, plugin, self.describe(name)))

    def _origin(self, name: str) -> PluginInfo:
        """Where a plugin registered without entry-point info comes from: a per-run plugin object
        (``<table>.run``, switched on by a recipe table) comes from the distribution of the plugin
        that registered its table."""
        table = name.removesuffix(".run")
        if table != name and table in self.run_plugins:
            owner = self.info.get(self.run_plugins.entry(table).plugin)
            if owner:
                return PluginInfo(name, owner.distribution, owner.version)
        return PluginInfo(name)

    def _guard_hooks(self, plugin: Any, name: str) -> None:
        """Make each of ``plugin``'s hooks report a failure as a :class:`PluginError` naming the
        plugin and its distribution. The hooks are called from several places in the core; guarding
        them once here means no call site can forget to."""
        for caller in self.pm.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                    impl.function = self._guarded_hook(name, impl.function)

    def _guarded_hook(self, name: str, function: Callable) -> Callable:
        @functools.wraps(function)
        def guarded_hook(*args: Any, **kwargs: Any) -> Any:
            return self.guarded(name, function, *args, **kwargs)

        return guarded_hook

    def plugins(self) -> list[tuple[str, Any]]:
        return sorted(self.pm.list_name_plugin(), key=lambda item: item[0])

    def hooks_of(self, plugin: Any) -> list[str]:
        return sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])

    def run_plugin_hooks(self, plugin_name: str) -> dict[str, list[str]]:
        """The hooks each ``[plugins.<table>]`` object of a plugin implements, by table, where its
        factory is a class: the objects themselves are made per run, so the host never sees them
        otherwise (a factory function's objects are not known before a run)."""
        found = {}
        for table in self.run_plugins.by_plugin(plugin_name):
            factory = self.run_plugins.get(table)
            if isinstance(factory, type):
                found[table] = sorted(attribute for attribute in dir(factory)
                                      if self.pm.parse_hookimpl_opts(factory, attribute) is not None)
        return found

    def registered_by(self, plugin_name: str) -> dict[str, list[str]]:
        """The names each registry holds from one plugin, e.g. ``{"models": ["dcgan"]}``."""
        found = {kind: getattr(self, kind).by_plugin(plugin_name) for kind in REGISTRY_KINDS}
        return {kind: names for kind, names in found.items() if names}

    def call_registration_hooks(self) -> None:
        """Fill the registries: each plugin's ``register`` call is recorded under its name."""
        for kind in REGISTRY_KINDS:
            registry: Registry = getattr(self, kind)
            self.results_by_plugin(f"ganforge_register_{kind}",
                                   per_plugin=lambda name: {"register": _register_callback(registry, name)})

    def results_by_plugin(self, hook_name: str, per_plugin: Callable[[str], dict] | None = None,
                          **arguments: Any) -> list[tuple[str, Any]]:
        """Call hook ``hook_name`` on each plugin that implements it, oldest registration first,
        and return ``(plugin name, result)`` pairs, for a caller that must know whose result is
        whose (to name a plugin in a message). Each implementation gets the subset of the
        arguments it names, as in pluggy's own calls; ``per_plugin(name)`` adds arguments made
        for each plugin (its own ``register``)."""
        results = []
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            offered = {**arguments, **(per_plugin(impl.plugin_name) if per_plugin else {})}
            given = {name: offered[name] for name in impl.argnames}
            # register() guarded every hook function already: a failure names the plugin.
            results.append((impl.plugin_name, impl.function(**given)))
        return results

    def guarded(self, plugin_name: str, function: Callable, *args: Any, **kwargs: Any) -> Any:
        """Call a plugin's function (a hook, a factory, a loader); name the plugin if it fails."""
        try:
            return function(*args, **kwargs)
        except GanforgeError:
            raise
        except Exception as error:
            raise PluginError(
                f"{self.describe(plugin_name)} failed in {getattr(function, '__name__', function)}:"
                f" {type(error).__name__}: {one_line(error)}{self._disable_hint(plugin_name)}"
            ) from error

    def _disable_hint(self, plugin_name: str) -> str:
        """How to switch off an installed plugin without uninstalling it. A ``[plugins.<table>]``
        object is switched off with the entry point that registered its table, and the recipe
        must then lose the table, which no plugin takes any more."""
        info = self.info.get(plugin_name)
        if not info or not info.distribution or info.distribution == BUILTIN_DISTRIBUTION:
            return ""
        table = plugin_name.removesuffix(".run")
        if table != plugin_name and table in self.run_plugins:
            owner = self.run_plugins.entry(table).plugin
            return f"; {DISABLE_ENV}={owner} switches it off (then remove [plugins.{table}] from the recipe)"
        return f"; {DISABLE_ENV}={plugin_name} switches it off"


def registered_names(host: PluginHost) -> dict[str, list[str]]:
    """Each registry's names, as recipe validation checks them (plugin tables are checked by
    their specs)."""
    return {kind: getattr(host, kind).names() for kind in REGISTRY_KINDS if kind != "run_plugins"}


def plugin_specs(host: PluginHost) -> dict[str, PluginSpec]:
    """Each ``[plugins.<name>]`` table's spec: its options, what it provides, requires and
    conflicts with (for a plugin registered the older way, its options' defaults only)."""
    return {entry.name: entry.extra["spec"] for entry in host.run_plugins}


def plugin_table_defaults(host: PluginHost) -> dict[str, dict]:
    """Each ``[plugins.<name>]`` table's keys and defaults."""
    return {name: spec.defaults() for name, spec in plugin_specs(host).items()}


def _register_callback(registry: Registry, plugin_name: str) -> Callable:
    if registry.kind != RUN_PLUGINS_KIND:
        def register(name: str, value: Any, defaults: dict | None = None) -> None:
            registry.add(name, value, plugin_name, **({} if defaults is None else {"defaults": dict(defaults)}))

        return register

    def register_run_plugin(spec: PluginSpec | str, factory: Callable[[dict], Any] | None = None,
                            defaults: dict | None = None) -> None:
        """``register(PluginSpec(...))``, or the older ``register(name, factory, defaults)``."""
        if not isinstance(spec, PluginSpec):
            if factory is None:
                raise PluginError(f"plugin {plugin_name!r} registered the plugin table {spec!r} without a factory:"
                                  " call register(PluginSpec(name, factory, options=...))")
            spec = legacy_spec(spec, factory, defaults)
        elif factory is not None or defaults is not None:
            raise PluginError(f"plugin {plugin_name!r}: register(PluginSpec(...)) takes the spec alone")
        registry.add(spec.name, spec.factory, plugin_name, spec=spec)

    return register_run_plugin


def _entry_points() -> Iterable[tuple[importlib.metadata.EntryPoint, PluginInfo]]:
    """Each ``ganforge`` entry point with where it comes from, once per (distribution, name)."""
    seen: set[tuple[str, str]] = set()
    for dist in importlib.metadata.distributions():
        ours = [entry_point for entry_point in dist.entry_points if entry_point.group == ENTRY_POINT_GROUP]
        if not ours:
            continue  # reading a distribution's metadata parses its whole METADATA file: skip the rest
        metadata = dist.metadata
        distribution, version = metadata["Name"] or "", metadata["Version"] or ""
        for entry_point in ours:
            if (distribution, entry_point.name) not in seen:
                seen.add((distribution, entry_point.name))
                yield entry_point, PluginInfo(entry_point.name, distribution, version)


def make_plugin_host(*, entry_points: bool = True, plugins: Iterable[tuple[str, Any]] = (),
                     keep_broken: bool = False, distributions: Collection[str] | None = None) -> PluginHost:
    """A fresh plugin manager with the hookspecs, the entry-point plugins (minus the disabled
    ones; with ``distributions``, only those of the distributions named, e.g. ``{"ganforge"}``
    for the built-ins) and ``plugins`` (``(name, object)`` pairs) registered, and the registries
    filled.

    An entry point that fails to import is a :class:`PluginError`, or with ``keep_broken`` (for
    ``ganforge plugins``, the command that finds such problems) an entry in ``host.broken``.
    Tests pass ``entry_points=False`` and the plugins they need, so nothing installed on the
    machine leaks into them.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm)
    disabled = disabled_plugins()
    if entry_points:
        for entry_point, info in _entry_points():
            if entry_point.name in disabled or (distributions is not None and info.distribution not in distributions):
                continue
            if entry_point.name in host.info:
                raise PluginError(
                    f"{info.describe()} has the same entry-point name as {host.describe(entry_point.name)};"
                    f" disable one with {DISABLE_ENV}={entry_point.name}"
                )
            try:
                plugin = entry_point.load()
            except Exception as error:
                failure = PluginError(
                    f"{info.describe()} failed to import ({entry_point.value}): {type(error).__name__}: {one_line(error)};"
                    f" disable it with {DISABLE_ENV}={entry_point.name}")
                if not keep_broken:
                    raise failure from None
                host.broken[entry_point.name] = BrokenPlugin(info, entry_point.value, str(failure))
                continue
            host.register(plugin, entry_point.name, info)
    for name, plugin in plugins:
        if name not in disabled:
            host.register(plugin, name)
    host.call_registration_hooks()
    return host
